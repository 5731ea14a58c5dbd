"""Latency, throughput and memory of the bundled LLM on this machine, against fixed targets.

    python -m benchmarks.bench_generation            # prints and writes benchmarks/results/generation.md
    python -m benchmarks.bench_generation --quantize none --output /tmp/float32.md   # plain float32

Load time and peak memory are measured in fresh subprocesses, so imports and other models in
this process do not blur them. Decoding is greedy, as in the app's default settings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import write_keeping_notes
from rag.config import Settings, bundled_embedding_model
from rag.generation import TransformersGenerator, converted_copy_exists, gguf_cache_dir

ROOT = Path(__file__).resolve().parents[1]
PUBMEDQA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
RESULTS = ROOT / "benchmarks" / "results" / "generation.md"
CHUNK_TOKENS = 200  # embedding-model (word-piece) tokens, the ingest default
CHUNKS = 4
MAX_NEW_TOKENS = 128
RUNS = 3
SYSTEM = (
    "You are a careful assistant. Answer the question using only the numbered context passages. "
    "If the passages do not contain the answer, say you do not know. Cite passages as [1], [2]."
)
FALLBACK = (
    "Programmed cell death is a genetically regulated process that removes unwanted cells during "
    "development and in response to stress. In plants it shapes organs such as leaves, where cells "
    "between veins die in a coordinated pattern. Mitochondria release signals that start the process, "
    "and changes in their membrane potential are among the earliest events observed under the microscope. "
)
TARGETS = {  # name: (comparison, limit)
    "first_token_s": ("<=", 2.0),
    "decode_tok_s": (">=", 20.0),
    "load_s": ("<=", 5.0),
    "peak_rss_gb": ("<", 1.5),
}


def rag_messages() -> list[dict[str, str]]:
    """A system prompt, four ~200-token passages of real abstracts and a question."""
    from transformers import AutoTokenizer

    wordpiece = AutoTokenizer.from_pretrained(bundled_embedding_model())
    if PUBMEDQA.is_file():
        entries = list(json.loads(PUBMEDQA.read_text()).values())
        question = entries[0]["QUESTION"]
        text = " ".join(" ".join(e["CONTEXTS"]) for e in entries[:12])
    else:
        question = "Do mitochondria play a role in programmed cell death in leaves?"
        text = FALLBACK * 20
    # Cut by character offsets, so passages keep their case and spacing as ingest would.
    encoded = wordpiece(text, add_special_tokens=False, verbose=False, return_offsets_mapping=True)
    spans = encoded["offset_mapping"]
    bounds = [spans[i * CHUNK_TOKENS] for i in range(CHUNKS + 1)]
    chunks = [text[bounds[i][0] : bounds[i + 1][0]].strip() for i in range(CHUNKS)]
    context = "\n\n".join(f"[{n}] {chunk}" for n, chunk in enumerate(chunks, 1))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


def time_stream(gen: TransformersGenerator, messages: list[dict[str, str]]) -> dict[str, float]:
    """Time to first piece, and decode speed between the first and the last piece.

    Process CPU time is kept too: with one torch thread it is what the wall time would be on
    an idle core, which separates the model's speed from a busy machine's.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    stamps: list[tuple[float, float]] = []
    pieces: list[str] = []
    for piece in gen.stream(messages, max_new_tokens=MAX_NEW_TOKENS, temperature=0):
        stamps.append((time.perf_counter() - start, time.process_time() - cpu_start))
        pieces.append(piece)
    tokens = gen.count_tokens("".join(pieces))
    (first, cpu_first), (last, cpu_last) = stamps[0], stamps[-1]
    return {
        "first_token_s": first,
        "decode_tok_s": rate(tokens - 1, last - first),
        "first_token_cpu_s": cpu_first,
        "decode_tok_per_cpu_s": rate(tokens - 1, cpu_last - cpu_first),
        "tokens": tokens,
    }


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


# Subprocess parts -----------------------------------------------------------------------------


def child_load(settings: Settings) -> dict[str, float]:
    gen = TransformersGenerator(settings)
    gen.load()
    return {"load_s": gen.load_seconds or 0.0, "cache_hit": float(bool(gen.loaded_from_cache))}


def child_rss(settings: Settings) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    embedder = SentenceTransformer(bundled_embedding_model(), device="cpu")
    gen = TransformersGenerator(settings)
    gen.load()
    messages = rag_messages()
    embedder.encode([messages[-1]["content"][-500:]])
    gen.generate(messages, max_new_tokens=MAX_NEW_TOKENS, temperature=0)
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}


