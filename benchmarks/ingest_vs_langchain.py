"""Ingest side by side with the LangChain quick-start pipeline, in one run, on one machine.

    python -m benchmarks.ingest_vs_langchain               # DA-619p.pdf and 1,000 PubMedQA files
    python -m benchmarks.ingest_vs_langchain --pages 60 --files 200   # a quick run

Two workloads, from file to stored chunks in a fresh Milvus Lite file each:

- ``DA-619p.pdf`` (619 pages), from ``../shared/data/pdfs``;
- the 1,000 PubMedQA contexts (``../shared/data/pubmedqa/ori_pqal.json``) written as 1,000
  ``.txt`` files, and the same text as one big file (many small files against one).

Each is ingested by ``Ingestor.ingest`` (what ``python -m ingest`` calls) and by the pipeline
a LangChain user writes from the langchain-milvus quick start: pypdf page by page (what
``PyPDFLoader`` does) or the text files read whole, ``RecursiveCharacterTextSplitter(1000,
200)``, ``HuggingFaceEmbeddings`` on the same bundled MiniLM, ``Milvus.from_documents``. Then
each pipeline's own chunk texts go through one plain ``SentenceTransformer.encode`` call in
float32 (and in bfloat16 where the CPU has bfloat16 units). Models are loaded before the
clocks start; everything else (store creation included) is timed. Stage times come from
timing wrappers around each pipeline's own calls. Without ``../shared`` it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from benchmarks.ingest_throughput import Timer, first_pages, load_average, machine
from benchmarks.report import publish, write_figures
from rag.config import Settings
from rag.embedding import Embedder
from rag.logs import quiet_libraries
from rag.pipeline import Ingestor
from rag.q4_linear import cpu_has_bf16
from rag.store import DocumentStore

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_PDF = SHARED / "pdfs" / "DA-619p.pdf"
PUBMEDQA = SHARED / "pubmedqa" / "ori_pqal.json"
RESULTS = Path(__file__).resolve().parent / "results" / "ingest_vs_langchain.md"
GOAL = 2.0


# The two pipelines ---------------------------------------------------------------------


def ours(paths: list[Path], folder: Path, embedder: Embedder, settings: Settings) -> dict[str, Any]:
    """``Ingestor.ingest`` into a fresh store, with its stages timed; returns figures and chunk texts."""
    settings = settings.model_copy(update={"data_dir": folder, "collection": "ours"})
    timer = Timer()
    wall, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    store = DocumentStore(settings, embedder).open()
    ingestor = Ingestor(settings, embedder, store)
    ingestor.load_file = timer.wrap("read", ingestor.load_file)
    ingestor.pdf_pool.pages = timed_iterator(timer, "read", ingestor.pdf_pool.pages)
    ingestor.chunker.split_text = timer.wrap("chunk", ingestor.chunker.split_text)
    encode = embedder.encode
    embedder.encode = timer.wrap("embed", encode)
    for method in ("version_state", "version_states", "remove_stale_many", "upsert"):
        setattr(store, method, timer.wrap("store" if method != "upsert" else "write", getattr(store, method)))
    try:
        report = ingestor.ingest(paths)
    finally:
        embedder.encode = encode
    seconds = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    texts = [row["text"] for row in store.milvus.rows(["text"])]
    store.close()
    failed = [f"{r.source}: {r.error}" for r in report.files if r.error]
    if failed:
        raise SystemExit("ingest failed: " + "; ".join(failed[:3]))
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "worker_cpu": (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime),
        "chunks": sum(r.chunks for r in report.files),
        "stages": {
            "read (inline, or waiting for the reader workers)": timer["read"],
            "chunk": timer["chunk"],
            "embed (`encode`)": timer["embed"],
            "store: version checks and stale deletes": timer["store"],
            "store: upserts (background thread, overlaps embedding)": timer["write"],
        },
        "texts": texts,
    }


def timed_iterator(timer: Timer, label: str, function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Time spent waiting for each item of a generator (the reader pool's page ranges)."""

    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        items = function(*args, **kwargs)
        while True:
            step = timer.wrap(label, lambda: next(items, StopIteration))()
            if step is StopIteration:
                return
            yield step

    return timed


