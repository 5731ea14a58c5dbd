"""Latency of one query (embed + search) and recall@10 per dense index type, against exact search.

    python -m benchmarks.search_latency                      # SciFact size and 100,000 chunks
    python -m benchmarks.search_latency --queries 50 --large 20000

Two stores, each searched through ``DocumentStore.search`` (the product's own call, output
fields included) on a Milvus Lite folder:

- SciFact size: the SciFact corpus chunked and embedded as ``python -m rag.eval beir``
  does it (vectors come from its cache under ``<data_dir>/eval_cache`` when present);
- large: ``--large`` chunks made from those vectors plus Gaussian noise (norm about 0.5,
  renormalised) so that they keep a realistic neighbourhood structure, with the texts of
  the chunks they were made from (BM25 therefore sees repeated texts).

The queries are SciFact test claims, each embedded once (its embedding time is part of its
total). For every index configuration the same vectors are re-indexed in place; exact
brute-force numpy search over the same vectors runs in the same process and gives the
reference top 10 that recall@10 is measured against.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rag.config import Settings
from rag.embedding import Embedder
from rag.eval.beir import as_document, embed_texts, load_beir
from rag.logs import setup_logging
from rag.pipeline import Ingestor
from rag.records import Chunk
from rag.store import DocumentStore

log = logging.getLogger("benchmarks.search_latency")

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
K = 10
WARM_UP = 5
INSERT_GROUP = 4096

# (label, settings overrides); configurations that share an index are searched without a rebuild.
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("FLAT", {"index_type": "FLAT"}),
    ("IVF_FLAT nlist=128 nprobe=16", {"index_type": "IVF_FLAT", "index_nlist": 128, "index_nprobe": 16}),
    ("IVF_FLAT nlist=128 nprobe=32", {"index_type": "IVF_FLAT", "index_nlist": 128, "index_nprobe": 32}),
    ("IVF_FLAT nlist=1024 nprobe=16", {"index_type": "IVF_FLAT", "index_nlist": 1024, "index_nprobe": 16}),
    ("IVF_FLAT nlist=1024 nprobe=32", {"index_type": "IVF_FLAT", "index_nlist": 1024, "index_nprobe": 32}),
    ("HNSW M=16 ef=64", {"index_type": "HNSW", "hnsw_m": 16, "hnsw_ef_construction": 200, "hnsw_ef": 64}),
    ("HNSW M=16 ef=128", {"index_type": "HNSW", "hnsw_m": 16, "hnsw_ef_construction": 200, "hnsw_ef": 128}),
]


@dataclass
class Row:
    size: str
    chunks: int
    method: str
    build_s: float
    embed_ms: list[float]
    search_ms: list[float]
    recall: float | None

    def to_dict(self) -> dict[str, Any]:
        total = [e + s for e, s in zip(self.embed_ms, self.search_ms, strict=True)]
        return {
            "size": self.size,
            "chunks": self.chunks,
            "method": self.method,
            "build_s": round(self.build_s, 1),
            "search_p50_ms": round(float(np.percentile(self.search_ms, 50)), 2),
            "search_p95_ms": round(float(np.percentile(self.search_ms, 95)), 2),
            "total_p50_ms": round(float(np.percentile(total, 50)), 2),
            "total_p95_ms": round(float(np.percentile(total, 95)), 2),
            "recall@10": None if self.recall is None else round(self.recall, 4),
            "queries": len(self.search_ms),
        }


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


# Data ------------------------------------------------------------------------------------


def scifact_data(settings: Settings, embedder: Embedder, folder: Path, n_queries: int):
    """SciFact chunks with their vectors (cached by the BEIR command), and test queries."""
    dataset = load_beir(folder, limit_queries=n_queries)
    chunker = Ingestor(settings, embedder, None).chunker  # type: ignore[arg-type]
    chunks = [
        chunk
        for doc_id, (title, text) in tqdm(dataset.corpus.items(), desc="chunk SciFact", unit="doc")
        for chunk in chunker.split_document(as_document(doc_id, title, text))
    ]
    vectors = embed_texts(embedder, [c.text for c in chunks], cache_dir=settings.data_dir / "eval_cache")
    return chunks, vectors, list(dataset.queries.values())


def jittered(chunks: list[Chunk], vectors: np.ndarray, size: int, seed: int = 0) -> tuple[list[Chunk], np.ndarray]:
    """``size`` synthetic chunks: noisy, renormalised copies of real ones, with their texts."""
    rng = np.random.default_rng(seed)
    base = np.arange(size) % len(vectors)
    noise = rng.standard_normal((size, vectors.shape[1])).astype(np.float32) * (0.5 / np.sqrt(vectors.shape[1]))
    out = vectors[base] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    made = [
        Chunk(
            id=f"syn{i}",
            text=chunks[b].text,
            source=f"syn{i // 3}",
            title=chunks[b].title,
            page=None,
            index=i % 3,
            count=3,
            content_hash="synthetic",
            doc_pages=1,
            doc_bytes=len(chunks[b].text),
        )
        for i, b in enumerate(base.tolist())
    ]
    return made, out


# Measuring -------------------------------------------------------------------------------


def fill_store(settings: Settings, embedder: Embedder, chunks: list[Chunk], vectors: np.ndarray) -> DocumentStore:
    store = DocumentStore(settings, embedder).open()
    started = time.perf_counter()
    for start in tqdm(range(0, len(chunks), INSERT_GROUP), desc=f"insert {settings.collection}", unit="group"):
        store.upsert(chunks[start : start + INSERT_GROUP], vectors[start : start + INSERT_GROUP])
    store.flush()
    log.warning("%s: %d chunks inserted in %.0f s", settings.collection, len(chunks), time.perf_counter() - started)
    return store


def reindex(store: DocumentStore, settings: Settings) -> float:
    """Rebuild the dense index of the stored vectors for ``settings``; returns seconds."""
    started = time.perf_counter()
    store.settings = store.milvus.settings = settings
    store.milvus.rebuild_dense_index()
    return time.perf_counter() - started


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    scores = vectors @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def measure_size(
    size: str,
    base: Settings,
    embedder: Embedder,
    chunks: list[Chunk],
    vectors: np.ndarray,
    queries: Sequence[str],
    query_vectors: np.ndarray,
    embed_ms: list[float],
    *,
    text_modes_queries: int,
) -> list[Row]:
    rows: list[Row] = []
    row_of = {c.id: i for i, c in enumerate(chunks)}
    exact_ms, exact_ids = [], []
    for _ in range(WARM_UP):
        exact_top(vectors, query_vectors[0])
    for q in query_vectors:
        top, ms = timed(lambda q=q: exact_top(vectors, q))
        exact_ms.append(ms)
        exact_ids.append(set(top.tolist()))
    rows.append(Row(size, len(chunks), "exact numpy (brute force)", 0.0, embed_ms, exact_ms, 1.0))

    store = fill_store(base.model_copy(update={"collection": f"latency_{size}"}), embedder, chunks, vectors)
    try:
        built: tuple[Any, ...] | None = None
        build_s = 0.0
        for label, overrides in CONFIGS:
            settings = base.model_copy(update=overrides)
            build_key = (settings.index_type, settings.index_nlist, settings.hnsw_m, settings.hnsw_ef_construction)
            if build_key != built:
                build_s, built = reindex(store, settings), build_key
            store.settings = settings
            for q, v in zip(queries[:WARM_UP], query_vectors[:WARM_UP], strict=False):
                store.search(q, v, k=K, mode="dense")
            search_ms, found = [], 0
            for q, v, truth in tqdm(
                list(zip(queries, query_vectors, exact_ids, strict=True)), desc=f"{size} {label}", unit="q"
            ):
                hits, ms = timed(lambda q=q, v=v: store.search(q, v, k=K, mode="dense"))
                search_ms.append(ms)
                found += len(truth & {row_of[h.ids[0]] for h in hits})
            rows.append(Row(size, len(chunks), label, build_s, embed_ms, search_ms, found / (K * len(queries))))
        # The product's default mode: hybrid (and BM25 alone) with the configured default index.
        reindex(store, base)
        n = text_modes_queries
        for mode in ("bm25", "hybrid"):
            if not store.hybrid_available:
                break
            for q, v in zip(queries[:WARM_UP], query_vectors[:WARM_UP], strict=False):
                store.search(q, v, k=K, mode=mode)  # the first BM25 query builds the segment's inverted index
            search_ms = []
            for q, v in zip(queries[:n], query_vectors[:n], strict=True):
                search_ms.append(timed(lambda q=q, v=v, mode=mode: store.search(q, v, k=K, mode=mode))[1])
            label = f"{mode} (+ {base.index_type} default)" if mode == "hybrid" else "bm25"
            rows.append(Row(size, len(chunks), label, 0.0, embed_ms[:n], search_ms, None))
    finally:
        store.close()
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| size | method | build s | search p50 ms | search p95 ms | embed+search p50 ms | embed+search p95 ms"
        " | recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        d = row.to_dict()
        recall = "—" if d["recall@10"] is None else f"{d['recall@10']:.3f}"
        lines.append(
            f"| {d['chunks']:,} | {d['method']} | {d['build_s']:.1f} | {d['search_p50_ms']:.1f} | "
            f"{d['search_p95_ms']:.1f} | {d['total_p50_ms']:.1f} | {d['total_p95_ms']:.1f} | {recall} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", type=Path, default=SCIFACT, help="BEIR SciFact folder")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per configuration (default 200)")
    parser.add_argument("--text-queries", type=int, default=50, help="timed BM25 / hybrid queries (default 50)")
    parser.add_argument("--large", type=int, default=100_000, help="chunks in the large store (0 skips it)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.perf_counter()
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="search-latency-"))
    try:
        env = Settings()
        base = env.model_copy(update={"milvus_uri": str(scratch / "milvus.db")})
        embedder = Embedder(base).load()
        chunks, vectors, queries = scifact_data(env, embedder, args.scifact, args.queries)
        embed_ms, query_vectors = [], []
        embedder.embed_query("warm up")
        for q in queries:
            vector, ms = timed(lambda q=q: embedder.embed_query(q))
            query_vectors.append(vector)
            embed_ms.append(ms)
        qv = np.asarray(query_vectors, dtype=np.float32)
        n_text = min(args.text_queries, len(queries))
        rows = measure_size(
            "scifact", base, embedder, chunks, vectors, queries, qv, embed_ms, text_modes_queries=n_text
        )
        if args.large:
            big_chunks, big_vectors = jittered(chunks, vectors, args.large)
            rows += measure_size(
                "large", base, embedder, big_chunks, big_vectors, queries, qv, embed_ms, text_modes_queries=n_text
            )
    finally:
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(scratch / "milvus.db"))
        except ImportError:
            pass
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown(rows))
    embed = np.asarray(embed_ms)
    print(
        f"\nquery embedding alone: p50 {np.percentile(embed, 50):.1f} ms, p95 {np.percentile(embed, 95):.1f} ms; "
        f"{len(queries)} queries ({n_text} for bm25 / hybrid); total run {time.perf_counter() - started:.0f} s; "
        f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)"
    )
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
