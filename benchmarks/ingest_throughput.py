"""Ingest throughput: the real pipeline next to plain ``SentenceTransformer.encode``.

    python -m benchmarks.ingest_throughput                  # DA-619p.pdf, the full 619 pages
    python -m benchmarks.ingest_throughput --pages 60       # a quick run on the first 60 pages

Ingests one PDF with ``Ingestor`` into a fresh Milvus Lite store in a temporary folder,
then encodes the very same chunk texts with the same ``SentenceTransformer`` in one plain
``encode`` call (same batch size, ``normalize_embeddings=True``). The pipeline's rate counts
everything from file to stored chunks: reading the PDF, chunking, embedding and writing.
The time split comes from timing wrappers around the pipeline's own calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import rag.pipeline
from benchmarks.report import publish
from rag.config import Settings
from rag.embedding import Embedder
from rag.loading import load_document
from rag.logs import quiet_libraries
from rag.pipeline import Ingestor
from rag.store import DocumentStore

DEFAULT_PDF = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdfs" / "DA-619p.pdf"
RESULTS = Path(__file__).resolve().parent / "results" / "ingest_throughput.md"
TARGET = 0.85


class Timer:
    """Seconds spent in wrapped calls, per label (thread-safe: writes run in a background thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

        return timed

    def __getitem__(self, label: str) -> float:
        return self.seconds.get(label, 0.0)


def first_pages(pdf: Path, pages: int, folder: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(pdf).pages[:pages]:
        writer.add_page(page)
    target = folder / f"{pdf.stem}-first-{pages}.pdf"
    writer.write(target)
    return target


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import torch

    return f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def plain_encode(embedder: Embedder, texts: list[str], batch_size: int) -> tuple[np.ndarray, float, float]:
    """One plain ``SentenceTransformer.encode`` call; returns vectors, wall seconds and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = embedder.model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return vectors, time.perf_counter() - wall, time.process_time() - cpu


def run(pdf: Path, pages: int | None) -> dict[str, Any]:
    """Plain encode, the pipeline, plain encode again: the two plain runs bracket the machine's load."""
    quiet_libraries()
    name = f"{pdf.name} (first {pages} pages)" if pages else pdf.name
    with tempfile.TemporaryDirectory(prefix="rag-throughput-") as tmp:
        folder = Path(tmp)
        if pages:
            pdf = first_pages(pdf, pages, folder)
        settings = Settings(data_dir=folder / "data", collection="throughput")
        embedder = Embedder(settings).load()
        embedder.encode(["warm up the model", "and its tokenizer"])
        texts = [c.text for c in rag.pipeline.build_chunker(settings, embedder).split_document(load_document(pdf))]
        _, before_s, before_cpu = plain_encode(embedder, texts, settings.embedding_batch_size)

        store = DocumentStore(settings, embedder).open()
        ingestor = Ingestor(settings, embedder, store)
        timer = Timer()
        rag.pipeline.load_document = timer.wrap("load", load_document)  # the name the pipeline calls
        ingestor.chunker.split_document = timer.wrap("chunk", ingestor.chunker.split_document)
        pipeline_vectors: dict[str, np.ndarray] = {}
        encode = timer.wrap("embed", embedder.encode)

        def encode_and_keep(texts: list[str], batch_size: int | None = None) -> np.ndarray:
            vectors = encode(texts, batch_size)
            pipeline_vectors.update(zip(texts, vectors, strict=True))
            return vectors

        embedder.encode = encode_and_keep
        for method in ("version_state", "upsert", "remove_stale"):
            setattr(store, method, timer.wrap(f"store.{method}", getattr(store, method)))
        load_before, cpu = load_average(), time.process_time()
        try:
            report = ingestor.ingest([pdf])
        finally:
            rag.pipeline.load_document = load_document
        pipeline_cpu = time.process_time() - cpu
        [result] = report.files
        if result.error:
            raise SystemExit(f"ingest failed: {result.error}")
        stored = store.count()
        store.close()

        plain, after_s, after_cpu = plain_encode(embedder, texts, settings.embedding_batch_size)
        difference = max(float(np.abs(pipeline_vectors[t] - v).max()) for t, v in zip(texts, plain, strict=True))

    tokens = [embedder.count_tokens(t) for t in texts]
    return {
        "pdf": name,
        "pages": result.pages,
        "chunks": result.chunks,
        "same_texts": len(texts) == result.chunks and set(texts) == set(pipeline_vectors),
        "stored": stored,
        "mean_tokens": float(np.mean(tokens)),
        "batch_size": settings.embedding_batch_size,
        "pipeline_s": report.seconds,
        "pipeline_cpu": pipeline_cpu,
        "plain_s": [before_s, after_s],
        "plain_cpu": [before_cpu, after_cpu],
        "split": dict(timer.seconds),
        "max_vector_difference": difference,
        "load_average": f"{load_before} -> {load_average()}",
    }


def render(figures: dict[str, Any], command: str) -> str:
    chunks = figures["chunks"]
    pipeline_rate = chunks / figures["pipeline_s"]
    plain_s = sum(figures["plain_s"]) / 2
    plain_rate = chunks / plain_s
    ratio = pipeline_rate / plain_rate
    cpu_ratio = (sum(figures["plain_cpu"]) / 2) / figures["pipeline_cpu"]
    split = figures["split"]
    writes = split.get("store.upsert", 0.0)
    store_in_line = split.get("store.version_state", 0.0) + split.get("store.remove_stale", 0.0)
    verdict = "met" if ratio >= TARGET else "MISSED"
    embed_share = split.get("embed", 0.0) / figures["pipeline_s"]
    without_read_rate = chunks / (figures["pipeline_s"] - split.get("load", 0.0))
    lines = [
        "# Ingest throughput",
        "",
        f"- date: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min) at the pipeline's start -> at the end: {figures['load_average']}",
        f"- document: {figures['pdf']}, {figures['pages']} pages -> {chunks} chunks "
        f"(mean {figures['mean_tokens']:.0f} word pieces), {figures['stored']} stored; "
        f"plain runs encode the same texts: {figures['same_texts']}",
        f"- embedding batch size: {figures['batch_size']}; reproduce: `{command}`",
        "",
        "| run | wall s | CPU s | chunks/s |",
        "|---|---:|---:|---:|",
        f"| plain `SentenceTransformer.encode`, before | {figures['plain_s'][0]:.1f} | {figures['plain_cpu'][0]:.1f} "
        f"| {chunks / figures['plain_s'][0]:.2f} |",
        f"| pipeline, file to stored chunks (`Ingestor.ingest`) | {figures['pipeline_s']:.1f} "
        f"| {figures['pipeline_cpu']:.1f} | {pipeline_rate:.2f} |",
        f"| plain `SentenceTransformer.encode`, after | {figures['plain_s'][1]:.1f} | {figures['plain_cpu'][1]:.1f} "
        f"| {chunks / figures['plain_s'][1]:.2f} |",
        "",
        f"**ratio pipeline / plain encode (mean of before and after): {ratio:.3f}** (target >= {TARGET}: {verdict}); "
        f"by CPU time: {cpu_ratio:.3f}; within the pipeline run, its rate over the rate of its own `encode` calls "
        f"(the same work as the plain run, free of load changes between runs): {embed_share:.3f}",
        "",
        f"Without reading the PDF's text (derived: chunks / (pipeline - read)): {without_read_rate:.2f} chunks/s, "
        f"ratio {without_read_rate / plain_rate:.3f}.",
        "",
        "Pipeline time split (wall seconds):",
        "",
        "| step | seconds | share |",
        "|---|---:|---:|",
    ]
    total = figures["pipeline_s"]
    for label, seconds in [
        ("read the PDF's text (pypdf)", split.get("load", 0.0)),
        ("split pages into chunks (token-measured)", split.get("chunk", 0.0)),
        ("embed (`encode` calls)", split.get("embed", 0.0)),
        ("store: version check and stale-chunk delete", store_in_line),
        ("store: upserts (background thread, overlaps embedding)", writes),
        ("**all but `encode`, as the pipeline's wall clock sees it**", total - split.get("embed", 0.0)),
    ]:
        lines.append(f"| {label} | {seconds:.1f} | {seconds / total:.1%} |")
    lines += [
        "",
        f"Largest difference between a pipeline vector and the plain one: {figures['max_vector_difference']:.1e}.",
        "",
    ]
    if max(float(x) for x in figures["load_average"].replace("->", " ").split()) > (os.cpu_count() or 1):
        lines += [
            "The machine was shared during the run (load average above its core count): wall-clock rates "
            "moved with other processes, so the CPU-time ratio is the steadier figure.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--pdf", type=Path, default=DEFAULT_PDF, help="the PDF to ingest (default: DA-619p.pdf)")
    parser.add_argument("--pages", type=int, help="only the first N pages (a quick run)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file for the results")
    args = parser.parse_args(argv)
    if not args.pdf.is_file():
        parser.error(f"{args.pdf} not found (the shared data lives in ../shared/data)")
    command = "python -m benchmarks.ingest_throughput"
    command += f" --pdf {args.pdf}" if args.pdf != DEFAULT_PDF else ""
    command += f" --pages {args.pages}" if args.pages else ""
    publish(args.output, render(run(args.pdf, args.pages), command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