def langchain_quick_start(paths: list[Path], folder: Path, embeddings: Any) -> dict[str, Any]:
    """The langchain-milvus quick start: load, RecursiveCharacterTextSplitter(1000, 200), from_documents."""
    from langchain_core.documents import Document
    from langchain_milvus import Milvus
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

    folder.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    wall, cpu = time.perf_counter(), time.process_time()
    started = time.perf_counter()
    documents = []
    for path in paths:
        if path.suffix.lower() == ".pdf":  # what PyPDFLoader does: one Document per page
            reader = PdfReader(path)
            documents += [
                Document(page_content=page.extract_text(), metadata={"source": str(path), "page": number})
                for number, page in enumerate(reader.pages)
            ]
        else:
            documents.append(Document(page_content=path.read_text(), metadata={"source": str(path)}))
    timer.seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(documents)
    timer.seconds["split"] = time.perf_counter() - started
    started = time.perf_counter()
    Milvus.from_documents(
        splits,
        TimedEmbeddings(embeddings, timer),
        collection_name="langchain",
        connection_args={"uri": str(folder / "milvus_langchain.db")},
        index_params={"index_type": "FLAT", "metric_type": "L2"},
        drop_old=True,
    )
    stored = time.perf_counter() - started
    return {
        "seconds": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "worker_cpu": 0.0,
        "chunks": len(splits),
        "stages": {
            "load (pypdf page by page, or read the files)": timer["load"],
            "split (RecursiveCharacterTextSplitter)": timer["split"],
            "embed (`embed_documents`)": timer["embed"],
            "store (`from_documents` less its embedding)": stored - timer["embed"],
        },
        "texts": [s.page_content for s in splits],
    }


