"""Twenty questions at once through the retrieval path: does it hold up, and how fast is it?

    python -m benchmarks.retrieval_load                  # writes benchmarks/results/retrieval_load.md
    python -m benchmarks.retrieval_load --rounds 5 --workers 20 --output /tmp/load.md

A few real PDFs (the DPR paper in ``multi-column.pdf`` and others from ``../shared/data/pdfs``;
generated text when that folder is absent) are ingested into a fresh Milvus Lite folder.
Then, for each back end, every round sends 20 questions from 20 threads at the same moment
through ``Retriever.retrieve`` (embed the question, hybrid search, threshold, merge
neighbours), one shared retriever, embedder and Milvus client, as the Streamlit app does
for concurrent users. Each answer must equal the one the same question got when asked alone.

Back ends: embedded Milvus Lite (in this process) and Milvus Lite's gRPC server
(``rag.local_server.LocalServer``, as ``make app`` runs it). Reported: throughput
(questions per second over the wall time of the rounds), p50 / p95 / max latency per
question, and the same questions asked one at a time for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import write_keeping_notes
from rag.config import Settings
from rag.embedding import Embedder
from rag.local_server import LocalServer
from rag.logs import setup_logging
from rag.pipeline import Ingestor
from rag.retrieval import Retriever
from rag.store import DocumentStore

ROOT = Path(__file__).resolve().parents[1]
PDFS = ROOT.parent / "shared" / "data" / "pdfs"
RESULTS = ROOT / "benchmarks" / "results" / "retrieval_load.md"
DOCUMENTS = ["multi-column.pdf", "layout-parser-paper-with-table.pdf", "embedded-images-tables.pdf"]
DOCUMENTS += ["table-multi-row-column-cells.pdf", "multi-column-2p.pdf"]
QUESTIONS = [
    "What is dense passage retrieval?",
    "How are passages encoded in DPR?",
    "Which datasets were used to evaluate open-domain question answering?",
    "How does DPR compare with BM25?",
    "What is the retriever's top-20 accuracy on Natural Questions?",
    "How are negative passages chosen during training?",
    "What is in-batch negative training?",
    "Which encoder architecture does the retriever use?",
    "How is the reader model trained?",
    "What is LayoutParser?",
    "How does layout detection work in document images?",
    "Which deep learning models does the layout toolkit provide?",
    "What does the table show?",
    "How many rows and columns does the table have?",
    "Which images are embedded in the document?",
    "What is the inner product used for?",
    "How large is the Wikipedia passage collection?",
    "What is the effect of the number of training examples?",
    "How fast is retrieval with FAISS?",
    "What are the limitations of sparse retrieval?",
]


@dataclass
class Result:
    backend: str
    workers: int
    questions: int
    wall_s: float
    latencies: list[float]
    sequential: list[float]
    errors: int
    mismatches: int

    @property
    def throughput(self) -> float:
        return self.questions / self.wall_s

    @property
    def sequential_throughput(self) -> float:
        return len(self.sequential) / sum(self.sequential)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def documents(folder: Path) -> list[Path]:
    """The benchmark's documents: real PDFs when the shared data is here, else generated text."""
    found = [PDFS / name for name in DOCUMENTS if (PDFS / name).is_file()]
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["dense passage retrieval", "layout detection", "table extraction", "question answering"]
    for n, topic in enumerate(topics):
        text = "\n\n".join(f"Part {p} on {topic}: " + f"{topic} uses encoders and indexes. " * 30 for p in range(20))
        (folder / f"generated-{n}.txt").write_text(text)
    return sorted(folder.glob("*.txt"))


def measure(backend: str, retriever: Retriever, workers: int, rounds: int) -> Result:
    """Sequential pass (reference answers and latencies), then ``rounds`` of parallel questions."""
    retriever.retrieve(QUESTIONS[0])  # warm-up: first search loads segments, first encode allocates
    expected, sequential = {}, []
    for question in QUESTIONS:
        started = time.perf_counter()
        expected[question] = [h.ids for h in retriever.retrieve(question).closest]
        sequential.append(time.perf_counter() - started)

    latencies: list[float] = []
    errors = mismatches = 0
    lock = threading.Lock()
    wall = 0.0
    for _ in range(rounds):
        barrier = threading.Barrier(len(QUESTIONS))

        def ask(question: str, barrier: threading.Barrier = barrier) -> None:
            nonlocal errors, mismatches
            barrier.wait(timeout=120)
            started = time.perf_counter()
            try:
                got = [h.ids for h in retriever.retrieve(question).closest]
            except Exception as exc:
                print(f"  error: {question!r}: {exc}", file=sys.stderr)
                with lock:
                    errors += 1
                return
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                mismatches += got != expected[question]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(ask, QUESTIONS))
        wall += time.perf_counter() - started
    return Result(backend, workers, len(QUESTIONS) * rounds, wall, latencies, sequential, errors, mismatches)


