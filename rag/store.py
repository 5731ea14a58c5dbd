"""Step 4 of ingest: documents in a Milvus collection (chunks, vectors and provenance).

``DocumentStore`` keeps only document verbs: write a version, discard a version, delete,
list, search. Everything Milvus (connecting, schema, filters, iterators) lives in
``rag.milvus``. A document is keyed by its source; a version of it by its content hash
together with the chunking it was made with (``Chunker.signature``), so other chunk
settings make a new version. Chunk ids are derived from source and content, so writes are
upserts: an ingest that is killed and run again, or two ingests of the same file, never
leave duplicates, and stale chunks of an older version are deleted only after the new
version is fully written.

    >>> store = DocumentStore(Settings(), Embedder(Settings())).open()
    >>> store.list_documents()
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np

from rag.config import Settings
from rag.keywords import keyword_text
from rag.milvus import (
    META_FIELDS,
    READ_BATCH,
    SCHEMA_VERSION,
    CollectionGoneError,
    CollectionSpec,
    MilvusCollection,
    StoreError,
    StoreUnavailableError,
    dense_index_params,
    dense_search_params,
)
from rag.records import Chunk, Hit, StoredDocument

if TYPE_CHECKING:
    from rag.langchain_vectorstore import DocumentVectorStore

log = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]

__all__ = [
    "META_FIELDS",
    "CollectionGoneError",
    "DocumentStore",
    "EmbeddingModelMismatchError",
    "SearchMode",
    "StoreError",
    "StoreUnavailableError",
    "check_connection",
]


# Documents per batched version check and stale-chunk delete (a delete's filter grows with each one).
STATE_BATCH = 256
STALE_BATCH = 256


class VersionState(NamedTuple):
    """A document's stored state: known at all, this exact version stored completely and alone, rows
    stored, and the page count they record (an unchanged file is reported with it, unread)."""

    known: bool
    complete: bool
    chunks: int
    pages: int = 0


class EmbeddingModelMismatchError(StoreError):
    """The collection was indexed with another embedding model."""


class EmbeddingModel(Protocol):
    """What the store needs of a model: its recorded name and vector size (an ``Embedder`` has both)."""

    model_name: str
    dimension: int


def check_connection(settings: Settings) -> str:
    """Connect once and return the server version, without loading any model; raises
    ``StoreError`` with advice. Front ends call it first so an unreachable store fails fast."""
    collection = MilvusCollection(settings).connect()
    collection.close()
    return collection.server_version


def row_id(chunk: Chunk, chunking: str) -> str:
    """A chunk's row id: its own id, made distinct per chunking, so that re-chunking the same file
    writes a new version beside the old one instead of overwriting it in place."""
    if not chunking:
        return chunk.id
    return hashlib.sha256(f"{chunk.id}\0{chunking}".encode()).hexdigest()[:40]


class DocumentStore:
    """Documents in one Milvus collection.

    Construction is cheap; ``open()`` connects, checks the collection's embedding model
    and creates the collection if it does not exist yet. ``read_batch``: rows per page when
    listing (no read has a row cap).
    """

    def __init__(self, settings: Settings, embedder: EmbeddingModel, *, read_batch: int = READ_BATCH) -> None:
        self.settings = settings
        self.embedder = embedder
        self.name = settings.collection
        self.milvus = MilvusCollection(settings, read_batch=read_batch)
        self.hybrid_available = False
        self.keyword_field = False  # BM25 over stemmed keywords (schema 2+), or over the raw text (1)
        self.chunking_field = False  # versions record their chunking (schema 3)
        self.notices: list[str] = []
        self._opened = False

    # Connection -------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The URI connected to (a Lite folder resolves to the app's local server when one runs)."""
        return self.milvus.uri

    @property
    def server_version(self) -> str:
        return self.milvus.server_version

    @property
    def server_supports_bm25(self) -> bool:
        return self.milvus.supports_bm25

    def open(self, *, check_model: bool = True) -> DocumentStore:
        """Connect and make sure the collection exists and matches the embedding model.

        ``check_model=False`` opens a collection made with another embedding model, only so
        that ``reset()`` can drop it (``python -m ingest --reset``).
        """
        if self._opened:
            return self
        self.milvus.connect()
        if self.milvus.exists():
            try:
                self._check_collection(check_model=check_model)
            except StoreError:
                self.close()  # a later open() must check again, not return an unusable store
                raise
        else:
            self._create_collection()
        self.milvus.load()
        self._opened = True
        return self

    def close(self) -> None:
        self.milvus.close()
        self._opened = False

    # Schema -----------------------------------------------------------------------------

    def _metadata(self) -> dict[str, str]:
        return {
            "rag.schema": str(SCHEMA_VERSION),
            "rag.embedding_model": self.embedder.model_name,
            "rag.dimension": str(self.embedder.dimension),
        }

    def _create_collection(self) -> None:
        want_bm25 = self.milvus.supports_bm25
        if not want_bm25:
            self._notice(f"Milvus {self.server_version} has no built-in BM25 (needs 2.5 or newer): dense search only.")
        spec = CollectionSpec(dimension=self.embedder.dimension, metadata=self._metadata(), bm25=want_bm25)
        try:
            self.milvus.create(spec)
        except StoreError:
            raise
        except Exception as exc:
            if not want_bm25:
                raise
            self._notice(f"this Milvus could not create a BM25 field ({exc}); dense search only.")
            self.milvus.drop_if_exists()  # created before its BM25 index was refused
            self.milvus.create(CollectionSpec(dimension=spec.dimension, metadata=spec.metadata, bm25=False))
        self._check_collection(created=True)
        log.info("opened new collection %s (%s, hybrid=%s)", self.name, dense_index_params(self.settings), want_bm25)

    def _check_collection(self, *, check_model: bool = True, created: bool = False) -> None:
        info = self.milvus.describe_when_ready()
        meta = self.milvus.metadata(info)
        fields = self.milvus.fields(info)
        if "vector" not in fields or "doc_hash" not in fields:
            raise StoreError(f"collection '{self.name}' was not made by this app; choose another with RAG_COLLECTION")
        dim = int(fields["vector"].get("params", {}).get("dim", 0))
        model = meta.get("rag.embedding_model", "unknown")
        if check_model and (model != self.embedder.model_name or dim != self.embedder.dimension):
            raise EmbeddingModelMismatchError(
                f"collection '{self.name}' was indexed with embedding model '{model}' ({dim} dims), but the "
                f"configured model is '{self.embedder.model_name}' ({self.embedder.dimension} dims). Either set "
                f"RAG_EMBEDDING_MODEL back to '{model}', or re-index: `python -m ingest --reset --yes PATHS` "
                "(or choose a new RAG_COLLECTION)."
            )
        self.hybrid_available = "sparse" in fields
        self.keyword_field = "keywords" in fields
        self.chunking_field = "chunking" in fields
        if created:  # _create_collection gave its own notices
            return
        if self.settings.hybrid and not self.hybrid_available:
            self._notice("this collection has no BM25 field: dense search only.")
        if not self.chunking_field:
            self._notice(
                "this collection predates chunking records: changed chunk settings re-chunk a document only "
                "when its file changes (re-index with `python -m ingest --reset --yes PATHS` to track them)."
            )

    def _notice(self, text: str) -> None:
        log.warning(text)
        self.notices.append(text)

    @property
    def index_description(self) -> dict[str, Any]:
        return self.milvus.describe_index("vector")

    def dense_search_params(self, k: int) -> dict[str, Any]:
        """Dense search parameters for the configured index (LangChain's view uses them too)."""
        return dense_search_params(self.settings, k)

    # Writing ----------------------------------------------------------------------------

    def _chunking(self, chunking: str | None) -> str | None:
        """The chunking to compare, or None where the collection records none (schema 1 and 2)."""
        return chunking if self.chunking_field else None

    def version_state(self, source: str, content_hash: str, chunking: str | None = None) -> tuple[bool, bool]:
        """(source known at all, this exact version stored completely and alone).

        A version is the file's content hash together with its ``chunking`` (``Chunker.signature``);
        ``None`` compares the content hash only."""
        chunking = self._chunking(chunking)
        fields = ["doc_hash", "chunk_count", *(["chunking"] if chunking is not None else [])]
        rows = self.milvus.rows(fields, source=source)
        if not rows:
            return False, False
        versions = {(r["doc_hash"], r.get("chunking") if chunking is not None else None) for r in rows}
        complete = versions == {(content_hash, chunking)} and len(rows) == rows[0]["chunk_count"]
        return True, complete

    def version_states(self, versions: Mapping[str, str], chunking: str | None = None) -> dict[str, VersionState]:
        """``version_state`` of many documents (source -> content hash) in one query per page of rows,
        with the chunks stored under each (many small files cost one round trip, not one each)."""
        chunking = self._chunking(chunking)
        fields = ["source", "doc_hash", "chunk_count", "doc_pages", *(["chunking"] if chunking is not None else [])]
        found: dict[str, list[dict[str, Any]]] = {}
        sources = list(versions)
        for start in range(0, len(sources), STATE_BATCH):
            for row in self.milvus.rows(fields, sources=sources[start : start + STATE_BATCH]):
                found.setdefault(row["source"], []).append(row)
        states = {}
        for source, content_hash in versions.items():
            rows = found.get(source, [])
            versions_seen = {(r["doc_hash"], r.get("chunking") if chunking is not None else None) for r in rows}
            complete = (
                bool(rows) and versions_seen == {(content_hash, chunking)} and len(rows) == rows[0]["chunk_count"]
            )
            states[source] = VersionState(bool(rows), complete, len(rows), int(rows[0]["doc_pages"]) if rows else 0)
        return states

    def write(self, chunks: Sequence[Chunk], vectors: np.ndarray, *, chunking: str = "") -> None:
        """Upsert one document version, then delete whatever else is stored under its source."""
        if not chunks:
            return
        self.upsert(chunks, vectors, chunking=chunking)
        self.remove_stale(chunks[0], chunking=chunking)

    def upsert(
        self, chunks: Sequence[Chunk], vectors: np.ndarray, *, added_at: int | None = None, chunking: str = ""
    ) -> None:
        """Write some chunks of one document version (any part, any order, from any thread).

        Call ``remove_stale`` once every chunk of the version is written.
        """
        if not chunks:
            return
        added_at = int(time.time()) if added_at is None else added_at
        rows = [
            {
                "id": row_id(c, chunking),
                "text": c.text,
                "vector": vector,
                "source": c.source,
                "title": c.title,
                "page": c.page if c.page is not None else -1,
                "chunk_index": c.index,
                "chunk_count": c.count,
                "doc_hash": c.content_hash,
                "doc_pages": c.doc_pages,
                "doc_bytes": c.doc_bytes,
                "added_at": added_at,
                "chunking": chunking,
            }
            for c, vector in zip(chunks, vectors.tolist(), strict=True)
        ]
        self.copy_in(rows)

    def copy_in(self, rows: list[dict[str, Any]]) -> None:
        """Upsert stored rows as they are (a migration copies chunks and vectors without re-embedding).

        Fills the keyword field BM25 reads and drops the chunking record where the collection has none."""
        for row in rows:
            if self.keyword_field:
                row["keywords"] = keyword_text(row["text"])
            if self.chunking_field:
                row.setdefault("chunking", "")
            else:
                row.pop("chunking", None)
        self.milvus.upsert(rows)

    def bm25_query(self, query: str) -> str:
        """The query as BM25 must see it: reduced like the stored keywords, where they exist."""
        return keyword_text(query) if self.keyword_field else query

    def remove_stale(self, chunk: Chunk, *, chunking: str | None = "") -> None:
        """Delete what is stored under the chunk's source but is not part of its version."""
        self.milvus.delete(source=chunk.source, outside=(chunk.content_hash, self._chunking(chunking), chunk.count))

    def remove_stale_many(self, firsts: Sequence[Chunk], *, chunking: str | None = "") -> None:
        """``remove_stale`` for many documents (one chunk of each), one delete per ``STALE_BATCH`` of them."""
        chunking = self._chunking(chunking)
        for start in range(0, len(firsts), STALE_BATCH):
            part = firsts[start : start + STALE_BATCH]
            self.milvus.delete(outside_each=[(c.source, c.content_hash, chunking, c.count) for c in part])

    def discard_version(self, source: str, content_hash: str, chunking: str | None = None) -> None:
        """Delete the chunks of one version of a document (a write that failed half-way)."""
        self.milvus.delete(source=source, version=(content_hash, self._chunking(chunking)))

    def delete(self, source: str) -> int:
        """Remove every chunk of a document; returns how many chunks were removed."""
        before = self.milvus.count(source=source)
        if before:
            self.milvus.delete(source=source)
        return before

    def reset(self) -> None:
        """Drop the collection and create it empty."""
        self.milvus.drop()
        self.notices.clear()
        self._create_collection()
        self.milvus.load()

    def flush(self) -> None:
        """Seal what was written into indexed segments (before many searches)."""
        self.milvus.flush()

    # Reading ----------------------------------------------------------------------------

    def ensure_present(self) -> None:
        """Raise ``CollectionGoneError`` when the collection was deleted since it was opened (by another
        tab or ``ingest --delete-collection``): an answer written from its passages must not be shown."""
        if not self.milvus.exists():
            raise self.milvus.gone_error()

    def count(self, source: str | None = None) -> int:
        """Chunks stored (of one source, if given)."""
        return self.milvus.count(source=source)

    def document_count(self) -> int:
        return self.milvus.count(first_chunks=True)

    def list_documents(self) -> list[StoredDocument]:
        """One entry per stored document, newest first (every document: the listing has no row cap)."""
        fields = ["source", "title", "doc_hash", "doc_pages", "chunk_count", "doc_bytes", "added_at"]
        if self.chunking_field:
            fields.append("chunking")
        documents = [
            StoredDocument(
                source=r["source"],
                title=r["title"],
                content_hash=r["doc_hash"],
                pages=int(r["doc_pages"]),
                chunks=int(r["chunk_count"]),
                size_bytes=int(r["doc_bytes"]),
                added_at=float(r["added_at"]),
                chunking=str(r.get("chunking") or ""),
            )
            for r in self.milvus.rows(fields, first_chunks=True)
        ]
        return sorted(documents, key=lambda d: (-d.added_at, d.source))

    def find_sources(self, name: str) -> list[str]:
        """Sources equal to ``name`` or whose file name is ``name`` (for --delete and the UI)."""
        sources = {d.source for d in self.list_documents()}
        if name in sources:
            return [name]
        return sorted(s for s in sources if Path(s).name == name)

    def chunks_of(self, source: str, indexes: Sequence[int]) -> list[dict[str, Any]]:
        """Given chunks of one document (for merging neighbours into a passage)."""
        if not indexes:
            return []
        rows = self.milvus.query(
            ["id", "text", "page", "chunk_index"], limit=len(indexes), source=source, chunk_indexes=indexes
        )
        return sorted(rows, key=lambda r: r["chunk_index"])

    def rows_of(self, source: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        """The stored rows of one document (the doctor's and tests' view of its versions)."""
        return self.milvus.rows(fields, source=source)

    def search(
        self,
        query: str,
        query_vector: Sequence[float],
        *,
        k: int,
        mode: SearchMode = "dense",
        sources: Sequence[str] | None = None,
        fetch: int | None = None,
    ) -> list[Hit]:
        """Top-k chunks. ``score`` is always the cosine similarity to the query, whatever the
        metric or fusion, so one relevance threshold works everywhere; rank follows ``mode``.

        ``fetch``: candidates each side brings to hybrid fusion (default ``max(k, 20)``)."""
        if mode != "dense" and not self.hybrid_available:
            mode = "dense"
        keywords = self.bm25_query(query) if mode != "dense" else ""
        if mode == "bm25" and not keywords.strip():
            return []  # only stop words: nothing for BM25 to match
        if mode == "hybrid" and not keywords.strip():
            mode = "dense"
        output = ["text", "vector", *META_FIELDS]
        vector = [float(x) for x in query_vector]
        if mode == "hybrid":
            fetch = max(k, fetch or 20)  # each side brings more candidates than are kept after fusion
            results = self.milvus.hybrid_search(vector, keywords, k=k, fetch=fetch, fields=output, sources=sources)
        elif mode == "dense":
            results = self.milvus.dense_search(vector, k=k, fields=output, sources=sources)
        else:
            results = self.milvus.bm25_search(keywords, k=k, fields=output, sources=sources)
        hits = []
        query_np = np.asarray(vector, dtype=np.float32)
        for result in results:
            entity = result["entity"]
            chunk_vector = np.asarray(entity["vector"], dtype=np.float32)
            hits.append(
                Hit(
                    text=entity["text"],
                    source=entity["source"],
                    title=entity["title"],
                    page=None if entity["page"] < 0 else int(entity["page"]),
                    score=float(np.dot(query_np, chunk_vector)),
                    chunk_index=int(entity["chunk_index"]),
                    chunk_indexes=[int(entity["chunk_index"])],
                    ids=[str(result["id"])],
                )
            )
        return hits

    def as_vectorstore(self) -> DocumentVectorStore:
        """The same collection as a LangChain vector store (a ``langchain_milvus.Milvus``):
        add, upsert and delete by id, search, get by ids; see ``rag.langchain_vectorstore``."""
        from rag.langchain_vectorstore import document_vectorstore

        return document_vectorstore(self)
