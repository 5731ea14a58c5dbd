"""Eight questions at once: the in-process model against ``transformers serve --continuous-batching``.

    python -m benchmarks.concurrent_questions                 # writes benchmarks/results/concurrent_questions.md
    python -m benchmarks.concurrent_questions --questions 8 --max-new-tokens 64 --output /tmp/cq.md

Eight threads, one per user, ask at the same moment, each with a RAG-sized prompt (the
product's own prompt with four numbered passages), through the queue the app uses
(``rag.queueing.FairQueue``): one turn at a time for the in-process model, all eight at once
for the server (``RAG_LLM_MAX_CONCURRENCY=8``), which batches them. Per question: the time
from asking to its first streamed text (first-token time, p50 and p95) and to its last; and
the wall time until all eight are answered. Greedy decoding, the same answer budget for all.

The server runs the bundled model's converted folder on loopback (started and stopped by
``rag.llm_serve``, as for ``tests/test_llm_server.py``), on the same CPU cores as this
process; a third run without ``--continuous-batching`` shows what the batching itself brings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.ingest_throughput import load_average, machine
from benchmarks.report import write_keeping_notes
from rag.answering import Source, build_messages
from rag.config import Settings
from rag.generation import Generator, TransformersGenerator
from rag.llm_serve import converted_bundled_model, serve_installed, serving
from rag.logs import setup_logging
from rag.queueing import FairQueue

RESULTS = Path(__file__).resolve().parent / "results" / "concurrent_questions.md"
START_TIMEOUT_S = 300
PASSAGES = [
    ("volcano.pdf", "Mount Karthos last erupted in 1987. Its crater lake is 212 metres deep and holds acidic "
     "water. Seismologists watch the magma chamber beneath the crater for signs of unrest, and the 1902 eruption "
     "sent pyroclastic flows down the southern slope."),
    ("freedonia.md", "The capital of Freedonia is Zenda. The city has 42 bridges over the river Sylvan. "
     "Freedonia's national animal is the blue heron, protected since 1921."),
    ("bakery.txt", "Sourdough bread rises because wild yeast and lactobacilli ferment the flour. Bake the loaf "
     "in a hot oven with steam so the crust stays thin and crisp; let the dough proof overnight in the fridge."),
    ("chess.txt", "The Sicilian Defence answers 1.e4 with c5 and leads to sharp, unbalanced positions. Castling "
     "moves the king two squares towards a rook and tucks it behind pawns."),
]  # fmt: skip
QUESTIONS = [
    "How deep is the crater lake of Mount Karthos?",
    "What is the capital of Freedonia?",
    "Why does sourdough bread rise?",
    "How does the Sicilian Defence answer 1.e4?",
    "When did Mount Karthos last erupt?",
    "How many bridges does Zenda have?",
    "What does castling do?",
    "Since when is the blue heron protected?",
]


@dataclass
class Timing:
    first_s: float = float("nan")  # from asking to the first streamed text
    total_s: float = float("nan")  # from asking to the last
    chars: int = 0


@dataclass
class Run:
    name: str
    detail: str
    timings: list[Timing] = field(default_factory=list)
    wall_s: float = 0.0

    def firsts(self) -> list[float]:
        return sorted(t.first_s for t in self.timings)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a short list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def prompts(count: int) -> list[list]:
    sources = [Source(i, name, name, 1, 0.6, text) for i, (name, text) in enumerate(PASSAGES, start=1)]
    return [build_messages(QUESTIONS[i % len(QUESTIONS)], sources) for i in range(count)]


def ask_together(generator: Generator, queue: FairQueue, count: int, max_new_tokens: int) -> tuple[list[Timing], float]:
    """``count`` threads ask at the same moment, each as its own session; returns per-question timings and wall time."""
    messages = prompts(count)
    timings = [Timing() for _ in range(count)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def ask(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            stream = generator.stream(messages[i], max_new_tokens=max_new_tokens, temperature=0)
            for piece in queue.iterate(stream, session=f"user-{i}"):
                if timings[i].chars == 0 and piece.strip():
                    timings[i].first_s = time.perf_counter() - started
                timings[i].chars += len(piece)
            timings[i].total_s = time.perf_counter() - started
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} questions failed: {errors[0]!r}")
    return timings, wall


# Runs -----------------------------------------------------------------------------------------


def run_in_process(count: int, max_new_tokens: int) -> Run:
    # The loop guard holds back the last 80 characters of a stream; off here, so that the first
    # text is the first token for both back ends (the app's default adds that holdback).
    generator = TransformersGenerator(Settings(loop_guard=False))
    generator.load()
    generator.generate(prompts(1)[0], max_new_tokens=4)  # warm-up, not timed
    run = Run("in-process", f"bundled model in this process ({generator.weights_description}); queue: 1 at a time")
    run.timings, run.wall_s = ask_together(generator, FairQueue(1), count, max_new_tokens)
    return run


def run_served(count: int, max_new_tokens: int, *, continuous_batching: bool, folder: Path) -> Run:
    from rag.openai_generator import OpenAIGenerator

    name = "transformers serve --continuous-batching" if continuous_batching else "transformers serve"
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving(
            str(folder), Path(tmp) / "serve.log", continuous_batching=continuous_batching, timeout_s=START_TIMEOUT_S
        ) as server,
    ):
        try:
            settings = Settings(llm_base_url=server.url, llm_max_concurrency=count, llm_tokenizer=str(folder))
            generator = OpenAIGenerator(settings)
            generator.load()
            generator.generate(prompts(1)[0], max_new_tokens=4)  # the server loads its model on first use
            run = Run(name, f"float32 on the CPU, in another process; queue: {count} at once")
            run.timings, run.wall_s = ask_together(generator, FairQueue(count), count, max_new_tokens)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{server.tail()}") from exc
    return run


def report(runs: list[Run], count: int, max_new_tokens: int, loads: tuple[str, str]) -> str:
    lines = [
        "# Concurrent questions: in-process model against an LLM server",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, no GPU; the server runs on the same cores as the client",
        f"- load average (1, 5, 15 min) before -> after: {loads[0]} -> {loads[1]}",
        f"- {count} questions asked at the same moment from {count} threads, each a RAG prompt of 4 passages; "
        f"greedy, at most {max_new_tokens} new tokens; model: the bundled SmolLM2-135M-Instruct",
        "- reproduce: `python -m benchmarks.concurrent_questions`",
        "",
        "| back end | first text p50 s | first text p95 s | slowest first text s | total s (all answered) |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        firsts = run.firsts()
        lines.append(
            f"| {run.name} | {statistics.median(firsts):.2f} | {percentile(firsts, 95):.2f} | {firsts[-1]:.2f} "
            f"| {run.wall_s:.2f} |"
        )
    lines += ["", "Per back end:", ""]
    for run in runs:
        firsts = ", ".join(f"{t.first_s:.1f}" for t in sorted(run.timings, key=lambda t: t.first_s))
        lines.append(f"- **{run.name}**: {run.detail}. First text at {firsts} s; answers of "
                     f"{statistics.mean(t.chars for t in run.timings):.0f} characters on average.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.concurrent_questions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-plain-server", action="store_true", help="skip the run without continuous batching")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    setup_logging(verbose=False)
    if not serve_installed():
        print("transformers serve is not installed: pip install -r requirements-test.txt", file=sys.stderr)
        return 2
    folder = converted_bundled_model()
    before = load_average()
    runs = [run_in_process(args.questions, args.max_new_tokens)]
    print(f"{runs[-1].name}: wall {runs[-1].wall_s:.1f} s", file=sys.stderr)
    runs.append(run_served(args.questions, args.max_new_tokens, continuous_batching=True, folder=folder))
    print(f"{runs[-1].name}: wall {runs[-1].wall_s:.1f} s", file=sys.stderr)
    if not args.no_plain_server:
        runs.append(run_served(args.questions, args.max_new_tokens, continuous_batching=False, folder=folder))
        print(f"{runs[-1].name}: wall {runs[-1].wall_s:.1f} s", file=sys.stderr)
    text = report(runs, args.questions, args.max_new_tokens, (before, load_average()))
    write_keeping_notes(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
