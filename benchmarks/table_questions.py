"""Questions about the cells of a scanned table: does the model state the asked cell's figure?

The table is ``tests/data/ocr/harbour-fees-scan.pdf`` (a fee table that exists only as a page
image, read by OCR row by row), so the benchmark runs on a fresh clone. Each question names a
row and a column ("What is the winter rate for a cruise ship?"); the fixture's own rows give the
right figure. Two prompts, in one run, on the same retrieval:

- ``rows cut`` (the default): a table row in the focused prompt keeps its label and the cells the
  question names (``rag.sentence_ranking.focus_row``);
- ``whole rows``: every cell of the row, as before.

Measured: the answer holds the right figure; it states another figure of the table instead (a
wrong figure); and how many of those wrong figures carry an unsupported mark.

    python -m benchmarks.table_questions
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import publish, write_figures

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT / "tests" / "data" / "ocr" / "harbour-fees-scan.pdf"
RESULTS = ROOT / "benchmarks" / "results" / "table_questions.md"
FIGURE = re.compile(r"\d+\.\d\d")


def questions(per_row: int, seed: int) -> list[dict[str, Any]]:
    """``per_row`` questions for each row of the fee table, about columns drawn at random."""
    sys.path.insert(0, str(SCAN.parent))
    from make_fixtures import FEE_HEADER, FEE_ROWS

    rng = random.Random(seed)
    asked = []
    for row in FEE_ROWS:
        for column in rng.sample(range(1, len(FEE_HEADER)), per_row):
            asked.append(
                {
                    "question": f"What is the {FEE_HEADER[column].lower()} for a {row[0].lower()}?",
                    "expected": row[column],
                    "table_figures": sorted({v for r in FEE_ROWS for v in r[1:] if FIGURE.fullmatch(v)}),
                }
            )
    return asked


def run(asked: list[dict[str, Any]], cut_rows: bool, ask: Callable[[str], Any]) -> dict[str, Any]:
    import rag.sentence_ranking as ranking

    real = ranking.focus_row
    if not cut_rows:
        ranking.focus_row = lambda text, question: text  # the prompt as it was: whole rows
    rows, started = [], time.perf_counter()
    try:
        for item in asked:
            answer = ask(item["question"])
            right = item["expected"] in answer.text
            others = set(item["table_figures"]) - {item["expected"]}
            wrong = [s for s in answer.sentences if others & set(FIGURE.findall(s.text))]
            rows.append(
                {
                    "question": item["question"],
                    "expected": item["expected"],
                    "answer": answer.text,
                    "right": right,
                    "wrong_figure": bool(wrong) and not right,
                    "wrong_marked": bool(wrong) and not right and all(not s.supported for s in wrong),
                }
            )
    finally:
        ranking.focus_row = real
    count = len(rows)
    wrong = sum(r["wrong_figure"] for r in rows)
    return {
        "right": sum(r["right"] for r in rows),
        "wrong_figure": wrong,
        "wrong_marked": sum(r["wrong_marked"] for r in rows),
        "questions": count,
        "seconds_per_question": round((time.perf_counter() - started) / max(count, 1), 1),
        "rows": rows,
    }


def render(figures: dict[str, Any], command: str) -> str:
    configs = figures["configs"]
    lines = [
        "# Questions about the cells of a scanned table",
        "",
        f"- date: {figures['date']}",
        f"- table: `{SCAN.relative_to(ROOT)}` (read by OCR, row by row); {figures['questions']} questions, "
        f"{figures['per_row']} per row, columns drawn with seed {figures['seed']}",
        f"- reproduce: `{command}`",
        "",
        "| measure | " + " | ".join(configs) + " |",
        "|---|" + "---:|" * len(configs),
    ]
    for label, key in (
        ("answer holds the right figure", "right"),
        ("answer states another figure of the table instead", "wrong_figure"),
        ("... and every sentence with it is marked unsupported", "wrong_marked"),
        ("seconds per question", "seconds_per_question"),
    ):
        lines.append(f"| {label} | " + " | ".join(str(configs[name][key]) for name in configs) + " |")
    lines += ["", "| question | expected | " + " | ".join(configs) + " |", "|---|---|" + "---|" * len(configs)]
    names = list(configs)
    for i, row in enumerate(configs[names[0]]["rows"]):
        marks = [_outcome(configs[name]["rows"][i]) for name in names]
        lines.append(f"| {row['question']} | {row['expected']} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def _outcome(row: dict[str, Any]) -> str:
    if row["right"]:
        return "ok"
    if row["wrong_figure"]:
        return "wrong, marked" if row["wrong_marked"] else "wrong"
    return "no figure"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-row", type=int, default=2, help="questions per table row (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from rag.config import Settings
    from rag.services import Services

    asked = questions(args.per_row, args.seed)
    with tempfile.TemporaryDirectory(prefix="rag-table-questions-") as tmp:
        services = Services(Settings(data_dir=Path(tmp) / "data", collection="tables"))
        report = services.ingestor().ingest([SCAN])
        if report.files[0].error:
            print(f"could not ingest {SCAN.name}: {report.files[0].error}", file=sys.stderr)
            return 1
        pipeline = services.answer_pipeline()

        def ask(question: str) -> Any:
            return pipeline.stream(question).answer()

        configs = {"rows cut": run(asked, True, ask), "whole rows": run(asked, False, ask)}
    figures = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "questions": len(asked),
        "per_row": args.per_row,
        "seed": args.seed,
        "configs": configs,
    }
    command = "python -m benchmarks.table_questions" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    write_figures(args.output, figures)
    publish(args.output, render(figures, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
