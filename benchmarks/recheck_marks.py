"""Re-mark recorded answers with today's grounding check: no generation, a few minutes instead of forty.

    python -m benchmarks.recheck_marks    # reads benchmarks/results/factual_qa.json, writes recheck_marks.md

The answers the bundled model gave in the last factual QA run are checked again against the
passages the same retrieval returns (the PDFs are ingested into a temporary store as that run
did), so a change to the checker is measured on real answers at once: how many wrong answers
carry an unsupported mark, and how many right answers carry one they should not. The recorded
run's marks are shown beside, so the change is visible per question.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.factual_qa import DEV_SET, PDFS, ROOT, holds, load_dev_set
from benchmarks.report import write_keeping_notes
from rag.answering import fit_sources
from rag.config import Settings

RECORDED = ROOT / "benchmarks" / "results" / "factual_qa.json"
RESULTS = ROOT / "benchmarks" / "results" / "recheck_marks.md"


def recheck(recorded: dict[str, Any], pdfs: Path, configs: list[str]) -> dict[str, Any]:
    """Each recorded answer's marks, then and now."""
    from rag.services import Services

    question_set = ROOT / recorded.get("question_set", DEV_SET.relative_to(ROOT))
    dev = {q["question"]: q for q in load_dev_set(question_set)}
    with tempfile.TemporaryDirectory(prefix="recheck-") as tmp:
        settings = Settings(data_dir=Path(tmp), collection="recheck", max_new_tokens=recorded["max_new_tokens"])
        services = Services(settings)
        services.ingestor().ingest([str(pdfs / name) for name in recorded["files"]])
        pipeline = services.answer_pipeline()
        generator = services.generator
        generator.load()
        out: dict[str, Any] = {}
        for name in configs:
            rows = []
            for row in recorded["results"][name]["rows"]:
                stream = pipeline.stream(row["question"])
                if row["refused"] or stream.refused:
                    continue
                sources, _ = fit_sources(row["question"], stream.sources, generator, settings.max_new_tokens)
                answer = pipeline.check(row["answer"], sources, row["question"], row["question"])
                reasons = [s.reason for s in answer.sentences if not s.supported]
                accepted = dev.get(row["question"], {}).get("answers", [row["expected"]])
                rows.append(
                    {
                        "question": row["question"],
                        "expected": dev.get(row["question"], {}).get("answers", [row["expected"]])[0],
                        "correct": row["correct"],
                        "marked_then": row["marked_unsupported"],
                        "marked_now": bool(reasons),
                        "warned_now": bool(answer.warnings),
                        "key_correct_then": row["key_correct"],
                        "key_correct_now": bool(answer.key_sentence and holds(answer.key_sentence.text, accepted)),
                        "reasons_now": reasons,
                        "answer": row["answer"],
                    }
                )
                print(f"[{name}] {'ok ' if row['correct'] else 'BAD'} then={row['marked_unsupported']} "
                      f"now={bool(reasons)} {row['question'][:60]!r}", flush=True)  # fmt: skip
            out[name] = rows
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    wrong = [r for r in rows if not r["correct"]]
    right = [r for r in rows if r["correct"]]

    def share(items: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(r[key] for r in items) / len(items), 3) if items else None

    return {
        "answers": len(rows),
        "wrong": len(wrong),
        "wrong_marked_then": share(wrong, "marked_then"),
        "wrong_marked_now": share(wrong, "marked_now"),
        "right": len(right),
        "right_marked_then": share(right, "marked_then"),
        "right_marked_now": share(right, "marked_now"),
        "wrong_marked_or_warned_now": share([r | {"x": r["marked_now"] or r["warned_now"]} for r in wrong], "x"),
        "right_marked_or_warned_now": share([r | {"x": r["marked_now"] or r["warned_now"]} for r in right], "x"),
        "key_correct_then": share(rows, "key_correct_then"),
        "key_correct_now": share(rows, "key_correct_now"),
    }


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Recorded answers re-marked by the current grounding check",
        "",
        f"- date: {data['date']}; answers recorded on {data['recorded_date']} "
        f"(`{data.get('recorded', 'factual_qa.json')}`, "
        f"{data['weights']} weights); reproduce: `python -m benchmarks.recheck_marks`",
        "- then = the marks when the answers were generated; now = the check of this commit on the same "
        "answers and the same retrieved passages",
        "",
        "| configuration | answers | wrong | wrong marked then | wrong marked now | right | right marked then "
        "| right marked now | wrong marked or warned now | right marked or warned now | key sentence holds the fact "
        "then | now |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in data["results"].items():
        s = summary(rows)
        lines.append(
            f"| {name} | {s['answers']} | {s['wrong']} | {s['wrong_marked_then']} | {s['wrong_marked_now']} "
            f"| {s['right']} | {s['right_marked_then']} | {s['right_marked_now']} "
            f"| {s['wrong_marked_or_warned_now']} | {s['right_marked_or_warned_now']} "
            f"| {s['key_correct_then']} | {s['key_correct_now']} |"
        )
    lines += ["", "Marks that changed, and wrong answers still unmarked:", ""]
    for name, rows in data["results"].items():
        for r in rows:
            if r["marked_then"] != r["marked_now"] or (not r["correct"] and not r["marked_now"]) or r["warned_now"]:
                verdict = "right" if r["correct"] else "wrong"
                then, now = ("marked" if r[k] else "unmarked" for k in ("marked_then", "marked_now"))
                change = f"{then} → {now}"
                reason = f" ({'; '.join(r['reasons_now'])})" if r["reasons_now"] else ""
                reason += " (warned: no figure)" if r["warned_now"] else ""
                lines.append(f"- [{name}] {verdict}, {change}: {r['question']} — answer: “{r['answer'][:160]}”{reason}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recorded", type=Path, default=RECORDED)
    parser.add_argument("--configs", nargs="+", default=None, help="recorded configurations (default: all)")
    parser.add_argument("--pdfs", type=Path, default=PDFS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.pdfs.is_dir():
        raise SystemExit(f"shared PDFs not found at {args.pdfs}")
    recorded = json.loads(args.recorded.read_text())
    configs = args.configs or list(recorded["results"])
    data = {
        "date": dt.date.today().isoformat(),
        "recorded_date": recorded["date"],
        "recorded": args.recorded.name,
        "weights": recorded["weights"],
        "results": recheck(recorded, args.pdfs, configs),
    }
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    write_keeping_notes(args.output, markdown(data))
    for name, rows in data["results"].items():
        print(name, json.dumps(summary(rows)))


if __name__ == "__main__":
    main()