class TimedEmbeddings(Embeddings):
    """The user's embeddings, with the time of its calls counted (a pydantic model takes no wrappers)."""

    def __init__(self, inner: Embeddings, timer: Timer) -> None:
        self.inner, self.timer = inner, timer

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.timer.wrap("embed", self.inner.embed_documents)(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def plain_encode(model: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """One plain ``SentenceTransformer.encode`` call over the texts; wall and CPU seconds."""
    started, cpu = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return time.perf_counter() - started, time.process_time() - cpu


def one_at_a_time(paths: list[Path], folder: Path, embedder: Embedder, settings: Settings) -> tuple[float, float]:
    """The files through ``Ingestor.ingest_file`` one by one (the path before batching); wall and CPU seconds."""
    settings = settings.model_copy(update={"data_dir": folder, "collection": "single"})
    started, cpu = time.perf_counter(), time.process_time()
    store = DocumentStore(settings, embedder).open()
    ingestor = Ingestor(settings, embedder, store)
    results = [ingestor.ingest_file(path) for path in paths]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    if any(r.error for r in results):
        raise SystemExit("ingest failed, one file at a time")
    return seconds, cpu


# Workloads -----------------------------------------------------------------------------


def write_pubmedqa(folder: Path, count: int) -> tuple[list[Path], Path]:
    """``count`` contexts as one .txt file each, and the same texts as one big file."""
    entries = json.loads(PUBMEDQA.read_text())
    texts = [" ".join(entry["CONTEXTS"]) for entry in list(entries.values())[:count]]
    small = folder / "pubmedqa-files"
    small.mkdir()
    paths = []
    for number, text in enumerate(texts):
        paths.append(small / f"{number:04d}.txt")
        paths[-1].write_text(text + "\n")
    big = folder / "pubmedqa-one-file" / "all.txt"
    big.parent.mkdir()
    big.write_text("\n\n".join(texts) + "\n")
    return paths, big


def reading_rate(pdf: Path, pages: int = 40) -> float:
    """One core's pypdf text extraction: CPU seconds per page, over the first ``pages`` pages."""
    from pypdf import PdfReader

    reader = PdfReader(pdf)
    count = min(pages, len(reader.pages))
    cpu = time.process_time()
    for page in reader.pages[:count]:
        page.extract_text()
    return (time.process_time() - cpu) / count


def run(pdf: Path, pages: int | None, files: int, *, plain_langchain: bool, single: bool) -> dict[str, Any]:
    import torch
    from langchain_huggingface import HuggingFaceEmbeddings

    quiet_libraries()
    figures: dict[str, Any] = {"machine": machine(), "load": [load_average()], "bf16": cpu_has_bf16()}
    with tempfile.TemporaryDirectory(prefix="rag-vs-langchain-") as tmp:
        folder = Path(tmp)
        if pages:
            pdf = first_pages(pdf, pages, folder)
        small, big = write_pubmedqa(folder, files)
        settings = Settings(data_dir=folder / "unused")
        embedder = Embedder(settings).load()
        embedder.encode(["warm up the model", "and its tokenizer"])
        embeddings = HuggingFaceEmbeddings(model_name=settings.resolved_embedding_model)
        embeddings.embed_documents(["warm up the model"])
        figures["dtype"] = embedder.dtype
        figures["workloads"] = {}
        workloads = [(f"{pdf.name}", [pdf]), (f"{files:,} PubMedQA files", small)]
        for number, (name, paths) in enumerate(workloads):
            row: dict[str, Any] = {}
            row["ours"] = ours(paths, folder / f"ours-{number}", embedder, settings)
            row["langchain"] = langchain_quick_start(paths, folder / f"langchain-{number}", embeddings)
            if number == 0:
                figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            batch = settings.embedding_batch_size
            row["plain_ours"] = plain_encode(embedder.model, row["ours"]["texts"], batch)
            if plain_langchain:
                # the same weights in float32, as HuggingFaceEmbeddings loads them (its model is private)
                float32 = Embedder(settings.model_copy(update={"embedding_dtype": "float32"})).load()
                row["plain_langchain"] = plain_encode(float32.model, row["langchain"]["texts"], 32)
            if single and number == 1:
                row["one_at_a_time"] = one_at_a_time(paths, folder / "single", embedder, settings)
            if figures["bf16"]:
                half = Embedder(settings.model_copy(update={"embedding_dtype": "bfloat16"})).load()
                row["plain_ours_bf16"] = plain_encode(half.model, row["ours"]["texts"], batch)
            figures["workloads"][name] = row
            print(
                f"{name}: ours {row['ours']['seconds']:.1f} s, LangChain {row['langchain']['seconds']:.1f} s",
                file=sys.stderr,
            )
            figures["load"].append(load_average())
        figures["one_file"] = ours([big], folder / "ours-one-file", embedder, settings)
        figures["load"].append(load_average())
        figures["chars"] = big.stat().st_size
        figures["read_s_per_page"] = reading_rate(pdf)
        figures["torch_threads"] = torch.get_num_threads()
    for row in figures["workloads"].values():
        for side in ("ours", "langchain"):
            row[side]["mean_chars"] = float(np.mean([len(t) for t in row[side].pop("texts")]))
    figures["one_file"].pop("texts")
    return figures


# Report --------------------------------------------------------------------------------


def render(figures: dict[str, Any], command: str) -> str:
    lines = [
        "# Ingest against the LangChain quick start",
        "",
        f"- date: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {figures['machine']}; embedding precision: {figures['dtype']}; "
        f"CPU has bfloat16 units: {figures['bf16']}",
        f"- load average (1, 5, 15 min) before and after each workload: {' -> '.join(figures['load'])}",
        f"- reproduce: `{command}`",
        "",
        "| workload | pipeline | chunks (mean chars) | wall s | CPU s (+ reader workers) | speed-up over LangChain |",
        "|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for name, row in figures["workloads"].items():
        mine, theirs = row["ours"], row["langchain"]
        speedup = theirs["seconds"] / mine["seconds"]
        verdicts.append(f"{name}: {speedup:.2f}x ({'met' if speedup >= GOAL else 'MISSED'})")
        for label, side, ratio in (("`python -m ingest`", mine, f"**{speedup:.2f}x**"), ("LangChain", theirs, "")):
            cpu = f"{side['cpu']:.1f}" + (f" + {side['worker_cpu']:.1f}" if side["worker_cpu"] else "")
            lines.append(
                f"| {name} | {label} | {side['chunks']:,} ({side['mean_chars']:.0f}) | {side['seconds']:.1f} "
                f"| {cpu} | {ratio} |"
            )
    lines += ["", f"Goal >= {GOAL}x the LangChain quick start on both workloads: " + "; ".join(verdicts) + ".", ""]
    if "peak_rss_mb" in figures:
        lines += [f"Peak memory of the process after our PDF ingest: {figures['peak_rss_mb']:,.0f} MB.", ""]
    lines += [
        "Plain `SentenceTransformer.encode` of each pipeline's own chunk texts (float32, one call, the same "
        "model object as the pipeline; batch 64 for ours, LangChain's default 32):",
        "",
        "| workload | texts of | plain encode wall s (CPU s) | pipeline wall s (CPU s) | ratio by wall | by CPU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in figures["workloads"].items():
        for label, side, plain in (
            ("ours", row["ours"], row["plain_ours"]),
            ("LangChain", row["langchain"], row.get("plain_langchain")),
        ):
            if plain is None:
                continue
            cpu = side["cpu"] + side["worker_cpu"]
            lines.append(
                f"| {name} | {label} | {plain[0]:.1f} ({plain[1]:.1f}) | {side['seconds']:.1f} ({cpu:.1f}) "
                f"| {plain[0] / side['seconds']:.3f} | {plain[1] / cpu:.3f} |"
            )
        if "plain_ours_bf16" in row:
            half = row["plain_ours_bf16"]
            lines.append(f"| {name} | ours, bfloat16 | {half[0]:.1f} ({half[1]:.1f}) | | | |")
    if not figures["bf16"]:
        lines += [
            "",
            "bfloat16: not measured. This CPU has no bfloat16 units (no AVX512-BF16 or AMX; "
            "`rag.q4_linear.cpu_has_bf16()` is False), where bfloat16 is emulated and slower than float32, "
            "so `RAG_EMBEDDING_DTYPE=auto` keeps float32 here.",
        ]
    lines += ["", "Each stage's share of the pipeline's wall time (stages run in line unless said otherwise):", ""]
    for name, row in figures["workloads"].items():
        for label, side in (("`python -m ingest`", row["ours"]), ("LangChain", row["langchain"])):
            parts = ", ".join(f"{stage} {s:.1f} s ({s / side['seconds']:.0%})" for stage, s in side["stages"].items())
            lines.append(f"- {name}, {label} ({side['seconds']:.1f} s): {parts}")
    small_name = next(n for n in figures["workloads"] if "PubMedQA" in n)
    small, one = figures["workloads"][small_name]["ours"], figures["one_file"]
    chars = figures["chars"]
    lines += [
        "",
        "### Many small files against one big file (same text)",
        "",
        f"- {small_name}, batched: {small['seconds']:.1f} s ({small['cpu']:.1f} CPU s), "
        f"{chars / small['seconds'] / 1000:.1f} k characters/s ({small['chunks']:,} chunks)",
        f"- one file with the same text: {one['seconds']:.1f} s ({one['cpu']:.1f} CPU s), "
        f"{chars / one['seconds'] / 1000:.1f} k characters/s ({one['chunks']:,} chunks)",
        f"- **rate of the small files over the big file: {one['seconds'] / small['seconds']:.2f} by wall clock, "
        f"{one['cpu'] / small['cpu']:.2f} by CPU time**",
    ]
    single = figures["workloads"][small_name].get("one_at_a_time")
    if single:
        lines.append(
            f"- the same small files one at a time (`Ingestor.ingest_file` per file, the path before batching): "
            f"{single[0]:.1f} s ({single[1]:.1f} CPU s), rate over the big file {one['seconds'] / single[0]:.2f} "
            f"by wall clock, {one['cpu'] / single[1]:.2f} by CPU time"
        )
    lines.append("")
    lines += per_core(figures)
    return "\n".join(lines)


def per_core(figures: dict[str, Any]) -> list[str]:
    """Expected time of the PDF workload on 4 and 8 cores, from the core-seconds measured here."""
    pdf_name = next(iter(figures["workloads"]))
    row = figures["workloads"][pdf_name]
    mine = row["ours"]
    cores = os.cpu_count() or 1
    threads = figures["torch_threads"]
    encode_core_s = row["plain_ours"][1]  # CPU seconds: steady when other jobs share the cores
    main_other = max(mine["cpu"] - encode_core_s, 0.0)
    lines = [
        f"### Per-core rates and the expected time on more cores ({pdf_name})",
        "",
        f"- reading (pypdf, one core): {figures['read_s_per_page'] * 1000:.0f} ms a page; the reader workers used "
        f"{mine['worker_cpu']:.1f} CPU s in all",
        f"- encoding: {encode_core_s:.1f} core-seconds for {mine['chunks']:,} chunks "
        f"({mine['chunks'] / encode_core_s:.1f} chunks per core-second; plain encode's CPU time, {threads} threads)",
        f"- the rest of the main process (chunking, store, inline reading): {main_other:.1f} CPU s beyond encoding",
        "",
        "Expected time on C cores, from these core-seconds (E encoding, K the rest of the main process, R the "
        "reader workers), plain encode taking E / C. *Packed*: every core busy, (E + K + R) / C, the best any "
        "overlap can do. *Dedicated readers*: W = max(1, C // 4) cores read, the model gets C - W, "
        "max(R / W, (E + K) / (C - W)). Both assume the model scales with its threads; the ratio is the figure "
        "to read:",
        "",
        "| cores | plain encode s | packed s | ratio | readers | dedicated s | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reading = mine["worker_cpu"]
    for count in sorted({cores, 4, 8}):
        workers = max(1, count // 4)
        plain = encode_core_s / count
        packed = (encode_core_s + main_other + reading) / count
        dedicated = max(reading / workers, (encode_core_s + main_other) / (count - workers))
        lines.append(
            f"| {count} | {plain:.1f} | {packed:.1f} | {plain / packed:.3f} | {workers} | {dedicated:.1f} "
            f"| {plain / dedicated:.3f} |"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_vs_langchain", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pdf", type=Path, default=DEFAULT_PDF, help="the PDF (default: DA-619p.pdf)")
    parser.add_argument("--pages", type=int, help="only the first N pages (a quick run)")
    parser.add_argument("--files", type=int, default=1000, help="PubMedQA contexts to write as files (default 1000)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file for the results")
    parser.add_argument("--plain-langchain", action="store_true", help="also plain-encode LangChain's chunk texts")
    parser.add_argument("--no-single", action="store_true", help="skip the small files one at a time")
    parser.add_argument("--render", type=Path, help="only write the report again from a run's saved .json")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        publish(args.output, render(saved["figures"], saved["command"]))
        return 0
    if not args.pdf.is_file() or not PUBMEDQA.is_file():
        print(f"skipped: {args.pdf} or {PUBMEDQA} not found (the shared data lives in ../shared/data)")
        return 0
    command = "python -m benchmarks.ingest_vs_langchain"
    command += f" --pdf {args.pdf}" if args.pdf != DEFAULT_PDF else ""
    command += f" --pages {args.pages}" if args.pages else ""
    command += f" --files {args.files}" if args.files != 1000 else ""
    command += " --plain-langchain" if args.plain_langchain else ""
    command += " --no-single" if args.no_single else ""
    figures = run(args.pdf, args.pages, args.files, plain_langchain=args.plain_langchain, single=not args.no_single)
    write_figures(args.output, {"figures": figures, "command": command}, indent=1)  # for --render; indent as committed
    publish(args.output, render(figures, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
