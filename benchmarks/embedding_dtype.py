"""Embedding precision: encode speed and vector agreement, float32 against bfloat16, in one run.

    python -m benchmarks.embedding_dtype               # 1,500 SciFact abstracts; writes results/embedding_dtype.md
    python -m benchmarks.embedding_dtype --limit 300 --output /tmp/dtype.md

``RAG_EMBEDDING_DTYPE=auto`` picks bfloat16 only where the CPU has bfloat16 units (AVX512-BF16 or
AMX); elsewhere PyTorch emulates bfloat16 and it is slower. This script measures both precisions
on whatever machine runs it, and records which kind of CPU that was, so the ratio is read right.
Each precision encodes the same texts twice, alternating, and the faster pass counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks.report import write_keeping_notes
from rag.config import Settings
from rag.embedding import Embedder
from rag.q4_linear import cpu_has_bf16

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "embedding_dtype.md"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_texts(limit: int) -> list[str]:
    texts = []
    with CORPUS.open() as lines:
        for line in lines:
            row = json.loads(line)
            texts.append(f"{row['title']} {row['text']}".strip())
            if len(texts) == limit:
                break
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1500)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    texts = load_texts(args.limit)
    embedders = {name: Embedder(Settings(embedding_dtype=name)).load() for name in ("float32", "bfloat16")}
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(2):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors[name] = embedder.encode(texts)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    cosine = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
    rate = {name: len(texts) / seconds for name, seconds in best.items()}
    auto = Embedder(Settings()).load().dtype
    lines = [
        "# Embedding precision: float32 against bfloat16, same texts, same run",
        "",
        f"- date: {dt.date.today().isoformat()}; CPU: {cpu_name()}; bfloat16 units (AVX512-BF16 or AMX): "
        f"{'yes' if cpu_has_bf16() else 'no'}; `RAG_EMBEDDING_DTYPE=auto` picks {auto} here",
        f"- texts: the first {len(texts)} SciFact abstracts (title + text), bundled all-MiniLM-L6-v2, "
        f"batch {Settings().embedding_batch_size}; best of two alternating passes each",
        "- reproduce: `python -m benchmarks.embedding_dtype`",
        "",
        "| precision | texts/s | ratio to float32 |",
        "|---|---:|---:|",
        *(f"| {name} | {rate[name]:.1f} | {rate[name] / rate['float32']:.2f}x |" for name in rate),
        "",
        f"Cosine of each bfloat16 vector with its float32 twin: min {cosine.min():.5f}, "
        f"mean {cosine.mean():.5f}, share >= 0.9999: {(cosine >= 0.9999).mean():.3f}.",
        "",
    ]
    write_keeping_notes(args.output, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
