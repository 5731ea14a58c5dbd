"""End-to-end factual QA on the shared PDFs: does the answer hold the right fact, and is a wrong one marked?

    python -m benchmarks.factual_qa    # all configurations; writes benchmarks/results/factual_qa.md and .json
    python -m benchmarks.factual_qa --configs guards --limit 5 --output /tmp/fqa.md

The PDFs named in ``benchmarks/data/dev_qa.jsonl`` are ingested into a temporary Milvus Lite
store with the project's ``Ingestor``; every question goes through the real ``AnswerPipeline``.
Each configuration changes only decoding or the prompt, so all are measured in the same run:

- baseline: no loop guard, no copy-constrained numbers (the decoding before issue 11);
- guards: the loop guard on;
- guards+copy: the loop guard and copy-constrained numbers on;
- guards+key: the loop guard on, and the key sentence repeated just before the question;
- guards+focus1 / guards+focus3: the loop guard on, and the prompt holds only the passages' 1 or 3
  best sentences for the question (each with the sentence before it) instead of whole passages.

An answer "holds the fact" when one of the accepted strings appears in it (case, spaces and
thousands separators ignored; a number must not be part of a longer number).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_keeping_notes
from rag.config import Settings
from rag.decoding import first_loop

ROOT = Path(__file__).resolve().parents[1]
DEV_SET = ROOT / "benchmarks" / "data" / "dev_qa.jsonl"
PDFS = ROOT.parent / "shared" / "data" / "pdfs"
RESULTS = ROOT / "benchmarks" / "results" / "factual_qa.md"
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {"loop_guard": False, "copy_numbers": "off", "prompt_key_sentence": False, "prompt_sentences": 0},
    "guards": {"loop_guard": True, "copy_numbers": "off", "prompt_key_sentence": False, "prompt_sentences": 0},
    "guards+copy": {"loop_guard": True, "copy_numbers": "on", "prompt_key_sentence": False, "prompt_sentences": 0},
    "guards+key": {"loop_guard": True, "copy_numbers": "off", "prompt_key_sentence": True, "prompt_sentences": 0},
    "guards+focus1": {"loop_guard": True, "copy_numbers": "off", "prompt_key_sentence": False, "prompt_sentences": 1},
    "guards+focus3": {"loop_guard": True, "copy_numbers": "off", "prompt_key_sentence": False, "prompt_sentences": 3},
}


def normalise(text: str) -> str:
    """Lower case, one kind of space and dash, no thousands separators."""
    text = text.lower().replace("\u00a0", " ").replace("\u2013", "-").replace("\u2014", "-")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return re.sub(r"\s+", " ", text)


def holds(text: str, answers: list[str]) -> bool:
    """Whether ``text`` states one of the accepted ``answers``."""
    body = normalise(text)
    for answer in answers:
        pattern = re.escape(normalise(answer))
        if re.search(rf"(?<![\d.]){pattern}(?!\.?\d)", body):
            return True
    return False


def shown(path: Path) -> str:
    """A path as a reader types it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def load_dev_set(path: Path = DEV_SET) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(
    configs: list[str],
    limit: int | None,
    pdfs: Path,
    max_new_tokens: int | None,
    done: Any = None,
    questions_path: Path = DEV_SET,
) -> dict[str, Any]:
    """Ingest, then ask every question under every configuration; ``done(data)`` after each one."""
    from rag.services import Services

    questions = load_dev_set(questions_path)[:limit]
    files = sorted({q["source"] for q in questions})
    with tempfile.TemporaryDirectory(prefix="factual-qa-") as tmp:
        settings = Settings(data_dir=Path(tmp), collection="factual_qa")
        if max_new_tokens:
            settings = settings.model_copy(update={"max_new_tokens": max_new_tokens})
        services = Services(settings)
        start = time.perf_counter()
        services.ingestor().ingest([str(pdfs / name) for name in files])
        ingest_s = time.perf_counter() - start
        pipeline = services.answer_pipeline()
        generator = services.generator
        generator.load()
        tokenizer = generator._tokenizer
        results: dict[str, Any] = {}

        def data() -> dict[str, Any]:
            return {
                "date": dt.date.today().isoformat(),
                "questions": len(questions),
                "question_set": shown(questions_path),
                "files": files,
                "ingest_s": round(ingest_s, 1),
                "weights": generator.weights_description,
                "max_new_tokens": settings.max_new_tokens,
                "configs": {name: CONFIGS[name] for name in configs},
                "results": results,
            }

        for name in configs:
            generator.settings = pipeline.settings = settings.model_copy(update=CONFIGS[name])
            rows = []
            for q in questions:
                began = time.perf_counter()
                stream = pipeline.stream(q["question"])
                answer = stream.answer()
                seconds = time.perf_counter() - began
                raw_ids = tokenizer(stream.streamed_text, add_special_tokens=False)["input_ids"]
                final_ids = tokenizer(answer.text, add_special_tokens=False)["input_ids"]
                report = generator.last_decode
                key = answer.key_sentence
                rows.append(
                    {
                        "question": q["question"],
                        "expected": q["answers"][0],
                        "answer": answer.text,
                        "refused": answer.refused,
                        "correct": holds(answer.text, q["answers"]),
                        "marked_unsupported": any(not s.supported for s in answer.sentences),
                        "warned": bool(answer.warnings),
                        "reasons": [
                            s.reason for s in answer.sentences if not s.supported and getattr(s, "reason", None)
                        ],
                        "key_sentence": key.text if key else None,
                        "key_correct": bool(key and holds(key.text, q["answers"])),
                        "source_retrieved": any(s.title == q["source"] for s in answer.sources),
                        "loop_in_raw": first_loop(raw_ids) is not None,
                        "loop_in_answer": first_loop(final_ids) is not None,
                        "loop_stopped": bool(report and report.loop_stopped),
                        "number_interventions": report.number_interventions if report else 0,
                        "seconds": round(seconds, 2),
                    }
                )
                mark = "OK " if rows[-1]["correct"] else "BAD"
                print(f"[{name}] {mark} {q['question'][:60]!r} -> {answer.text[:90]!r}", flush=True)
            results[name] = {"summary": summarise(rows), "rows": rows}
            if done is not None:
                done(data())

        return data()


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    wrong = [r for r in rows if not r["correct"]]
    right = [r for r in rows if r["correct"]]
    return {
        "accuracy": round(sum(r["correct"] for r in rows) / len(rows), 3),
        "wrong": len(wrong),
        "wrong_marked_unsupported": round(sum(r["marked_unsupported"] for r in wrong) / len(wrong), 3)
        if wrong
        else None,
        "wrong_marked_or_warned": round(
            sum(r["marked_unsupported"] or r.get("warned", False) for r in wrong) / len(wrong), 3
        )
        if wrong
        else None,
        "right_marked_or_warned": round(
            sum(r["marked_unsupported"] or r.get("warned", False) for r in right) / len(right), 3
        )
        if right
        else None,
        "key_sentence_correct": round(sum(r["key_correct"] for r in rows) / len(rows), 3),
        "key_sentence_present": round(sum(r["key_sentence"] is not None for r in rows) / len(rows), 3),
        "source_retrieved": round(sum(r["source_retrieved"] for r in rows) / len(rows), 3),
        "refusals": sum(r["refused"] for r in rows),
        "loops_in_raw_text": sum(r["loop_in_raw"] for r in rows),
        "loops_in_answers": sum(r["loop_in_answer"] for r in rows),
        "loops_stopped": sum(r["loop_stopped"] for r in rows),
        "number_interventions": sum(r["number_interventions"] for r in rows),
        "seconds_per_question": round(statistics.mean(r["seconds"] for r in rows), 1),
    }


