"""Turn files, folders and globs into a searchable collection, from a terminal.

    python -m ingest docs/ notes/*.md report.pdf
    python -m ingest --list
    python -m ingest --delete report.pdf
    python -m ingest --reset --yes docs/

Exit status: 0 when every file was added, replaced or unchanged; 1 when any failed;
2 for bad usage or an unusable store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from rag.config import Settings
from rag.logs import setup_logging
from rag.pipeline import Progress, build_chunker, delete_document
from rag.records import FileResult, Outcome
from rag.services import Services
from rag.store import DocumentStore, EmbeddingModelMismatchError, StoreError, check_connection

SYMBOLS = {Outcome.ADDED: "+", Outcome.REPLACED: "~", Outcome.UNCHANGED: "=", Outcome.FAILED: "!"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Load, chunk, embed and store documents (PDF, text, Markdown) in Milvus.",
        epilog="Settings not given as flags come from RAG_* environment variables (see README).",
    )
    parser.add_argument("paths", nargs="*", help="files, folders (searched recursively) or glob patterns")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true", help="list stored documents and exit")
    actions.add_argument("--delete", metavar="SOURCE", action="append", help="delete a stored document (repeatable)")
    parser.add_argument("--reset", action="store_true", help="drop the whole collection first (asks unless --yes)")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    parser.add_argument("--uri", help="Milvus Lite path or server URI (RAG_MILVUS_URI)")
    parser.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.paths or args.list or args.delete or args.reset):
        parser.error("give PATHs to ingest, or --list, --delete SOURCE or --reset")
    setup_logging(verbose=args.verbose)
    overrides = {k: v for k, v in {"milvus_uri": args.uri, "collection": args.collection}.items() if v}
    try:
        settings = Settings(**overrides)
        check_connection(settings)  # an unreachable store fails in a second, before the model loads
        services = Services(settings)
        if args.paths:
            build_chunker(settings, services.embedder)  # a chunk size the model cannot read fails before --reset
        store = _open_store(args, settings, services)
    except (StoreError, ValueError, RuntimeError) as exc:
        return _fail(args, str(exc))
    if args.reset and not _confirm_reset(args, store.name, store.count()):
        return _fail(args, "reset cancelled")
    if args.reset:
        store.reset()
        _say(args, f"collection '{store.name}' emptied")
    if args.list:
        return _list(args, store)
    if args.delete:
        return _delete(args, settings, store, args.delete)
    if not args.paths:
        if args.json:
            print(json.dumps({"reset": True}))
        return 0
    return _ingest(args, services)


def _open_store(args: argparse.Namespace, settings: Settings, services: Services) -> DocumentStore:
    """The store; with --reset also one indexed with another embedding model, so that it can be dropped."""
    try:
        return services.store()
    except EmbeddingModelMismatchError:
        if not args.reset:
            raise
        return DocumentStore(settings, services.embedder).open(check_model=False)


def _ingest(args: argparse.Namespace, services: Services) -> int:
    quiet = args.json
    files_bar = tqdm(total=0, unit="file", desc="files", disable=quiet, position=0, leave=True, file=sys.stderr)
    chunks_bar = tqdm(total=0, unit="chunk", desc="chunks", disable=quiet, position=1, leave=False, file=sys.stderr)

    def on_files(total: int) -> None:
        files_bar.total = total
        files_bar.refresh()

    def on_file_start(path: Path) -> None:
        files_bar.set_postfix_str(path.name[-40:])
        chunks_bar.reset(total=0)

    def on_chunks(done: int, total: int) -> None:
        chunks_bar.total = total
        chunks_bar.n = done
        chunks_bar.refresh()

    def on_file_done(result: FileResult) -> None:
        files_bar.update(1)
        if not quiet:
            files_bar.write(_describe(result), file=sys.stderr)

    progress = Progress(on_files=on_files, on_file_start=on_file_start, on_chunks=on_chunks, on_file_done=on_file_done)
    report = services.ingestor().ingest(args.paths, progress=progress)
    chunks_bar.close()
    files_bar.close()
    print(json.dumps(report.to_dict(), indent=2) if quiet else report.summary())
    return 1 if report.failed else 0


def _describe(result: FileResult) -> str:
    symbol = SYMBOLS[result.outcome]
    if result.outcome is Outcome.FAILED:
        return f"{symbol} failed     {result.source}: {result.error}"
    return f"{symbol} {result.outcome.value:<10} {result.source} ({result.size_text()})"


def _list(args: argparse.Namespace, store: DocumentStore) -> int:
    documents = store.list_documents()
    if args.json:
        print(json.dumps([vars(d) for d in documents], indent=2))
        return 0
    if not documents:
        print(f"no documents in '{store.name}' at {store.uri}")
        return 0
    width = max(len(d.source) for d in documents)
    print(f"{'source':<{width}}  {'pages':>5}  {'chunks':>6}  {'size':>9}  added")
    for d in documents:
        added = datetime.fromtimestamp(d.added_at).strftime("%Y-%m-%d %H:%M")
        print(f"{d.source:<{width}}  {d.pages:>5}  {d.chunks:>6}  {d.size_bytes / 1024:>7.0f}kB  {added}")
    print(f"{len(documents)} documents, {sum(d.chunks for d in documents)} chunks")
    return 0


def _delete(args: argparse.Namespace, settings: Settings, store: DocumentStore, names: list[str]) -> int:
    """Delete each named document everywhere: its chunks and its uploaded copy."""
    results, status = [], 0
    for name in names:
        sources = store.find_sources(name)
        if len(sources) != 1:
            reason = "no stored document by that name" if not sources else f"ambiguous: {', '.join(sources)}"
            results.append({"source": name, "deleted_chunks": 0, "upload_removed": False, "error": reason})
            status = 1
            continue
        deletion = delete_document(settings, store, sources[0])
        results.append(
            {
                "source": deletion.source,
                "deleted_chunks": deletion.chunks,
                "upload_removed": deletion.upload_removed,
                "error": None,
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"! {r['source']}: {r['error']}"
                if r["error"]
                else f"- deleted {r['source']} ({r['deleted_chunks']} chunks"
                + (", and its uploaded copy)" if r["upload_removed"] else ")")
            )
    return status


def _confirm_reset(args: argparse.Namespace, name: str, chunks: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("--reset needs --yes when not run interactively", file=sys.stderr)
        return False
    answer = input(f"Delete all {chunks} chunks in collection '{name}'? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout)


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"error": message}))
    print(f"error: {message}", file=sys.stderr)
    return 2
