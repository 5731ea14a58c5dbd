"""BEIR retrieval benchmark of the product's own chunking, embedding and Milvus search.

    python -m rag.eval beir ../shared/data/scifact --json beir_scifact.json

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` and
``qrels/test.tsv``. Each corpus entry becomes one document (source = its ``_id``, text =
title + text) that the product's ``Chunker`` splits with the configured chunk size; the
chunks are embedded by ``Embedder`` and written to a ``DocumentStore`` (a temporary Milvus
Lite folder unless a URI is given). Every test query is then searched in three modes:
dense, BM25 and hybrid (Milvus's fusion of the two). A document ranks where its best chunk
ranks, so hits are deduplicated by source and enough chunks are fetched to leave ``k``
distinct documents. Scores: nDCG@10, Recall@100 and MRR@10 (``rag.eval.metrics``).

Chunk vectors are cached under ``<data_dir>/eval_cache`` (keyed by model and texts), so a
second run with the same chunking skips the slow part.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rag.chunking import chunk_id
from rag.config import Settings
from rag.embedding import Embedder
from rag.eval.metrics import evaluate
from rag.loading import normalise_text
from rag.pipeline import Ingestor
from rag.records import Chunk, LoadedDocument, Page
from rag.store import DocumentStore, SearchMode

log = logging.getLogger(__name__)

MODES: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")
MAX_FETCH = 16_384  # Milvus's largest top-k
FETCH_FACTOR = 3  # chunks fetched per wanted document; doubled while too few distinct documents come back
EMBED_GROUP = 1024  # texts per encode call (sorted by length, so padding stays low)
TITLE_BYTES = 1000  # the store's title field holds 1,024 bytes


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR split: the corpus, the queries that have judgements, and their qrels."""

    name: str
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text, in qrels order
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


@dataclass
class BeirReport:
    """Scores per search mode, with what was measured and how."""

    dataset: str
    split: str
    documents: int
    chunks: int
    queries: int
    k: int
    settings: dict[str, Any]
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    date: str = field(default_factory=lambda: dt.date.today().isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "date": self.date,
            "documents": self.documents,
            "chunks": self.chunks,
            "queries": self.queries,
            "k": self.k,
            "settings": self.settings,
            "results": {mode: {n: round(v, 4) for n, v in scores.items()} for mode, scores in self.results.items()},
            "seconds": {name: round(value, 1) for name, value in self.seconds.items()},
            "notes": self.notes,
        }

    def table(self) -> str:
        """A Markdown table: one row per search mode."""
        lines = [
            f"| {self.dataset} ({self.queries} queries) | nDCG@10 | Recall@{self.k} | MRR@10 | ms / query |",
            "|---|---|---|---|---|",
        ]
        for mode, scores in self.results.items():
            lines.append(
                f"| {mode} | {scores['ndcg@10']:.4f} | {scores[f'recall@{self.k}']:.4f} | "
                f"{scores['mrr@10']:.4f} | {scores['ms_per_query']:.0f} |"
            )
        return "\n".join(lines)


# Reading ---------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id  corpus-id  score`` rows (tab separated; a header line is skipped)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as rows:
        for row in csv.reader(rows, delimiter="\t"):
            if len(row) < 3:
                continue
            try:
                grade = int(float(row[2]))
            except ValueError:  # the header
                continue
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(folder: Path, *, split: str = "test", limit_queries: int | None = None) -> BeirDataset:
    """Read a BEIR folder; keeps the queries judged in ``split`` (the first ``limit_queries``)."""
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: is {folder} a BEIR folder?")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    texts = {str(q["_id"]): q["text"] for q in _read_jsonl(folder / "queries.jsonl")}
    wanted = [q for q in qrels if q in texts and any(grade > 0 for grade in qrels[q].values())]
    if limit_queries is not None:
        wanted = wanted[:limit_queries]
    corpus = {str(d["_id"]): (d.get("title") or "", d.get("text") or "") for d in _read_jsonl(folder / "corpus.jsonl")}
    return BeirDataset(
        name=folder.resolve().name,
        corpus=corpus,
        queries={q: texts[q] for q in wanted},
        qrels={q: qrels[q] for q in wanted},
    )


def as_document(doc_id: str, title: str, text: str, *, raw: bool = False) -> LoadedDocument:
    """A corpus entry as the loader would give it for a text file: title and text as one page
    (``raw``: exactly ``title + " " + text``, as MTEB embeds it)."""
    body = f"{title} {text}".strip() if raw else normalise_text(f"{title} {text}")
    data = body.encode("utf-8")
    clipped = title.encode("utf-8")[:TITLE_BYTES].decode("utf-8", errors="ignore")
    return LoadedDocument(
        source=doc_id,
        title=clipped or doc_id,
        content_hash=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        pages=[Page(body, None)] if body else [],
        page_total=1,
    )