def in_subprocess(part: str, args: argparse.Namespace) -> dict[str, float]:
    """Run one part in a fresh interpreter; adds its wall time, interpreter start and imports included."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_generation", "--child", part, *option_args(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        **json.loads(out.stdout.strip().splitlines()[-1]),
        f"{part}_process_s": time.perf_counter() - start,
    }


def option_args(args: argparse.Namespace) -> list[str]:
    """The options that change the figures, to pass on to children and print for reproducing."""
    out = [] if args.dtype == "auto" else ["--dtype", args.dtype]
    out += [] if args.quantize == "auto" else ["--quantize", args.quantize]
    return out + ([] if args.threads is None else ["--threads", str(args.threads)])


# Report -------------------------------------------------------------------------------------


def verdict(name: str, value: float) -> str:
    op, limit = TARGETS[name]
    ok = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    return "PASS" if ok else "FAIL"


def report(figures: dict[str, float | str], args: argparse.Namespace) -> str:
    import torch

    rows = [
        ("load_s", "Load from converted cache (fresh process, `load()`)", "s", "<= 5 s"),
        ("first_token_s", "Time to first token, RAG prompt (median of 3)", "s", "<= 2 s"),
        ("decode_tok_s", "Decode speed (median of 3)", "tokens/s", ">= 20 tokens/s"),
        ("peak_rss_gb", "Peak RSS, LLM + embedding model, 1 embed + 1 answer", "GB", "< 1.5 GB"),
    ]
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    reproduce = "".join(f" {a}" for a in option_args(args))
    lines = [
        "# Generation benchmark",
        "",
        f"- Date: {dt.date.today().isoformat()}",
        f"- Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        f"- Model: bundled SmolLM2-135M-Instruct (Q4_1 GGUF), dtype {args.dtype}, quantize {args.quantize}: "
        f"{figures['weights']}; greedy, max_new_tokens {MAX_NEW_TOKENS}",
        f"- Prompt: system + {CHUNKS} PubMedQA passages of {CHUNK_TOKENS} word-piece tokens + question "
        f"= {figures['prompt_tokens']} LLM tokens",
        f"- Load average before / after: {figures['load_before']} / {figures['load_after']} "
        "(the machine may be shared; higher means noisier figures)",
        f"- Reproduce: `{env}.venv/bin/python -m benchmarks.bench_generation{reproduce}`",
        "",
        "| Figure | Value | Target | Result |",
        "|---|---|---|---|",
    ]
    for key, label, unit, target in rows:
        value = float(figures[key])
        lines.append(f"| {label} | {value:.2f} {unit} | {target} | {verdict(key, value)} |")
    lines += [
        "",
        f"- Fresh process to loaded model (interpreter, imports, load): "
        f"{float(figures['load_process_s']):.2f} s; cache hit: {bool(figures['cache_hit'])}",
        f"- First conversion from GGUF: {figures['conversion']}",
        f"- Runs (first token s / tokens/s / tokens): {figures['runs']}",
        f"- CPU time (median): first token {float(figures['first_token_cpu_s']):.2f} CPU s, decode "
        f"{float(figures['decode_tok_per_cpu_s']):.1f} tokens per CPU s. With `--threads 1` this is the "
        "speed on an idle core; with more threads it counts every thread's time (spin-waits included).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantize", default="auto", choices=["auto", "none", "int8"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["load", "rss"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings(llm_dtype=args.dtype, llm_quantize=args.quantize)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    if args.child:
        print(json.dumps((child_load if args.child == "load" else child_rss)(settings)))
        return

    figures: dict[str, float | str] = {"load_before": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    target = gguf_cache_dir(Path(settings.resolved_llm_model), settings.model_cache_dir)
    gen = TransformersGenerator(settings)
    if Path(settings.resolved_llm_model).suffix == ".gguf" and not converted_copy_exists(target):
        gen.load()
        figures["conversion"] = f"{gen.load_seconds:.1f} s (cache was missing; includes the first load)"
    else:
        figures["conversion"] = "not measured: cache present (set RAG_MODEL_CACHE_DIR to an empty folder)"
    figures.update(in_subprocess("load", args))

    gen.load()
    figures["weights"] = gen.weights_description
    messages = rag_messages()
    figures["prompt_tokens"] = gen.prompt_tokens(messages)
    gen.generate(messages, max_new_tokens=8, temperature=0)  # warm-up: first-call allocations
    runs = [time_stream(gen, messages) for _ in range(RUNS)]
    for key in ("first_token_s", "decode_tok_s", "first_token_cpu_s", "decode_tok_per_cpu_s"):
        figures[key] = statistics.median(r[key] for r in runs)
    runs_text = (f"{r['first_token_s']:.2f} / {r['decode_tok_s']:.1f} / {r['tokens']:.0f}" for r in runs)
    figures["runs"] = "; ".join(runs_text)
    figures.update(in_subprocess("rss", args))
    figures["load_after"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    text = report(figures, args)
    print(text)
    write_keeping_notes(args.output, text)


if __name__ == "__main__":
    main()
