"""The document collection as a LangChain vector store (``DocumentStore.as_vectorstore()``).

LangChain users expect a vector store to add, upsert by id, delete by id, search and get
by ids, and to hand back each document's own metadata unchanged. Our collection has a
fixed schema for the product's chunks (source, title, page, chunk and version fields), so
a document added through LangChain is written as a one-chunk document of its own:

- its provenance fields get defaults (``source`` is ``langchain:<id>``, so listing,
  deleting and the doctor see one whole document per id; ``title`` and ``page`` come from
  the metadata where it has them), and the BM25 keyword field is filled, so the product's
  hybrid search finds it like any ingested chunk;
- its metadata is kept verbatim in the dynamic field ``metadata`` and is what LangChain
  reads back; chunks written by the ingest pipeline read back their provenance fields.

Collections made before the dynamic field existed still work, but cannot keep metadata
that has no field of its own (a warning says so). Search on a hybrid collection fuses
dense and BM25 with the product's configured ranker, BM25 reading the query's stems.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from langchain_milvus import BM25BuiltInFunction, Milvus
from pymilvus import AnnSearchRequest

from rag.keywords import keyword_text

if TYPE_CHECKING:
    from rag.store import DocumentStore

log = logging.getLogger(__name__)

METADATA_FIELD = "metadata"  # dynamic field: a LangChain document's own metadata, verbatim
SOURCE_PREFIX = "langchain:"
# Neutral values for scalar fields a LangChain document has nothing for (say, ``chunking``).
TYPE_DEFAULTS: dict[str, Any] = {
    "VARCHAR": "",
    "INT8": 0,
    "INT16": 0,
    "INT32": 0,
    "INT64": 0,
    "FLOAT": 0.0,
    "DOUBLE": 0.0,
    "BOOL": False,
    "JSON": {},
}
# Milvus Lite refuses langchain-milvus's default sparse parameters (drop_ratio_build).
BM25_PARAMS: dict[str, Any] = {"metric_type": "BM25", "params": {"drop_ratio_search": 0.0}}
HYBRID_FETCH = 20  # candidates each side brings to fusion, at least (as the product's own search)


def document_vectorstore(store: DocumentStore) -> DocumentVectorStore:
    """A LangChain vector store over ``store``'s collection (opened first if it is not)."""
    if not store.uri:
        store.open()
    return DocumentVectorStore(store)


