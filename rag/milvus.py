"""Everything that speaks pymilvus: connecting, reconnecting, schema, metadata and rows.

``MilvusCollection`` is one collection on one Milvus (a Lite folder, the app's local
server, a standalone server or Zilliz Cloud). Callers name rows with structured
conditions (``source=...``, ``version=(hash, chunking)``) and never write filter strings;
listing goes through query iterators, so no read stops at Milvus's 16,384-row cap.
The document verbs live one level up, in ``rag.store.DocumentStore``.

    >>> collection = MilvusCollection(Settings()).connect()
    >>> collection.exists(), collection.server_version
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker, WeightedRanker
from pymilvus.client.types import Status
from pymilvus.exceptions import ConnectError, ErrorCode, MilvusException, MilvusUnavailableException

from rag.config import Settings
from rag.local_server import resolve_local_uri

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 3  # 2: BM25 reads a stemmed keyword field; 3: each chunk records the chunking it was made with
WRITE_BATCH = 256
READ_BATCH = 1000  # rows per query-iterator page
BM25_SEARCH_PARAMS: dict[str, Any] = {"metric_type": "BM25", "params": {"drop_ratio_search": 0.0}}
COLLECTION_NOT_LOADED = 101  # Milvus's ErrorCode CollectionNotLoaded (a restarted server comes back released)
# A server that went away: pymilvus turns a lost channel into CONNECT_FAILED (2) once its own retries give up.
CONNECTION_CODES = {Status.CONNECT_FAILED}
CONNECTION_GRPC_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
PROVENANCE_FIELDS = ["source", "title", "page", "chunk_index", "chunk_count", "doc_hash", "doc_pages", "doc_bytes"]
META_FIELDS = [*PROVENANCE_FIELDS, "added_at"]


class StoreError(RuntimeError):
    """The store cannot be used as configured; the message says what to do."""


class StoreUnavailableError(StoreError):
    """The Milvus server did not answer."""


class CollectionGoneError(StoreError):
    """The collection was dropped while in use (deleted in another tab or from the terminal)."""


def milvus_token(settings: Settings) -> str:
    """The configured token as text (a ``SecretStr`` or a plain string)."""
    token = settings.milvus_token
    return token.get_secret_value() if hasattr(token, "get_secret_value") else str(token or "")


def is_connection_error(exc: BaseException) -> bool:
    """Whether a failed call means the server went away (decided by codes, not message text)."""
    if isinstance(exc, ConnectError | MilvusUnavailableException):
        return True
    if isinstance(exc, MilvusException):
        return exc.code in CONNECTION_CODES
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in CONNECTION_GRPC_CODES
    return False


def is_not_loaded(exc: BaseException) -> bool:
    return isinstance(exc, MilvusException) and exc.code == COLLECTION_NOT_LOADED


def is_missing_collection(exc: BaseException) -> bool:
    return isinstance(exc, MilvusException) and exc.code == ErrorCode.COLLECTION_NOT_FOUND


def supports_bm25(version: str) -> bool:
    """Built-in BM25 functions arrived in Milvus 2.5; Milvus Lite 3.x has them."""
    if version.lower().startswith("milvus_lite"):  # not "v2.3.5-lite", the old milvus-server package
        return True
    match = re.search(r"(\d+)\.(\d+)", version)
    return match is None or (int(match[1]), int(match[2])) >= (2, 5)


def quote(value: str) -> str:
    """A Milvus string literal."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Where:
    """Which rows: every condition given holds. The only place filter expressions are written."""

    source: str | None = None
    sources: Sequence[str] | None = None
    version: tuple[str, str | None] | None = None  # (doc_hash, chunking); chunking None: any
    chunk_indexes: Sequence[int] | None = None
    first_chunks: bool = False
    outside: tuple[str, str | None, int] | None = None  # rows not of version (hash, chunking) with count chunks
    # Many documents at once: rows of each source not of its version (source, hash, chunking, count chunks)
    outside_each: Sequence[tuple[str, str, str | None, int]] | None = None

    def expr(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(f"source == {quote(self.source)}")
        if self.sources is not None:
            parts.append(f"source in {json.dumps(list(self.sources), ensure_ascii=False)}")
        if self.version is not None:
            parts.append(f"doc_hash == {quote(self.version[0])}")
            if self.version[1] is not None:
                parts.append(f"chunking == {quote(self.version[1])}")
        if self.chunk_indexes is not None:
            parts.append(f"chunk_index in {[int(i) for i in self.chunk_indexes]}")
        if self.first_chunks:
            parts.append("chunk_index == 0")
        if self.outside is not None:
            digest, chunking, count = self.outside
            other = [f"doc_hash != {quote(digest)}", f"chunk_index >= {int(count)}"]
            if chunking is not None:
                other.append(f"chunking != {quote(chunking)}")
            parts.append("(" + " or ".join(other) + ")")
        if self.outside_each is not None:
            each = (Where(source=s, outside=(h, c, n)).expr() for s, h, c, n in self.outside_each)
            parts.append("(" + " or ".join(f"({e})" for e in each) + ")")
        return " and ".join(parts)


def collection_metadata(info: dict[str, Any]) -> dict[str, str]:
    """What the app recorded on a collection: properties, or the schema description on servers that drop them."""
    meta = dict(info.get("properties") or {})
    if "rag.embedding_model" not in meta:
        try:
            meta = json.loads(info.get("description") or "{}")
        except ValueError:
            meta = {}
    return meta


def add_provenance_fields(schema: Any, *, chunking: bool = True) -> None:
    """The fields that say where a chunk comes from (``chunking``: schema 3's record of the chunker)."""
    schema.add_field("source", DataType.VARCHAR, max_length=2048)
    schema.add_field("title", DataType.VARCHAR, max_length=1024)
    for name in ("page", "chunk_index", "chunk_count", "doc_pages", "doc_bytes", "added_at"):
        schema.add_field(name, DataType.INT64)
    schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)
    if chunking:
        schema.add_field("chunking", DataType.VARCHAR, max_length=128)


