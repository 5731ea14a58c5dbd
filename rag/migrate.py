"""Copy a collection to another Milvus (say, from the Milvus Lite file to a server) without re-embedding.

    python -m rag.migrate --to http://milvus.internal:19530
    python -m rag.migrate --to https://xxx.zillizcloud.com --to-token TOKEN --collection documents
    python -m rag.migrate --from data/milvus.db --to http://127.0.0.1:19530 --to-collection docs_v2

The source is the configured store (``RAG_MILVUS_URI``, default the Lite file under
``RAG_DATA_DIR``) unless ``--from`` names another. Chunks are read in batches with a query
iterator and upserted with their vectors and metadata, so the copy is idempotent: a
migration that stops half-way can simply be run again. The target collection is created
with the source's recorded embedding model, and with a BM25 field when the target server
supports it (Milvus 2.5+); on older servers it is dense-only.

Exit status: 0 when every chunk was copied, 1 when the counts differ afterwards, 2 when
either store is unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

from rag.config import Settings
from rag.milvus import META_FIELDS, MilvusCollection
from rag.store import DocumentStore, StoreError

log = logging.getLogger(__name__)

COPY_FIELDS = ["id", "text", "vector", *META_FIELDS]


@dataclass(frozen=True)
class RecordedModel:
    """The embedding model a collection recorded: its name and vector size.

    Migration never embeds, so no model is loaded; the target store records these two.
    """

    model_name: str
    dimension: int


@dataclass
class MigrationReport:
    source_uri: str
    target_uri: str
    collection: str
    target_collection: str
    source_chunks: int = 0
    copied: int = 0
    target_chunks: int = 0
    documents: int = 0
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.copied == self.source_chunks and self.target_chunks >= self.copied

    def summary(self) -> str:
        state = "done" if self.complete else "INCOMPLETE"
        return (
            f"{state}: copied {self.copied} of {self.source_chunks} chunks ({self.documents} documents) from "
            f"'{self.collection}' at {self.source_uri} to '{self.target_collection}' at {self.target_uri} "
            f"in {self.seconds:.1f} s; the target now holds {self.target_chunks} chunks"
        )


def recorded_model(collection: MilvusCollection) -> RecordedModel:
    """The embedding model and dimension recorded by an existing collection."""
    info = collection.describe()
    meta = collection.metadata(info)
    fields = collection.fields(info)
    if "vector" not in fields or "doc_hash" not in fields or "rag.embedding_model" not in meta:
        raise StoreError(f"collection '{collection.name}' at {collection.uri} was not made by this app")
    return RecordedModel(meta["rag.embedding_model"], int(fields["vector"]["params"]["dim"]))


def migrate(
    source: Settings,
    target: Settings,
    *,
    batch_size: int = 500,
    on_batch: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every chunk of ``source.collection`` into ``target.collection``; returns what happened.

    >>> report = migrate(Settings(), Settings(milvus_uri="http://127.0.0.1:19530"))
    >>> report.complete
    """
    started = time.perf_counter()
    reader = MilvusCollection(source, read_batch=batch_size).connect()
    try:
        if not reader.exists():
            raise StoreError(f"there is no collection '{reader.name}' at {reader.uri} to migrate")
        model = recorded_model(reader)
        fields = COPY_FIELDS + (["chunking"] if "chunking" in reader.fields() else [])
        writer = DocumentStore(target, model)
        if writer.settings.resolved_milvus_uri == reader.settings.resolved_milvus_uri and writer.name == reader.name:
            raise StoreError("the source and the target are the same collection")
        writer.open()
        try:
            reader.load()
            report = MigrationReport(reader.uri, writer.uri, reader.name, writer.name, notices=list(writer.notices))
            report.source_chunks = reader.count()
            for rows in reader.iterate(fields):
                batch = [{name: row[name] for name in fields} for row in rows]
                for row in batch:
                    row["vector"] = [float(x) for x in row["vector"]]
                writer.copy_in(batch)
                report.copied += len(batch)
                if on_batch:
                    on_batch(report.copied, report.source_chunks)
            report.target_chunks = writer.count()
            report.documents = writer.document_count()
        finally:
            writer.close()
    finally:
        reader.close()
    report.seconds = time.perf_counter() - started
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rag.migrate",
        description="Copy a collection (chunks, vectors, metadata) to another Milvus without re-embedding.",
        epilog="The source defaults to RAG_MILVUS_URI / RAG_COLLECTION (the local Milvus Lite file).",
    )
    parser.add_argument("--to", required=True, metavar="URI", help="target Milvus server URI (or Lite path)")
    parser.add_argument("--to-token", default="", help="target token or user:password (Zilliz Cloud, secured server)")
    parser.add_argument("--collection", help="source collection (RAG_COLLECTION)")
    parser.add_argument("--to-collection", help="target collection (default: the source's name)")
    parser.add_argument("--from", dest="source", metavar="URI", help="source Milvus URI or Lite path (RAG_MILVUS_URI)")
    parser.add_argument("--batch-size", type=int, default=500, help="chunks per read and write (default 500)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    from rag.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    try:
        source = Settings(**{k: v for k, v in {"milvus_uri": args.source, "collection": args.collection}.items() if v})
        target = source.model_copy(
            update={
                "milvus_uri": args.to,
                "milvus_token": SecretStr(args.to_token),  # model_copy skips validation: wrap as the field does
                "collection": args.to_collection or source.collection,
            }
        )

        def on_batch(done: int, total: int) -> None:
            if not args.json:
                print(f"\r{done}/{total} chunks", end="", file=sys.stderr, flush=True)

        report = migrate(source, target, batch_size=max(1, args.batch_size), on_batch=on_batch)
    except (StoreError, ValueError) as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(file=sys.stderr)
    print(json.dumps(vars(report) | {"complete": report.complete}, indent=2) if args.json else report.summary())
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