class DocumentVectorStore(Milvus):
    """``langchain_milvus.Milvus`` fitted to the product's collection schema.

    >>> vectorstore = document_vectorstore(store)
    >>> ids = vectorstore.add_documents([Document("Lake Zenda is 94 m deep.", metadata={"source": "notes.md"})])
    >>> vectorstore.similarity_search("How deep is the lake?", k=1)
    """

    def __init__(self, store: DocumentStore) -> None:
        settings = store.settings
        hybrid = store.hybrid_available
        self._dense_params: Callable[[int], dict[str, Any]] = store.dense_search_params
        self._keyword_field = store.keyword_field
        self._ranker_choice = (
            ("weighted", {"weights": [settings.hybrid_dense_weight, 1 - settings.hybrid_dense_weight]})
            if settings.hybrid_ranker == "weighted"
            else ("rrf", {"k": settings.rrf_k})
        )
        dense_params = self._dense_params(settings.top_k)
        super().__init__(
            embedding_function=store.embedder,
            collection_name=store.name,
            connection_args={"uri": store.uri, "token": settings.milvus_token.get_secret_value()},
            consistency_level="Strong",
            primary_field="id",
            text_field="text",
            vector_field=["vector", "sparse"] if hybrid else "vector",
            builtin_function=BM25BuiltInFunction(
                input_field_names="keywords" if self._keyword_field else "text", output_field_names="sparse"
            )
            if hybrid
            else None,
            search_params=[dense_params, BM25_PARAMS] if hybrid else dense_params,
        )
        info = self.client.describe_collection(self.collection_name)
        self.keeps_metadata = bool(info.get("enable_dynamic_field"))
        self._warned = False
        # The collection's own scalar fields: what ingested chunks read back as metadata, and
        # the defaults a LangChain document's row needs for those it has no value for.
        own = {self._primary_field, self._text_field, "keywords"}
        scalars = [f for f in info.get("fields", []) if f["name"] not in own and _type(f) in TYPE_DEFAULTS]
        self.provenance = [f["name"] for f in scalars]
        self._defaults = {
            f["name"]: TYPE_DEFAULTS[_type(f)]
            for f in scalars
            if not f.get("nullable") and f.get("default_value") is None
        }

    # Writing ----------------------------------------------------------------------------

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """LangChain's own behaviour: ``Document.id`` is the id where set, a new UUID elsewhere."""
        return VectorStore.add_documents(self, documents, **kwargs)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        timeout: float | None = None,
        batch_size: int = 1000,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert: adding under an existing id replaces that document."""
        texts = list(texts)
        if not texts:
            return []
        vectors = self.embedding_func.embed_documents(texts)  # type: ignore[union-attr]
        return self.add_embeddings(texts, vectors, metadatas, timeout, batch_size, ids=ids, **kwargs)

    def add_embeddings(
        self,
        texts: list[str],
        embeddings: list[list[float]] | list[list[list[float]]],
        metadatas: list[dict] | None = None,
        timeout: float | None = None,
        batch_size: int = 1000,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Upsert precomputed dense vectors (BM25 vectors are made by Milvus from the keywords)."""
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadata dicts for {len(texts)} texts")
        keys = [str(i) if i else str(uuid.uuid4()) for i in ids] if ids else [str(uuid.uuid4()) for _ in texts]
        added_at = int(time.time())
        rows = [
            self._row(key, text, [float(x) for x in vector], (metadatas[n] if metadatas else None) or {}, added_at)
            for n, (key, text, vector) in enumerate(zip(keys, texts, embeddings, strict=True))
        ]
        for start in range(0, len(rows), batch_size):
            self.client.upsert(self.collection_name, rows[start : start + batch_size], timeout=self.timeout or timeout)
        return keys

    def upsert(  # type: ignore[override]
        self, ids: list[str] | None = None, documents: list[Document] | None = None, **kwargs: Any
    ) -> None:
        """langchain-milvus's signature; the same as ``add_documents(documents, ids=ids)``."""
        if documents:
            self.add_documents(documents, **({"ids": ids} if ids else {}), **kwargs)

    def _row(self, key: str, text: str, vector: list[float], metadata: dict, added_at: int) -> dict[str, Any]:
        """One collection row: provenance from the metadata where it fits, defaults elsewhere."""
        label = metadata.get("title") or metadata.get("source")
        page = metadata.get("page")
        row: dict[str, Any] = {
            **self._defaults,
            "id": key,
            "text": text,
            "vector": vector,
            "source": f"{SOURCE_PREFIX}{key}",
            "title": (Path(str(label)).name or str(label))[:1024] if label else f"{SOURCE_PREFIX}{key}",
            "page": page if isinstance(page, int) and not isinstance(page, bool) and page >= 0 else -1,
            "chunk_index": 0,
            "chunk_count": 1,
            "doc_hash": hashlib.sha256(text.encode()).hexdigest(),
            "doc_pages": 0,
            "doc_bytes": len(text.encode()),
            "added_at": added_at,
        }
        if self._keyword_field:
            row["keywords"] = keyword_text(text)
        if self.keeps_metadata:
            row[METADATA_FIELD] = dict(metadata)
        elif metadata and not self._warned:
            self._warned = True
            log.warning(
                "collection %s has no dynamic field: LangChain metadata is not kept (only title and page). "
                "Re-create it (`python -m ingest --reset`) to keep it.",
                self.collection_name,
            )
        return row

    def delete(self, ids: list[str] | None = None, expr: str | None = None, **kwargs: Any) -> bool | None:
        """Delete by id (missing ids are no error) or by a Milvus filter expression."""
        if ids is not None and not ids:
            return True
        if ids:
            expr = f"{self._primary_field} in {json.dumps([str(i) for i in ids])}"
        if not expr:
            raise ValueError("give ids or expr: deleting everything is `python -m ingest --reset`")
        return super().delete(expr=expr, **kwargs)

    # Reading ----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids, in the order given; missing ids are skipped."""
        if not ids or self.col is None:
            return []
        rows = self.client.query(
            self.collection_name,
            filter=f"{self._primary_field} in {json.dumps([str(i) for i in ids])}",
            output_fields=self._get_output_fields(),
        )
        found = {str(r[self._primary_field]): self._parse_document(r) for r in rows}
        return [found[str(i)] for i in dict.fromkeys(ids) if str(i) in found]

    def _get_output_fields(self) -> list[str]:
        fields = [self._primary_field, self._text_field, *self.provenance]
        return [*fields, METADATA_FIELD] if self.keeps_metadata else fields

    def _parse_document(self, data: dict) -> Document:
        metadata = data.get(METADATA_FIELD)
        if not isinstance(metadata, dict):  # a chunk of the ingest pipeline: its provenance
            metadata = {f: data[f] for f in self.provenance if f in data}
        return Document(id=str(data[self._primary_field]), page_content=data[self._text_field], metadata=metadata)

    def _collection_search(
        self,
        embedding_or_text: list[float] | dict[int, float] | str,
        k: int = 4,
        param: dict | None = None,
        expr: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> list[list[dict]] | None:
        # Dense search parameters that fit k (HNSW needs ef >= k).
        return super()._collection_search(embedding_or_text, k, param or self._dense_params(k), expr, timeout, **kwargs)

    def _collection_hybrid_search(  # type: ignore[override]
        self,
        query: str,
        k: int = 4,
        param: dict | list[dict] | None = None,
        expr: str | None = None,
        fetch_k: int | None = None,
        reranker: Any = None,
        ranker_type: str | None = None,
        ranker_params: dict | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> list[list[dict]] | None:
        """Dense and BM25 fused by the product's ranker unless one is given; BM25 reads the
        query's stems, as the keyword field holds stems; a query of stop words only is dense."""
        if self.col is None:
            return None
        dense_param, sparse_param = self._as_list(param) if param else [self._dense_params(k), BM25_PARAMS]
        fetch = max(k, fetch_k or HYBRID_FETCH)
        vector = self.embedding_func.embed_query(query)  # type: ignore[union-attr]
        keywords = keyword_text(query) if self._keyword_field else query
        timeout = self.timeout or timeout
        if not keywords.strip():
            return self.client.search(
                self.collection_name,
                data=[vector],
                anns_field="vector",
                search_params=dense_param,
                limit=k,
                filter=expr or "",
                output_fields=self._get_output_fields(),
                timeout=timeout,
                **kwargs,
            )
        if reranker is None:
            kind, params = (ranker_type, ranker_params or {}) if ranker_type else self._ranker_choice
            reranker = self._create_ranker(kind, params)  # type: ignore[arg-type]
        requests = [
            AnnSearchRequest([vector], "vector", dense_param, fetch, expr=expr),
            AnnSearchRequest([keywords], "sparse", sparse_param, fetch, expr=expr),
        ]
        return self.client.hybrid_search(
            self.collection_name,
            reqs=requests,
            ranker=reranker,
            limit=k,
            output_fields=self._get_output_fields(),
            timeout=timeout,
            **kwargs,
        )

    # Async: the sync methods in a worker thread (LangChain's default), so both take one path.

    aadd_documents = VectorStore.aadd_documents
    aadd_texts = VectorStore.aadd_texts
    adelete = VectorStore.adelete
    asimilarity_search = VectorStore.asimilarity_search
    asimilarity_search_with_score = VectorStore.asimilarity_search_with_score
    asimilarity_search_by_vector = VectorStore.asimilarity_search_by_vector
    amax_marginal_relevance_search = VectorStore.amax_marginal_relevance_search
    amax_marginal_relevance_search_by_vector = VectorStore.amax_marginal_relevance_search_by_vector

    async def aadd_embeddings(self, *args: Any, **kwargs: Any) -> list[str]:  # type: ignore[override]
        return await run_in_executor(None, self.add_embeddings, *args, **kwargs)

    async def aupsert(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await run_in_executor(None, self.upsert, *args, **kwargs)

    async def asimilarity_search_with_score_by_vector(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return await run_in_executor(None, self.similarity_search_with_score_by_vector, *args, **kwargs)


def _type(field: dict[str, Any]) -> str:
    """A field's Milvus type name (``VARCHAR``, ``INT64``, ...) from ``describe_collection``."""
    kind = field.get("type")
    return getattr(kind, "name", str(kind))