def dense_index_params(settings: Settings) -> dict[str, Any]:
    """The configured dense index: type, metric and build parameters."""
    params: dict[str, Any] = {}
    if settings.index_type == "IVF_FLAT":
        params = {"nlist": settings.index_nlist}
    elif settings.index_type == "HNSW":
        params = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
    return {"index_type": settings.index_type, "metric_type": settings.metric, "params": params}


def dense_search_params(settings: Settings, k: int) -> dict[str, Any]:
    """Search parameters for the configured dense index (HNSW's beam is at least ``k``)."""
    params: dict[str, Any] = {}
    if settings.index_type == "IVF_FLAT":
        params = {"nprobe": min(settings.index_nprobe, settings.index_nlist)}
    elif settings.index_type == "HNSW":
        params = {"ef": max(settings.hnsw_ef, k)}
    return {"metric_type": settings.metric, "params": params}


@dataclass(frozen=True)
class CollectionSpec:
    """What a new collection holds: vector size, recorded metadata, and whether it gets BM25."""

    dimension: int
    metadata: dict[str, str]
    bm25: bool
    keyword_field: bool = True  # BM25 over a stemmed keyword field (schema 2+), or over the text itself (1)
    chunking_field: bool = True  # schema 3
    dynamic_field: bool = True  # keeps the metadata of documents added through LangChain