def markdown(data: dict[str, Any], command: str) -> str:
    names = list(data["results"])
    measures = [
        ("answer holds the right fact", "accuracy"),
        ("wrong answers", "wrong"),
        ("wrong answers with an unsupported mark", "wrong_marked_unsupported"),
        ("wrong answers with a mark or a no-figure warning", "wrong_marked_or_warned"),
        ("right answers with a mark or a warning (a sentence of it may be wrong)", "right_marked_or_warned"),
        ("key sentence holds the right fact", "key_sentence_correct"),
        ("key sentence present", "key_sentence_present"),
        ("expected file among the sources", "source_retrieved"),
        ("refusals", "refusals"),
        ("answers that loop (final text)", "loops_in_answers"),
        ("loops in the streamed text", "loops_in_raw_text"),
        ("loops stopped by the guard", "loops_stopped"),
        ("steps where the number filter overrode the model", "number_interventions"),
        ("seconds per question", "seconds_per_question"),
    ]
    lines = [
        "# Factual QA: answers that hold the right fact, on the shared PDFs",
        "",
        f"- date: {data['date']}; {data['questions']} questions of `{data.get('question_set', shown(DEV_SET))}` over "
        f"{len(data['files'])} PDFs ({', '.join(data['files'])}), ingested in {data['ingest_s']} s",
        f"- reproduce: `{command}`",
        f"- LLM: bundled SmolLM2-135M-Instruct ({data['weights']}), greedy, {data['max_new_tokens']} new tokens; "
        "default retrieval settings",
        "- configurations: " + "; ".join(f"{n}: {json.dumps(c)}" for n, c in data["configs"].items()),
        "",
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, key in measures:
        values = [data["results"][n]["summary"].get(key) for n in names]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else str(v) for v in values) + " |")
    lines += [
        "",
        "Per question (ok = holds the fact, m = marked unsupported, w = no-figure warning, k = key sentence holds it):",
        "",
    ]
    lines.append("| question | expected | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    rows = zip(*(data["results"][n]["rows"] for n in names), strict=True)
    for per_config in rows:
        cells = []
        for r in per_config:
            flags = ("ok" if r["correct"] else "wrong") + (" m" if r["marked_unsupported"] else "")
            flags += " w" if r.get("warned") else ""
            flags += " k" if r["key_correct"] else ""
            flags += " loop" if r["loop_in_answer"] else ""
            cells.append(flags)
        q = per_config[0]
        lines.append(f"| {q['question'][:70]} | {q['expected']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def key_sentences(questions: list[dict[str, Any]], pdfs: Path) -> float:
    """Print how often the key sentence holds the fact, with the misses; minutes, as no answer is generated."""
    from rag.services import Services

    with tempfile.TemporaryDirectory(prefix="key-sentences-") as tmp:
        services = Services(Settings(data_dir=Path(tmp), collection="key_sentences"))
        services.ingestor().ingest([str(pdfs / name) for name in sorted({q["source"] for q in questions})])
        pipeline = services.answer_pipeline()
        held = 0
        for q in questions:
            key = pipeline.stream(q["question"]).key_sentence()
            if key and holds(key.text, q["answers"]):
                held += 1
            else:
                print(f"miss: {q['question']!r} -> {key.text[:120] if key else None!r}")
    share = held / len(questions)
    print(f"key sentence holds the fact: {held} of {len(questions)} ({share:.3f})")
    return share


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--pdfs", type=Path, default=PDFS)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: the setting)")
    parser.add_argument("--questions", type=Path, default=DEV_SET, help="a QA set (default: the dev set)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--key-only", action="store_true", help="only how often the key sentence holds the fact (no generation)"
    )
    args = parser.parse_args(argv)
    if not args.pdfs.is_dir():
        raise SystemExit(f"shared PDFs not found at {args.pdfs}")
    command = "python -m benchmarks.factual_qa" + (f" --limit {args.limit}" if args.limit else "")
    if args.max_new_tokens:
        command += f" --max-new-tokens {args.max_new_tokens}"
    if args.configs != list(CONFIGS):
        command += " --configs " + " ".join(args.configs)
    if args.questions != DEV_SET:
        command += f" --questions {shown(args.questions)}"
    if args.output != RESULTS:
        command += f" --output {shown(args.output)}"
    if args.key_only:
        key_sentences(load_dev_set(args.questions)[: args.limit], args.pdfs)
        return

    def write(data: dict[str, Any]) -> None:  # after each configuration, so a long run leaves results
        args.output.with_suffix(".json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        write_keeping_notes(args.output, markdown(data, command))

    data = run(args.configs, args.limit, args.pdfs, args.max_new_tokens, write, args.questions)
    for name, result in data["results"].items():
        print(name, json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
