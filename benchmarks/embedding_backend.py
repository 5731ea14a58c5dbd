"""Embedding backend: PyTorch float32 against ONNX Runtime float32 and int8, same texts, one run.

    python -m benchmarks.embedding_backend                  # 1,000 PubMedQA contexts; results/embedding_backend.md
    python -m benchmarks.embedding_backend --contexts 200 --scifact-docs 500 --output /tmp/backend.md

Why: embedding is 85-97 % of ingest (results/ingest_vs_langchain.md), so a faster encoder is the
only way to 2x the LangChain quick start on a CPU without bfloat16 units. sentence-transformers'
own ONNX backend (``SentenceTransformer(path, backend="onnx")``) needs ``optimum-onnx``, whose
only releases require transformers < 4.58 (this project pins 5.x) and import names transformers
5 removed; the script records that error. It then measures what that backend does, by hand:
the bundled MiniLM exported with ``torch.onnx.export`` and run in ONNX Runtime's CPU provider,
mean pooling and L2 normalisation as the model's own pooling config says; and the int8 model
``export_dynamic_quantized_onnx_model`` makes with its ``avx2`` config (dynamic, per-channel
symmetric int8 weights, ``onnxruntime.quantization.quantize_dynamic``).

Measured on the same texts: chunks/s (the texts are PubMedQA contexts chunked as ingest chunks
them, best of two alternating passes), cosine of each vector with its PyTorch float32 twin,
and dense nDCG@10 on SciFact (all test queries; the documents they judge plus the first
``--scifact-docs`` others, abstracts embedded whole). A backend is worth keeping only if it is
faster AND nDCG@10 stays within 0.003 AND every cosine is >= 0.999.

Needs the ``onnx`` package for the export (``pip install onnx``); it is not pinned, because no
backend passed. Skips without ../shared/data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.embedding_dtype import cpu_name
from benchmarks.report import write_keeping_notes
from rag.config import Settings
from rag.embedding import Embedder
from rag.eval.beir import load_beir
from rag.eval.metrics import evaluate
from rag.pipeline import build_chunker

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PUBMEDQA = SHARED / "pubmedqa" / "ori_pqal.json"
SCIFACT = SHARED / "scifact"
RESULTS = ROOT / "benchmarks" / "results" / "embedding_backend.md"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
COSINE_FLOOR = 0.999
NDCG_TOLERANCE = 0.003

Encode = Callable[[list[str]], np.ndarray]


def st_onnx_backend_error(path: str) -> str:
    """What sentence-transformers says when asked for its own ONNX backend here ('' if it works)."""
    from sentence_transformers import SentenceTransformer

    try:
        SentenceTransformer(path, device="cpu", backend="onnx")
    except Exception as error:  # recorded, not handled
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return ""


def export_onnx(embedder: Embedder, folder: Path) -> tuple[Path, Path]:
    """The transformer as ONNX (float32), and its dynamically quantised int8 twin (avx2 config)."""
    import torch

    # The benchmark measures ONNX Runtime itself, so it speaks to it directly (rag.ocr owns it in the product).
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: TID251

    class Hidden(torch.nn.Module):
        """Positional inputs in, last hidden state out: what ONNX Runtime is fed."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    float32, int8 = folder / "model.onnx", folder / "model_qint8_avx2.onnx"
    sample = embedder.tokenizer(["a first sample", "and a second, longer one"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    torch.onnx.export(
        Hidden(embedder.model[0].auto_model).eval(),
        tuple(sample[name] for name in INPUTS),
        str(float32),
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    quantize_dynamic(str(float32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False)
    return float32, int8


def onnx_encoder(embedder: Embedder, model: Path, threads: int) -> Encode:
    """Tokenise as sentence-transformers does, run ONNX Runtime, mean-pool, normalise."""
    import onnxruntime as ort  # noqa: TID251 - measured here, not used by the product

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    tokenizer, batch_size = embedder.tokenizer, embedder.settings.embedding_batch_size

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")  # as ST batches: longest first
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=embedder.max_tokens, return_tensors="np"
            )
            hidden = session.run(None, {name: tokens[name].astype(np.int64) for name in INPUTS})[0]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            parts.append((hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(parts)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return encode


def pubmedqa_chunks(embedder: Embedder, settings: Settings, contexts: int) -> list[str]:
    entries = json.loads(PUBMEDQA.read_text())
    chunker = build_chunker(settings, embedder)
    texts = [" ".join(entry["CONTEXTS"]) for entry in list(entries.values())[:contexts]]
    return [chunk for text in texts for chunk in chunker.split_text(text)]


def scifact_subset(others: int) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Test queries, the documents they judge plus the first ``others`` others, and the qrels."""
    data = load_beir(SCIFACT)
    judged = {doc for docs in data.qrels.values() for doc in docs}
    keep = [doc for doc in data.corpus if doc in judged]
    keep += [doc for doc in data.corpus if doc not in judged][:others]
    corpus = {doc: f"{data.corpus[doc][0]} {data.corpus[doc][1]}".strip() for doc in keep}
    return corpus, data.queries, data.qrels


def dense_ndcg(encode: Encode, corpus: dict[str, str], queries: dict[str, str], qrels: dict) -> float:
    ids = list(corpus)
    docs = encode([corpus[doc] for doc in ids])
    asked = encode(list(queries.values()))
    top = np.argsort(-(asked @ docs.T), axis=1)[:, :100]
    run = {query: [ids[i] for i in row] for query, row in zip(queries, top, strict=True)}
    return evaluate(run, qrels)["ndcg@10"]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    settings = Settings(embedding_dtype="float32")
    embedder = Embedder(settings).load()
    figures: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_name(),
        "threads": threads,
        "load_before": os.getloadavg(),
        "st_onnx_backend": st_onnx_backend_error(settings.resolved_embedding_model),
    }
    with tempfile.TemporaryDirectory(prefix="rag-onnx-") as tmp:
        float32, int8 = export_onnx(embedder, Path(tmp))
        backends: dict[str, Encode] = {
            "torch float32": embedder.encode,
            "onnx float32": onnx_encoder(embedder, float32, threads),
            "onnx int8 (avx2)": onnx_encoder(embedder, int8, threads),
        }
        chunks = pubmedqa_chunks(embedder, settings, args.contexts)
        best: dict[str, float] = {}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(2):
            for name, encode in backends.items():
                started = time.perf_counter()
                vectors[name] = encode(chunks)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
        corpus, queries, qrels = scifact_subset(args.scifact_docs)
        reference = vectors["torch float32"]
        rows = {}
        for name, encode in backends.items():
            cosine = (vectors[name] * reference).sum(axis=1)
            rows[name] = {
                "chunks_per_s": len(chunks) / best[name],
                "cosine_min": float(cosine.min()),
                "cosine_mean": float(cosine.mean()),
                "share_cosine_ok": float((cosine >= COSINE_FLOOR).mean()),
                "ndcg@10": dense_ndcg(encode, corpus, queries, qrels),
            }
    base = rows["torch float32"]
    for row in rows.values():
        row["ratio"] = row["chunks_per_s"] / base["chunks_per_s"]
        row["ndcg_delta"] = row["ndcg@10"] - base["ndcg@10"]
        row["keep"] = bool(
            row["ratio"] > 1.0 and abs(row["ndcg_delta"]) <= NDCG_TOLERANCE and row["cosine_min"] >= COSINE_FLOOR
        )
    base["keep"] = None
    figures.update(
        chunks=len(chunks),
        contexts=args.contexts,
        scifact={"docs": len(corpus), "queries": len(queries)},
        backends=rows,
        load_after=os.getloadavg(),
    )
    return figures


def report(figures: dict[str, Any]) -> str:
    rows = figures["backends"]
    verdict = {None: "reference", True: "yes", False: "no"}
    lines = [
        "# Embedding backend: PyTorch float32 against ONNX Runtime, same texts, same run",
        "",
        f"- date: {figures['date']}; CPU: {figures['cpu']}; {figures['threads']} threads; load average "
        f"before {figures['load_before'][0]:.1f}, after {figures['load_after'][0]:.1f} "
        "(the cores were shared with other jobs)",
        f"- speed: {figures['chunks']} chunks of the first {figures['contexts']} PubMedQA contexts, chunked as ingest "
        "chunks them; best of two alternating passes each; bundled all-MiniLM-L6-v2",
        f"- quality: dense nDCG@10 on SciFact, all {figures['scifact']['queries']} test queries over "
        f"{figures['scifact']['docs']} abstracts (every judged one plus distractors), embedded whole",
        f"- sentence-transformers' own ONNX backend: {figures['st_onnx_backend'] or 'loads'}. It cannot be "
        "installed here: `optimum-onnx` (0.1.0, its newest) requires transformers < 4.58 and imports "
        "`transformers.utils.is_offline_mode`, gone in the pinned transformers 5; the rows below are what it runs",
        "- reproduce: `pip install onnx` (for the export; not pinned) then `python -m benchmarks.embedding_backend`",
        "",
        "| backend | chunks/s | ratio to torch | cosine min | cosine mean | nDCG@10 | delta | passes the gate? |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *(
            f"| {name} | {row['chunks_per_s']:.1f} | {row['ratio']:.2f}x | {row['cosine_min']:.5f} | "
            f"{row['cosine_mean']:.5f} | {row['ndcg@10']:.4f} | {row['ndcg_delta']:+.4f} | {verdict[row['keep']]} |"
            for name, row in rows.items()
        ),
        "",
        f"The gate for adding a backend: faster, nDCG@10 within {NDCG_TOLERANCE} and every cosine >= {COSINE_FLOOR}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=1000, help="PubMedQA contexts to chunk and encode")
    parser.add_argument("--scifact-docs", type=int, default=1000, help="SciFact distractor abstracts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the saved JSON")
    args = parser.parse_args(argv)
    if args.report_only:  # render the recorded figures again (after a change to the wording)
        figures = json.loads(args.output.with_suffix(".json").read_text())
    elif not PUBMEDQA.is_file() or not (SCIFACT / "corpus.jsonl").is_file():
        print(f"skipped: {PUBMEDQA} or {SCIFACT} not found (the shared data lives in ../shared/data)")
        return
    elif importlib.util.find_spec("onnx") is None:  # torch.onnx.export needs it
        print("skipped: the export needs the onnx package (pip install onnx); it is not pinned")
        return
    else:
        figures = measure(args)
        args.output.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
    write_keeping_notes(args.output, report(figures))
    print(report(figures))


if __name__ == "__main__":
    main()
