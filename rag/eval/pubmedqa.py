"""End-to-end answer quality on PubMedQA: ingest the abstracts, ask the questions.

    python -m rag.eval pubmedqa ../shared/data/pubmedqa --limit 50 --json results.json

Every context of ``ori_pqal.json`` becomes a document (its PubMed id is the source), so
each question is answered against all 1,000 abstracts. Reported per question set:

- retrieval hit rate: the question's own abstract is among the sources (and at rank 1);
- refusals: questions the pipeline declined to answer;
- decision accuracy: the answer's yes / no / maybe against the expert label;
- answer overlap: ROUGE-L F1 and token F1 against the expert's long answer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rag.config import Settings
from rag.logs import setup_logging
from rag.pipeline import Progress
from rag.records import LoadedDocument, Page
from rag.services import Services

_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of words."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def decision(answer: str) -> str:
    """yes / no / maybe as the answer states it (its first clear word wins)."""
    for word in tokens(answer)[:12]:
        if word in {"yes", "no"}:
            return word
    return "maybe"


def load_dataset(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    entries = json.loads((folder / "ori_pqal.json").read_text())
    truth_file = folder / "test_ground_truth.json"
    test_ids = list(json.loads(truth_file.read_text())) if truth_file.exists() else list(entries)
    return entries, [i for i in test_ids if i in entries]


def evaluate(folder: Path, settings: Settings, *, limit: int) -> dict[str, Any]:
    entries, test_ids = load_dataset(folder)
    services = Services(settings)
    ingestor = services.ingestor()
    documents = []
    for pubmed_id, entry in entries.items():
        text = " ".join(entry["CONTEXTS"])
        documents.append(
            LoadedDocument(
                source=pubmed_id,
                title=f"PMID {pubmed_id}",
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                size_bytes=len(text.encode()),
                pages=[Page(text=text, number=None)],
                page_total=1,
            )
        )
    bar = tqdm(desc="embed abstracts", unit="chunk", file=sys.stderr)

    def on_chunks(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    failed = [r for r in ingestor.ingest_documents(documents, Progress(on_chunks=on_chunks)) if r.error]
    bar.close()
    if failed:
        raise RuntimeError(f"{len(failed)} abstracts could not be stored: {failed[0].error}")
    pipeline = services.answer_pipeline()
    rows = []
    for pubmed_id in tqdm(test_ids[:limit], desc="questions", unit="q", file=sys.stderr):
        entry = entries[pubmed_id]
        started = time.perf_counter()
        answer = pipeline.answer(entry["QUESTION"])
        sources = [s.source for s in answer.sources]
        rows.append(
            {
                "id": pubmed_id,
                "hit": (not answer.refused) and pubmed_id in sources,
                "hit_at_1": (not answer.refused) and sources[:1] == [pubmed_id],
                "refused": answer.refused,
                "decision": decision(answer.text),
                "label": entry["final_decision"],
                "rouge_l": rouge_l(answer.text, entry["LONG_ANSWER"]),
                "token_f1": token_f1(answer.text, entry["LONG_ANSWER"]),
                "grounded": answer.grounded_share,
                "seconds": time.perf_counter() - started,
            }
        )
    n = len(rows)

    def mean(key: str) -> float:
        return round(statistics.fmean(float(r[key]) for r in rows), 4) if rows else 0.0

    return {
        "questions": n,
        "abstracts": len(entries),
        "retrieval_hit_rate": mean("hit"),
        "retrieval_hit_at_1": mean("hit_at_1"),
        "refusal_rate": mean("refused"),
        "decision_accuracy": round(sum(r["decision"] == r["label"] for r in rows) / n, 4) if n else 0.0,
        "majority_baseline": round(sum(r["label"] == "yes" for r in rows) / n, 4) if n else 0.0,
        "rouge_l": mean("rouge_l"),
        "token_f1": mean("token_f1"),
        "grounded_sentence_share": mean("grounded"),
        "seconds_per_question": mean("seconds"),
        "settings": {
            "llm": settings.llm_model or "bundled SmolLM2-135M-Instruct",
            "embedding": settings.embedding_model_name,
            "top_k": settings.top_k,
            "threshold": settings.relevance_threshold,
            "hybrid": settings.hybrid,
            "max_new_tokens": settings.max_new_tokens,
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.eval pubmedqa", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder with ori_pqal.json (and test_ground_truth.json)")
    parser.add_argument("--limit", type=int, default=50, help="test questions to ask (default 50)")
    parser.add_argument("--json", type=Path, help="write the full result (with per-question rows) here")
    parser.add_argument("--uri", help="store to use (default: a temporary Milvus Lite folder)")
    parser.add_argument("--collection", default="pubmedqa")
    args = parser.parse_args(argv)
    setup_logging()
    with tempfile.TemporaryDirectory(prefix="pubmedqa-") as scratch:
        settings = Settings(
            data_dir=Path(scratch), milvus_uri=args.uri or str(Path(scratch) / "milvus.db"), collection=args.collection
        )
        result = evaluate(args.folder, settings, limit=args.limit)
    summary = {k: v for k, v in result.items() if k != "rows"}
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