class MilvusCollection:
    """One collection on one Milvus, with a client that reconnects once when the server went away.

    Construction is cheap; ``connect()`` reaches the server (no model needed) and leaves the
    collection alone.
    """

    def __init__(self, settings: Settings, name: str | None = None, *, read_batch: int = READ_BATCH) -> None:
        self.settings = settings
        self.name = name or settings.collection
        self.read_batch = read_batch
        self.uri = ""  # the resolved connection URI, once connected
        self.server_version = ""
        self._client: MilvusClient | None = None

    # Connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> MilvusCollection:
        """Reach the server (resolving a Lite folder to the app's local server when one runs)."""
        if self._client is not None:
            return self
        self.uri = self._connect_uri()
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                client = MilvusClient(
                    uri=self.uri, token=milvus_token(self.settings), timeout=self.settings.connect_timeout_s
                )
                self.server_version = str(client.get_server_version())
                break
            except Exception as exc:
                # pymilvus shares one channel per address; a server that just sent it away (gRPC
                # GOAWAY, "too many pings") refuses it at once, and a fresh channel then works.
                if attempt == 1 and is_connection_error(exc) and time.monotonic() - started < 1.0:
                    log.info("connecting to %s failed at once (%s); trying a fresh channel", self.uri, exc)
                    continue
                raise self._unavailable(exc) from exc
        self._client = client
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def supports_bm25(self) -> bool:
        """Whether the connected server can make BM25 fields (Milvus 2.5+, Milvus Lite 3)."""
        return supports_bm25(self.server_version)

    def _connect_uri(self) -> str:
        if not self.settings.is_local_store:
            return self.settings.resolved_milvus_uri
        db_path = Path(self.settings.resolved_milvus_uri)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return resolve_local_uri(db_path)

    def _unavailable(self, exc: Exception) -> StoreError:
        text = str(exc)
        if self.settings.is_local_store and ("Open local milvus failed" in text or "lock" in text.lower()):
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

    def _call(self, call: Callable[[MilvusClient], T], what: str) -> T:
        """Run a client call; load a released collection, or reconnect once if the server went away."""
        try:
            return call(self.connect()._client)  # type: ignore[arg-type]
        except Exception as exc:
            if is_not_loaded(exc):  # a restarted server (Milvus Lite's) comes back with it released
                log.warning("collection %s is not loaded (server restarted?); loading it again", self.name)
                self._client.load_collection(self.name)  # type: ignore[union-attr]
                return call(self._client)  # type: ignore[arg-type]
            if is_missing_collection(exc):
                raise self.gone_error() from exc
            if not is_connection_error(exc):
                raise
            log.warning("Milvus call %s failed (%s); reconnecting once", what, exc)
            self.close()
        try:
            return call(self.connect()._client)  # type: ignore[arg-type]
        except Exception as again:
            if is_not_loaded(again):
                self._client.load_collection(self.name)  # type: ignore[union-attr]
                return call(self._client)  # type: ignore[arg-type]
            if is_connection_error(again):
                raise self._unavailable(again) from again
            if is_missing_collection(again):
                raise self.gone_error() from again
            raise

    def gone_error(self) -> CollectionGoneError:
        return CollectionGoneError(
            f"the collection '{self.name}' no longer exists: it was deleted while in use. Pick another collection."
        )

    # Schema and metadata ----------------------------------------------------------------

    def exists(self) -> bool:
        return self._call(lambda c: c.has_collection(self.name), "has_collection")

    def sibling(self, name: str) -> MilvusCollection:
        """Another collection on the same connection (listing many collections connects once)."""
        other = MilvusCollection(self.settings, name, read_batch=self.read_batch)
        other._client, other.uri, other.server_version = self.connect()._client, self.uri, self.server_version
        return other

    def collection_names(self) -> list[str]:
        """Every collection on this Milvus, this app's or not (``rag.collections`` sorts them out)."""
        return sorted(self._call(lambda c: c.list_collections(), "list_collections"))

    def describe(self) -> dict[str, Any]:
        return self._call(lambda c: c.describe_collection(self.name), "describe_collection")

    def fields(self, info: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        info = info if info is not None else self.describe()
        return {f["name"]: f for f in info.get("fields", [])}

    def metadata(self, info: dict[str, Any] | None = None) -> dict[str, str]:
        """What the app recorded on the collection (embedding model, dimension, schema version)."""
        return collection_metadata(info if info is not None else self.describe())

    def index_names(self) -> list[str]:
        return list(self._call(lambda c: c.list_indexes(self.name), "list_indexes"))

    def describe_index(self, index_name: str = "vector") -> dict[str, Any]:
        return self._call(lambda c: c.describe_index(self.name, index_name), "describe_index")

    def describe_when_ready(self) -> dict[str, Any]:
        """The description, once it has its metadata and dense index: another process (a second
        ingest) may be creating the collection this very moment."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while True:
            info = self.describe()
            names = set(self.fields(info))
            if not {"vector", "doc_hash"} <= names or time.monotonic() > deadline:
                return info
            if "rag.embedding_model" in self.metadata(info) and "vector" in self.index_names():
                return info
            time.sleep(0.2)

    def create(self, spec: CollectionSpec) -> None:
        """Create the collection; another process creating it at the same moment is not an error."""
        client = self.connect()._client
        assert client is not None
        schema = client.create_schema(
            auto_id=False, enable_dynamic_field=spec.dynamic_field, description=json.dumps(spec.metadata)
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        bm25_input = "keywords" if spec.keyword_field else "text"
        schema.add_field(
            "text", DataType.VARCHAR, max_length=65_535, enable_analyzer=spec.bm25 and not spec.keyword_field
        )
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dimension)
        if spec.bm25:
            if spec.keyword_field:
                schema.add_field("keywords", DataType.VARCHAR, max_length=65_535, enable_analyzer=True)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name=f"{bm25_input}_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[bm25_input],
                    output_field_names=["sparse"],
                )
            )
        add_provenance_fields(schema, chunking=spec.chunking_field)
        index_params = client.prepare_index_params()
        index_params.add_index("vector", **dense_index_params(self.settings))
        if spec.bm25:
            index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params={})
        try:
            client.create_collection(  # properties at creation: others never see the collection without them
                self.name,
                schema=schema,
                index_params=index_params,
                consistency_level="Strong",
                properties=spec.metadata,
            )
        except MilvusException:
            if client.has_collection(self.name) and self._made_by_someone_else(spec):
                return
            raise
        try:
            client.alter_collection_properties(self.name, properties=spec.metadata)
        except MilvusException as exc:  # older servers keep the schema description instead
            log.debug("collection properties not supported: %s", exc)

    def create_quick(self, *, dimension: int) -> None:
        """Milvus's quick-setup collection (an id and a vector): the shape of other apps' collections."""
        self._call(lambda c: c.create_collection(self.name, dimension=dimension), "create_collection")

    def _made_by_someone_else(self, spec: CollectionSpec) -> bool:
        """After a failed create: whether the collection now exists complete (a racing process made it).

        A collection left half-made by a refused BM25 index never gets its sparse index: False."""
        wanted = {"vector", "sparse"} if spec.bm25 else {"vector"}
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while True:
            if wanted <= set(self.index_names()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def drop(self) -> None:
        self._call(lambda c: c.drop_collection(self.name), "drop_collection")

    def drop_if_exists(self) -> None:
        if self.exists():
            self.drop()

    def load(self) -> None:
        self._call(lambda c: c.load_collection(self.name), "load_collection")

    def flush(self) -> None:
        """Seal written rows into an indexed segment (unflushed rows are searched by brute force)."""
        self._call(lambda c: c.flush(self.name), "flush")

    # Rows -------------------------------------------------------------------------------

    def count(self, **where: Any) -> int:
        expr = Where(**where).expr()
        rows = self._call(lambda c: c.query(self.name, filter=expr, output_fields=["count(*)"]), "count")
        return int(rows[0]["count(*)"]) if rows else 0

    def query(self, fields: Sequence[str], *, limit: int, **where: Any) -> list[dict[str, Any]]:
        """At most ``limit`` rows (for reads known to be small, such as a few chunks by index)."""
        expr = Where(**where).expr()
        return self._call(lambda c: c.query(self.name, filter=expr, output_fields=list(fields), limit=limit), "query")

    def iterate(self, fields: Sequence[str], *, batch_size: int | None = None, **where: Any) -> Iterator[list[dict]]:
        """Every matching row, page by page (a query iterator: no row cap)."""
        expr = Where(**where).expr()
        iterator = self._call(
            lambda c: c.query_iterator(
                self.name, batch_size=batch_size or self.read_batch, filter=expr, output_fields=list(fields)
            ),
            "query_iterator",
        )
        try:
            while rows := iterator.next():
                yield rows
        finally:
            iterator.close()

    def rows(self, fields: Sequence[str], **where: Any) -> list[dict[str, Any]]:
        """Every matching row as one list. One plain query answers when the rows fit in a page
        (a version check per file stays one call); more rows are read with an iterator."""
        first = self.query(fields, limit=self.read_batch, **where)
        if len(first) < self.read_batch:
            return first
        return [row for page in self.iterate(fields, **where) for row in page]

    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), WRITE_BATCH):
            part = list(rows[start : start + WRITE_BATCH])
            self._call(lambda c, part=part: c.upsert(self.name, part), "upsert")

    def delete(self, **where: Any) -> None:
        expr = Where(**where).expr()
        if not expr:
            raise ValueError("refusing to delete without a condition; use drop() to empty the collection")
        self._call(lambda c: c.delete(self.name, filter=expr), "delete")

    # Search -----------------------------------------------------------------------------

    def dense_search(
        self, vector: Sequence[float], *, k: int, fields: Sequence[str], sources: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self._search(vector, "vector", dense_search_params(self.settings, k), k, fields, sources)

    def bm25_search(
        self, keywords: str, *, k: int, fields: Sequence[str], sources: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return self._search(keywords, "sparse", BM25_SEARCH_PARAMS, k, fields, sources)

    def _search(
        self, data: Any, field: str, params: dict, k: int, fields: Sequence[str], sources: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        expr = Where(sources=sources).expr() if sources else ""
        results = self._call(
            lambda c: c.search(
                self.name,
                data=[data],
                anns_field=field,
                search_params=params,
                limit=k,
                filter=expr,
                output_fields=list(fields),
            ),
            "search",
        )
        return list(results[0]) if results else []

    def hybrid_search(
        self,
        vector: Sequence[float],
        keywords: str,
        *,
        k: int,
        fetch: int,
        fields: Sequence[str],
        sources: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Dense and BM25 candidates (``fetch`` each) fused by the configured ranker."""
        expr = Where(sources=sources).expr() if sources else None
        requests = [
            AnnSearchRequest([list(vector)], "vector", dense_search_params(self.settings, fetch), fetch, expr=expr),
            AnnSearchRequest([keywords], "sparse", BM25_SEARCH_PARAMS, fetch, expr=expr),
        ]
        results = self._call(
            lambda c: c.hybrid_search(
                self.name, reqs=requests, ranker=self._ranker(), limit=k, output_fields=list(fields)
            ),
            "hybrid_search",
        )
        return list(results[0]) if results else []

    def _ranker(self) -> RRFRanker | WeightedRanker:
        s = self.settings
        if s.hybrid_ranker == "weighted":
            return WeightedRanker(s.hybrid_dense_weight, 1 - s.hybrid_dense_weight)
        return RRFRanker(s.rrf_k)

    # Maintenance (benchmarks) -----------------------------------------------------------

    def rebuild_dense_index(self) -> None:
        """Drop and rebuild the dense index with the current settings (benchmarks compare indexes)."""
        client = self.connect()._client
        assert client is not None
        client.release_collection(self.name)
        client.drop_index(self.name, "vector")
        index = dense_index_params(self.settings)
        params = client.prepare_index_params()
        params.add_index("vector", **index)
        for param in params:
            # pymilvus 3 sends build parameters (nlist, M, efConstruction) as flat keys, and
            # Milvus Lite 3.2.2 reads them only from a JSON "params" entry: without this it
            # silently builds with its defaults (nlist 128, M 16, efConstruction 200).
            param._configs["params"] = index["params"]
        client.create_index(self.name, params)
        client.load_collection(self.name)