def markdown(results: list[Result], setup: dict[str, str]) -> str:
    lines = [
        "# Retrieval under load: 20 questions at once",
        "",
        "`python -m benchmarks.retrieval_load` (see its docstring). Each round sends 20 different questions "
        "from 20 threads at the same moment through `Retriever.retrieve` (embed, hybrid search, threshold, "
        "merge neighbours) on one shared retriever; latency is per question, from its start to its result.",
        "",
        *[f"- {k}: {v}" for k, v in setup.items()],
        "",
        "| back end | questions | errors | answers differing from sequential | throughput (q/s) | p50 (ms) "
        "| p95 (ms) | max (ms) | sequential q/s | sequential p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r.latencies or [float("nan")]
        lines.append(
            f"| {r.backend} | {r.questions} | {r.errors} | {r.mismatches} | {r.throughput:.1f} "
            f"| {percentile(lat, 50) * 1000:.0f} | {percentile(lat, 95) * 1000:.0f} | {max(lat) * 1000:.0f} "
            f"| {r.sequential_throughput:.1f} | {statistics.median(r.sequential) * 1000:.0f} |"
        )
    lines += [
        "",
        "Throughput: questions divided by the wall time of the parallel rounds. Sequential: the same 20 "
        "questions asked one at a time on the same store, before the parallel rounds. Every parallel answer "
        "(the ids of the top-k chunks) is compared with the sequential answer to the same question.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieval_load", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="parallel rounds of 20 questions (default 5)")
    parser.add_argument("--workers", type=int, default=20, help="threads (default 20)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"markdown report (default {RESULTS})")
    parser.add_argument("--no-server", action="store_true", help="skip the Milvus Lite gRPC server back end")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    setup_logging()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    scratch = Path(tempfile.mkdtemp(prefix="retrieval-load-"))
    settings = Settings(data_dir=scratch / "data", collection="load")
    embedder = Embedder(settings).load()
    files = documents(scratch / "generated")
    store = DocumentStore(settings, embedder).open()
    started = time.perf_counter()
    report = Ingestor(settings, embedder, store).ingest(files)
    print(f"ingested: {report.summary()}", file=sys.stderr)
    setup = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} at start (other jobs were running)",
        "documents": ", ".join(f.name for f in files) + f" ({report.chunks_written} chunks, "
        f"ingested in {time.perf_counter() - started:.0f} s)"
        + "".join(f"; {r.path.name} skipped: {r.error}" for r in report.files if r.error),
        "settings": f"top_k {settings.top_k}, hybrid {settings.hybrid}, {settings.index_type} {settings.metric}, "
        f"threshold {settings.relevance_threshold}; embedding model {settings.embedding_model_name} on CPU",
        "rounds": f"{args.rounds} x {len(QUESTIONS)} questions, {args.workers} threads; "
        f"torch intra-op threads {torch.get_num_threads()}",
    }
    results = []
    retriever = Retriever(settings, embedder, store)
    print("embedded Milvus Lite ...", file=sys.stderr)
    results.append(measure("embedded Milvus Lite", retriever, args.workers, args.rounds))
    store.close()

    if not args.no_server:
        from milvus_lite.server_manager import server_manager_instance

        db_path = Path(settings.resolved_milvus_uri)
        server_manager_instance.release_server(str(db_path))  # free the folder for the server process
        server = LocalServer(db_path)
        uri = server.start()
        try:
            served = settings.model_copy(update={"milvus_uri": uri})
            store = DocumentStore(served, embedder).open()
            print(f"Milvus Lite gRPC server at {uri} ...", file=sys.stderr)
            results.append(
                measure("Milvus Lite gRPC server", Retriever(served, embedder, store), args.workers, args.rounds)
            )
            store.close()
        finally:
            server.stop()

    text = markdown(results, setup)
    write_keeping_notes(args.output, text)
    print(text)
    return 0 if all(r.errors == 0 and r.mismatches == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