def whole_document(document: LoadedDocument) -> list[Chunk]:
    """One chunk holding the whole text (the embedding model truncates what does not fit)."""
    if not document.pages:
        return []
    return [
        Chunk(
            id=chunk_id(document.source, document.content_hash, 0),
            text=document.pages[0].text,
            source=document.source,
            title=document.title,
            page=None,
            index=0,
            count=1,
            content_hash=document.content_hash,
            doc_pages=1,
            doc_bytes=document.size_bytes,
        )
    ]


# Ingest ----------------------------------------------------------------------------------


def vector_cache_file(embedder: Embedder, texts: Sequence[str], cache_dir: Path) -> Path:
    """Where the vectors of exactly these texts, by this model, are cached."""
    key = hashlib.sha256(embedder.model_name.encode())
    for text in texts:
        key.update(b"\0" + text.encode("utf-8"))
    return Path(cache_dir) / f"{key.hexdigest()[:32]}.npy"


def embed_texts(embedder: Embedder, texts: Sequence[str], *, cache_dir: Path | None = None) -> np.ndarray:
    """Normalised vectors for many texts, longest first in large groups; cached on disk when asked."""
    cache_file = vector_cache_file(embedder, texts, cache_dir) if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        cached = np.load(cache_file)
        if cached.shape == (len(texts), embedder.dimension):
            log.info("chunk vectors read from %s", cache_file)
            return cached
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    with tqdm(total=len(texts), desc="embed", unit="chunk", smoothing=0.05) as bar:
        for start in range(0, len(order), EMBED_GROUP):
            part = order[start : start + EMBED_GROUP]
            vectors[part] = embedder.encode([texts[i] for i in part])
            bar.update(len(part))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, vectors)
    return vectors


def ingest_corpus(
    dataset: BeirDataset,
    settings: Settings,
    embedder: Embedder,
    store: DocumentStore,
    *,
    cache_dir: Path | None = None,
    whole_documents: bool = False,
) -> tuple[int, dict[str, float]]:
    """Chunk, embed and store every corpus entry not already stored; returns (chunks, seconds).

    ``whole_documents`` skips the chunker: each entry is one chunk of ``title + " " + text``
    that the model truncates to its window, as MTEB embeds BEIR corpora (a reference point
    for published scores, not how the product ingests).
    """
    seconds: dict[str, float] = {}
    ingestor = Ingestor(settings, embedder, store)
    split = whole_document if whole_documents else ingestor.chunker.split_document
    chunking = "whole" if whole_documents else ingestor.chunking
    stored = {d.source: (d.content_hash, d.chunks, d.chunking) for d in store.list_documents()}
    started = time.perf_counter()
    documents: list[list[Chunk]] = []
    total = 0
    for doc_id, (title, text) in tqdm(dataset.corpus.items(), desc="chunk", unit="doc"):
        chunks = split(as_document(doc_id, title, text, raw=whole_documents))
        total += len(chunks)
        wanted = (chunks[0].content_hash, len(chunks), chunking if store.chunking_field else "") if chunks else None
        if chunks and stored.get(doc_id) != wanted:
            documents.append(chunks)
    seconds["chunk"] = time.perf_counter() - started
    if not documents:
        return total, seconds

    started = time.perf_counter()
    texts = [c.text for chunks in documents for c in chunks]
    if cache_dir is not None and vector_cache_file(embedder, texts, cache_dir).is_file():
        seconds["embed_cached"] = 1.0  # vectors read from the cache: "embed" is not the embedding time
    vectors = embed_texts(embedder, texts, cache_dir=cache_dir)
    seconds["embed"] = time.perf_counter() - started

    started = time.perf_counter()
    offset = 0
    for chunks in tqdm(documents, desc="store", unit="doc"):
        part = vectors[offset : offset + len(chunks)]
        offset += len(chunks)
        if chunks[0].source in stored:
            store.write(chunks, part, chunking=chunking)  # replaces the stored version
        else:
            # Nothing is stored under this source, so write()'s removal of stale chunks has
            # nothing to do; skipping it matters: Milvus Lite filters unflushed rows in Python,
            # which makes one delete per document quadratic in the corpus size.
            store.upsert(chunks, part, chunking=chunking)
    # Unflushed rows are searched by brute force and BM25 rebuilds their inverted index on
    # every query; a flush turns them into an indexed segment.
    store.flush()
    seconds["store"] = time.perf_counter() - started
    return total, seconds


# Search ----------------------------------------------------------------------------------


def search_documents(
    store: DocumentStore, query: str, vector: Sequence[float], *, k: int, mode: SearchMode
) -> list[str]:
    """The top ``k`` distinct sources, each ranked by its best chunk."""
    fetch = min(k * FETCH_FACTOR, MAX_FETCH)
    while True:
        hits = store.search(query, vector, k=fetch, mode=mode, fetch=fetch)
        ranked = list(dict.fromkeys(hit.source for hit in hits))
        if len(ranked) >= k or len(hits) < fetch or fetch >= MAX_FETCH:
            return ranked[:k]
        fetch = min(fetch * 2, MAX_FETCH)


