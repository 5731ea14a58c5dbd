"""Step 4 of ingest: the Milvus collection that holds chunks, vectors and provenance.

``DocumentStore`` hides Milvus behind a few verbs (write, delete, list, search). A
document is keyed by its source; a version of it by its content hash. Chunk ids are
derived from both, so writes are upserts: an ingest that is killed and run again, or two
ingests of the same file, never leave duplicates, and stale chunks of an older version are
deleted only after the new version is fully written.

    >>> store = DocumentStore(Settings(), Embedder(Settings())).open()
    >>> store.list_documents()
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker, WeightedRanker
from pymilvus.exceptions import MilvusException

from rag.config import Settings
from rag.embedding import Embedder
from rag.keywords import keyword_text
from rag.local_server import resolve_local_uri
from rag.records import Chunk, Hit, StoredDocument

if TYPE_CHECKING:
    from langchain_milvus import Milvus

log = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]
SCHEMA_VERSION = 2  # 2: BM25 reads a stemmed keyword field, not the text itself
WRITE_BATCH = 256
QUERY_LIMIT = 16_384
BM25_SEARCH_PARAMS: dict[str, Any] = {"metric_type": "BM25", "params": {"drop_ratio_search": 0.0}}
META_FIELDS = [
    "source",
    "title",
    "page",
    "chunk_index",
    "chunk_count",
    "doc_hash",
    "doc_pages",
    "doc_bytes",
    "added_at",
]


class StoreError(RuntimeError):
    """The store cannot be used as configured; the message says what to do."""


class StoreUnavailableError(StoreError):
    """The Milvus server did not answer."""


class EmbeddingModelMismatchError(StoreError):
    """The collection was indexed with another embedding model."""


def quote(value: str) -> str:
    """A Milvus filter string literal."""
    return json.dumps(value, ensure_ascii=False)


def check_connection(settings: Settings) -> str:
    """Connect once and return the server version, without loading any model; raises
    ``StoreError`` with advice. Front ends call it first so an unreachable store fails fast."""
    store = DocumentStore(settings, None)  # type: ignore[arg-type]  # connecting needs no embedder
    store.connect().close()
    return store.server_version


def collection_metadata(info: dict[str, Any]) -> dict[str, str]:
    """What the app recorded on a collection: properties, or the schema description on servers that drop them."""
    meta = dict(info.get("properties") or {})
    if "rag.embedding_model" not in meta:
        try:
            meta = json.loads(info.get("description") or "{}")
        except ValueError:
            meta = {}
    return meta


def _supports_bm25(version: str) -> bool:
    """Built-in BM25 functions arrived in Milvus 2.5; Milvus Lite 3.x has them."""
    if version.lower().startswith("milvus_lite"):  # not "v2.3.5-lite", the old milvus-server package
        return True
    match = re.search(r"(\d+)\.(\d+)", version)
    return match is None or (int(match[1]), int(match[2])) >= (2, 5)


class DocumentStore:
    """Chunks of documents in one Milvus collection.

    Construction is cheap; ``open()`` connects, checks the collection's embedding model
    and creates the collection if it does not exist yet.
    """

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.name = settings.collection
        self._client: MilvusClient | None = None
        self.uri = ""
        self.server_version = ""
        self.hybrid_available = False
        self.keyword_field = False  # BM25 over stemmed keywords (schema 2), or over the raw text (1)
        self.notices: list[str] = []

    # Connection -------------------------------------------------------------------------

    def open(self, *, check_model: bool = True) -> DocumentStore:
        """Connect and make sure the collection exists and matches the embedding model.

        ``check_model=False`` opens a collection made with another embedding model, only so
        that ``reset()`` can drop it (``python -m ingest --reset``).
        """
        if self._client is not None:
            return self
        self._client = self.connect()
        if self._client.has_collection(self.name):
            try:
                self._check_collection(check_model=check_model)
            except StoreError:
                self.close()  # a later open() must check again, not return an unusable store
                raise
        else:
            self._create_collection()
        self._client.load_collection(self.name)
        return self

    def connect(self) -> MilvusClient:
        """A client for this store's server that leaves the collection alone (``open()`` uses it;
        so do read-only tools such as ``rag.doctor`` and ``rag.migrate``)."""
        self.uri = self._connect_uri()
        try:
            client = MilvusClient(
                uri=self.uri, token=self.settings.milvus_token, timeout=self.settings.connect_timeout_s
            )
            self.server_version = str(client.get_server_version())
        except Exception as exc:
            raise self._unavailable(exc) from exc
        return client

    @property
    def server_supports_bm25(self) -> bool:
        """Whether the connected server can make BM25 fields (Milvus 2.5+, Milvus Lite 3)."""
        return _supports_bm25(self.server_version)

    def _connect_uri(self) -> str:
        if not self.settings.is_local_store:
            return self.settings.resolved_milvus_uri
        db_path = Path(self.settings.resolved_milvus_uri)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return resolve_local_uri(db_path)

    def _unavailable(self, exc: Exception) -> StoreError:
        text = str(exc)
        if "Open local milvus failed" in text or "LOCK" in text or "lock" in text.lower():
            return StoreError(
                f"the Milvus Lite store {self.settings.resolved_milvus_uri} is open in another process. "
                "Start the app with `make app` (it shares the store through a local server), or wait for "
                "the other process to finish."
            )
        reason = text.splitlines()[0] if text else type(exc).__name__
        return StoreUnavailableError(
            f"cannot reach Milvus at {self.uri} within {self.settings.connect_timeout_s:.0f} s: {reason}. "
            "Check that the server is running and RAG_MILVUS_URI / RAG_MILVUS_TOKEN are right."
        )

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            self.open()
        return self._client  # type: ignore[return-value]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, reconnecting once if the server went away (restart)."""
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except MilvusException as exc:
            if _is_not_loaded(exc):  # a restarted server (Milvus Lite's) comes back with it released
                log.warning("collection %s is not loaded (server restarted?); loading it again", self.name)
                self.client.load_collection(self.name)
                return getattr(self.client, method)(*args, **kwargs)
            if not _is_connection_error(exc):
                raise
            log.warning("Milvus call %s failed (%s); reconnecting once", method, exc)
            self.close()
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except MilvusException as again:
                if _is_connection_error(again):
                    raise self._unavailable(again) from again
                raise

    # Schema -----------------------------------------------------------------------------

    def _metadata(self) -> dict[str, str]:
        return {
            "rag.schema": str(SCHEMA_VERSION),
            "rag.embedding_model": self.embedder.model_name,
            "rag.dimension": str(self.embedder.dimension),
        }

    def _create_collection(self) -> None:
        want_hybrid = _supports_bm25(self.server_version)
        if not want_hybrid:
            self._notice(f"Milvus {self.server_version} has no built-in BM25 (needs 2.5 or newer): dense search only.")
        try:
            self._create(with_bm25=want_hybrid)
        except MilvusException as exc:
            if _already_exists(exc):  # another process created it at the same moment
                self._check_collection()
                return
            if not want_hybrid:
                raise
            self._notice(f"this Milvus could not create a BM25 field ({exc}); dense search only.")
            if self.client.has_collection(self.name):  # created before its BM25 index was refused
                self.client.drop_collection(self.name)
            self._create(with_bm25=False)

    def _create(self, *, with_bm25: bool) -> None:
        client = self.client
        meta = self._metadata()
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(meta))
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=65_535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.embedder.dimension)
        if with_bm25:
            schema.add_field("keywords", DataType.VARCHAR, max_length=65_535, enable_analyzer=True)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="keywords_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["keywords"],
                    output_field_names=["sparse"],
                )
            )
        add_provenance_fields(schema)
        index_params = client.prepare_index_params()
        index_params.add_index("vector", **self._dense_index())
        if with_bm25:
            index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params={})
        client.create_collection(  # properties at creation: others never see the collection without them
            self.name, schema=schema, index_params=index_params, consistency_level="Strong", properties=meta
        )
        try:
            client.alter_collection_properties(self.name, properties=meta)
        except MilvusException as exc:  # older servers keep the schema description instead
            log.debug("collection properties not supported: %s", exc)
        self.hybrid_available = self.keyword_field = with_bm25
        log.info("created collection %s (%s, hybrid=%s)", self.name, self._dense_index(), with_bm25)

    def _dense_index(self) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "IVF_FLAT":
            params = {"nlist": s.index_nlist}
        elif s.index_type == "HNSW":
            params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
        return {"index_type": s.index_type, "metric_type": s.metric, "params": params}

    def _describe_when_ready(self) -> dict[str, Any]:
        """The collection's description, once it has its metadata and dense index: another
        process (a second ingest) may be creating it this very moment."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while True:
            info = self.client.describe_collection(self.name)
            names = {f["name"] for f in info.get("fields", [])}
            if not {"vector", "doc_hash"} <= names or time.monotonic() > deadline:
                return info
            recorded = "rag.embedding_model" in (info.get("properties") or {}) or "rag.embedding_model" in str(
                info.get("description")
            )
            if recorded and "vector" in self.client.list_indexes(self.name):
                return info
            time.sleep(0.2)

    def _check_collection(self, *, check_model: bool = True) -> None:
        info = self._describe_when_ready()
        meta = collection_metadata(info)
        fields = {f["name"]: f for f in info.get("fields", [])}
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
        if self.settings.hybrid and not self.hybrid_available:
            self._notice("this collection has no BM25 field: dense search only.")

    def _notice(self, text: str) -> None:
        log.warning(text)
        self.notices.append(text)

    @property
    def index_description(self) -> dict[str, Any]:
        return self.client.describe_index(self.name, "vector")

    # Writing ----------------------------------------------------------------------------

    def version_state(self, source: str, content_hash: str) -> tuple[bool, bool]:
        """(source known at all, this exact version stored completely and alone)."""
        rows = self._call(
            "query",
            self.name,
            filter=f"source == {quote(source)}",
            output_fields=["doc_hash", "chunk_count"],
            limit=QUERY_LIMIT,
        )
        if not rows:
            return False, False
        hashes = {r["doc_hash"] for r in rows}
        complete = hashes == {content_hash} and len(rows) == rows[0]["chunk_count"]
        return True, complete

    def write(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Upsert one document version, then delete whatever else is stored under its source."""
        if not chunks:
            return
        self.upsert(chunks, vectors)
        self.remove_stale(chunks[0])

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, *, added_at: int | None = None) -> None:
        """Write some chunks of one document version (any part, any order, from any thread).

        Call ``remove_stale`` once every chunk of the version is written.
        """
        if not chunks:
            return
        added_at = int(time.time()) if added_at is None else added_at
        rows = [
            {
                "id": c.id,
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
            }
            for c, vector in zip(chunks, vectors.tolist(), strict=True)
        ]
        self.add_keywords(rows)
        for start in range(0, len(rows), WRITE_BATCH):
            self._call("upsert", self.name, rows[start : start + WRITE_BATCH])

    def add_keywords(self, rows: list[dict[str, Any]]) -> None:
        """Fill the keyword field BM25 reads, where the collection has one (rows need ``text``)."""
        if self.keyword_field:
            for row in rows:
                row["keywords"] = keyword_text(row["text"])

    def bm25_query(self, query: str) -> str:
        """The query as BM25 must see it: reduced like the stored keywords, where they exist."""
        return keyword_text(query) if self.keyword_field else query

    def remove_stale(self, chunk: Chunk) -> None:
        """Delete what is stored under the chunk's source but is not part of its version."""
        self._call(
            "delete",
            self.name,
            filter=f"source == {quote(chunk.source)} and (doc_hash != {quote(chunk.content_hash)} "
            f"or chunk_index >= {chunk.count})",
        )

    def delete(self, source: str) -> int:
        """Remove every chunk of a document; returns how many chunks were removed."""
        before = self.count(f"source == {quote(source)}")
        if before:
            self._call("delete", self.name, filter=f"source == {quote(source)}")
        return before

    def reset(self) -> None:
        """Drop the collection and create it empty."""
        self._call("drop_collection", self.name)
        self._create_collection()
        self.client.load_collection(self.name)

    # Reading ----------------------------------------------------------------------------

    def count(self, filter: str = "") -> int:
        rows = self._call("query", self.name, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def list_documents(self) -> list[StoredDocument]:
        """One entry per stored document, newest first."""
        rows = self._call(
            "query",
            self.name,
            filter="chunk_index == 0",
            output_fields=["source", "title", "doc_hash", "doc_pages", "chunk_count", "doc_bytes", "added_at"],
            limit=QUERY_LIMIT,
        )
        documents = [
            StoredDocument(
                source=r["source"],
                title=r["title"],
                content_hash=r["doc_hash"],
                pages=int(r["doc_pages"]),
                chunks=int(r["chunk_count"]),
                size_bytes=int(r["doc_bytes"]),
                added_at=float(r["added_at"]),
            )
            for r in rows
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
        rows = self._call(
            "query",
            self.name,
            filter=f"source == {quote(source)} and chunk_index in {list(map(int, indexes))}",
            output_fields=["id", "text", "page", "chunk_index"],
            limit=len(indexes),
        )
        return sorted(rows, key=lambda r: r["chunk_index"])

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
        expr = f"source in {json.dumps(list(sources), ensure_ascii=False)}" if sources else ""
        output = ["text", "vector", *META_FIELDS]
        vector = [float(x) for x in query_vector]
        if mode == "hybrid":
            fetch = max(k, fetch or 20)  # each side brings more candidates than are kept after fusion
            requests = [
                AnnSearchRequest([vector], "vector", self._dense_search_params(fetch), fetch, expr=expr or None),
                AnnSearchRequest([keywords], "sparse", BM25_SEARCH_PARAMS, fetch, expr=expr or None),
            ]
            results = self._call(
                "hybrid_search", self.name, reqs=requests, ranker=self._ranker(), limit=k, output_fields=output
            )
        else:
            dense = mode == "dense"
            results = self._call(
                "search",
                self.name,
                data=[vector] if dense else [keywords],
                anns_field="vector" if dense else "sparse",
                search_params=self._dense_search_params(k) if dense else BM25_SEARCH_PARAMS,
                limit=k,
                filter=expr,
                output_fields=output,
            )
        hits = []
        query_np = np.asarray(vector, dtype=np.float32)
        for result in results[0] if results else []:
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

    def as_vectorstore(self) -> Milvus:
        """The same collection as a LangChain ``langchain_milvus.Milvus`` vector store.

        For use in your own chains: it searches with the product's embedder and index
        parameters. On a hybrid collection name the ranker, as Milvus Lite refuses the
        default weights: ``as_retriever(search_kwargs={"k": 4, "ranker_type": "rrf"})``.
        BM25 there reads the stemmed keyword field, so pass queries through
        ``keyword_text`` for the BM25 side to match fully, and add documents with the
        ingest pipeline (this class does not fill the keyword field).
        The product's own paths use the client directly because they need what that class
        does not offer: upserts of vectors computed once, dense-only and BM25-only search on
        a hybrid collection, and the stored vectors back for cosine relevance scores.
        """
        from langchain_milvus import BM25BuiltInFunction
        from langchain_milvus import Milvus as LangChainMilvus

        hybrid = self.hybrid_available
        dense_params = self._dense_search_params(self.settings.top_k)
        return LangChainMilvus(
            embedding_function=self.embedder,
            collection_name=self.name,
            connection_args={"uri": self.uri, "token": self.settings.milvus_token},
            consistency_level="Strong",
            primary_field="id",
            text_field="text",
            vector_field=["vector", "sparse"] if hybrid else "vector",
            builtin_function=BM25BuiltInFunction(
                input_field_names="keywords" if self.keyword_field else "text", output_field_names="sparse"
            )
            if hybrid
            else None,
            # Milvus Lite refuses langchain-milvus's default sparse parameters (drop_ratio_build).
            search_params=[dense_params, BM25_SEARCH_PARAMS] if hybrid else dense_params,
        )

    def _dense_search_params(self, k: int) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {}
        if s.index_type == "IVF_FLAT":
            params = {"nprobe": min(s.index_nprobe, s.index_nlist)}
        elif s.index_type == "HNSW":
            params = {"ef": max(s.hnsw_ef, k)}
        return {"metric_type": s.metric, "params": params}

    def _ranker(self) -> RRFRanker | WeightedRanker:
        s = self.settings
        if s.hybrid_ranker == "weighted":
            return WeightedRanker(s.hybrid_dense_weight, 1 - s.hybrid_dense_weight)
        return RRFRanker(s.rrf_k)


def add_provenance_fields(schema: Any) -> None:
    """The fields that say where a chunk comes from (the same in every schema version)."""
    schema.add_field("source", DataType.VARCHAR, max_length=2048)
    schema.add_field("title", DataType.VARCHAR, max_length=1024)
    for name in ("page", "chunk_index", "chunk_count", "doc_pages", "doc_bytes", "added_at"):
        schema.add_field(name, DataType.INT64)
    schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)


def _is_connection_error(exc: MilvusException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("unavailable", "connect", "deadline", "closed channel", "timeout"))


def _already_exists(exc: MilvusException) -> bool:
    text = str(exc).lower()
    # Milvus Lite's server answers a create that races another with "[Errno 17] File exists".
    return "already exist" in text or "duplicate collection" in text or "file exists" in text


def _is_not_loaded(exc: MilvusException) -> bool:
    text = str(exc).lower()
    return exc.code == 101 or "not loaded" in text or "state 'released'" in text