def run_queries(
    store: DocumentStore,
    dataset: BeirDataset,
    vectors: np.ndarray,
    *,
    k: int,
    mode: SearchMode,
) -> tuple[dict[str, list[str]], float]:
    """Ranked doc ids per query, and the mean seconds per query."""
    run: dict[str, list[str]] = {}
    started = time.perf_counter()
    for (query_id, text), vector in tqdm(
        zip(dataset.queries.items(), vectors, strict=True), total=len(vectors), desc=f"search {mode}", unit="q"
    ):
        run[query_id] = search_documents(store, text, vector, k=k, mode=mode)
    return run, (time.perf_counter() - started) / max(len(vectors), 1)


# The whole benchmark ---------------------------------------------------------------------


def _collection_name(dataset: str) -> str:
    return "beir_" + (re.sub(r"\W", "_", dataset.lower()) or "dataset")


def _settings_summary(settings: Settings) -> dict[str, Any]:
    return {
        "embedding_model": settings.embedding_model_name,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "index_type": settings.index_type,
        "metric": settings.metric,
        "index_params": {
            "FLAT": {},
            "IVF_FLAT": {"nlist": settings.index_nlist, "nprobe": settings.index_nprobe},
            "HNSW": {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction, "ef": settings.hnsw_ef},
        }[settings.index_type],
        "hybrid_ranker": settings.hybrid_ranker,
        "rrf_k": settings.rrf_k,
        "hybrid_dense_weight": settings.hybrid_dense_weight,
    }


def run_beir(
    folder: Path,
    settings: Settings,
    *,
    k: int = 100,
    limit_queries: int | None = None,
    uri: str | None = None,
    collection: str | None = None,
    keep: bool = False,
    cache_dir: Path | None = None,
    modes: Sequence[SearchMode] = MODES,
    whole_documents: bool = False,
) -> BeirReport:
    """Ingest a BEIR corpus into a store and score each search mode on its test queries.

    Without ``uri`` the store is a temporary Milvus Lite folder, removed afterwards unless
    ``keep`` (its path is then logged and put in the report's notes).
    """
    if k < 10:
        raise ValueError("k must be at least 10 (nDCG@10 and MRR@10 need ten results)")
    dataset = load_beir(folder, limit_queries=limit_queries)
    if not dataset.queries:
        raise ValueError(f"no judged test queries in {folder}")
    scratch = None if uri else Path(tempfile.mkdtemp(prefix=f"beir-{dataset.name}-"))
    settings = settings.model_copy(
        update={
            "milvus_uri": uri or str(scratch / "milvus.db"),  # type: ignore[operator]
            "collection": collection or _collection_name(dataset.name),
        }
    )
    embedder = Embedder(settings).load()
    store = DocumentStore(settings, embedder).open()
    report = BeirReport(
        dataset=dataset.name,
        split="test",
        documents=len(dataset.corpus),
        chunks=0,
        queries=len(dataset.queries),
        k=k,
        settings=_settings_summary(settings),
    )
    if whole_documents:
        report.settings["chunking"] = f"none: whole title + text, truncated at {embedder.max_tokens} tokens"
        report.notes.append("whole documents (MTEB set-up), not the product's chunking")
    try:
        report.chunks, report.seconds = ingest_corpus(
            dataset, settings, embedder, store, cache_dir=cache_dir, whole_documents=whole_documents
        )
        report.settings["hybrid_available"] = store.hybrid_available
        report.settings["bm25_input"] = "stemmed keywords" if store.keyword_field else "raw text"
        if report.seconds.pop("embed_cached", 0.0):
            report.notes.append("chunk vectors read from the cache: seconds.embed is not the embedding time")
        started = time.perf_counter()
        query_vectors = embedder.encode(list(dataset.queries.values()))
        report.seconds["embed_queries"] = time.perf_counter() - started
        for mode in modes:
            if mode != "dense" and not store.hybrid_available:
                report.notes.append(f"{mode} skipped: the collection has no BM25 field")
                continue
            run, per_query = run_queries(store, dataset, query_vectors, k=k, mode=mode)
            scores = evaluate(run, dataset.qrels, recall_k=k)
            report.results[mode] = {**scores, "ms_per_query": per_query * 1000}
            report.seconds[f"search_{mode}"] = per_query * len(query_vectors)
    finally:
        store.close()
        if scratch is not None:
            _release_local(settings.milvus_uri)
            if keep:
                report.notes.append(f"store kept at {settings.milvus_uri} (collection {settings.collection})")
                log.warning("store kept at %s", settings.milvus_uri)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
    return report


def _release_local(path: str) -> None:
    """Stop this process's Milvus Lite server for a folder, so the folder can be removed or reused."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)
