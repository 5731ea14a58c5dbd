"""Grounding-check accuracy: does the mark tell a sentence its source supports from one it does not?

    python -m benchmarks.grounding_accuracy    # writes benchmarks/results/grounding_accuracy.md and .json
    python -m benchmarks.grounding_accuracy --sentences 60 --output /tmp/grounding.md

A labelled set is built, seeded, from the shared data: passages are PubMedQA abstract
paragraphs (``ori_pqal.json`` contexts) and chunks of the shared PDFs (read with the
project's loader, cut with its chunker). For each sampled passage sentence:

- supported: the sentence as written; the sentence with its numbers in another format
  ("21.0%" → "21 percent", "1,234" → "1234", "4.0" → "4"); and its first clause alone
  (an excerpt, up to the first comma), all of which must stay supported;
- unsupported: a number changed; a name or term swapped for another of the same kind from
  another document of the corpus (a MeSH term of another abstract, a capitalised name, an
  acronym); a negation inserted ("is" → "is not"); a sentence from another document.

Every sentence is checked against the passage it came from and two passages of other
documents, the way an answer meets its retrieved sources: half the items cite the right
passage ("… [2]."), half cite nothing and the checker picks the passage. The changes are
made by rules of this script, not by the checker's own fact extraction. Configurations:

- old: similarity to the whole passage only (the check before issue 11);
- facts: similarity (to the passage or its closest sentence) and the facts of ``rag.facts``;
- facts+copy: also the near-copy rule (a word swapped into a copied source sentence; a quotation
  counts as similar enough);
- new: the check as the product runs it: all of the above and the negation rule.

The changes are single edits of a source sentence, which is how a small model's copied
answers go wrong, and the near-copy rule compares with the source sentence: the set measures
that case, not a freely paraphrased answer (the factual QA benchmark measures real answers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write_keeping_notes
from rag.answering import Source
from rag.config import Settings
from rag.grounding import GroundingChecker, append_citation
from rag.sentences import split_sentences

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "grounding_accuracy.md"
# Text PDFs of the shared set. Left out: scans, Korean text, a 619-page manual that takes a minute to
# read, copy-protected.pdf (pages of the same LayoutParser paper: its sentences are no "other document")
# and multi-column-2p.pdf (the first pages of multi-column.pdf).
PDFS = [
    "multi-column.pdf",
    "layout-parser-paper-with-table.pdf",
    "embedded-images-tables.pdf",
    "pdf2image-memory-error-test-400p.pdf",
]
PDF_PAGES = 40  # pages read per PDF at most
UNSUPPORTED = ["number", "name", "negation", "other document"]
SUPPORTED = ["verbatim", "reformatted", "excerpt"]
CONFIGS = ["old", "facts", "facts+copy", "new"]

_NUMBER = re.compile(r"(?<![\w.,\[])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w\]]|[.,]\d)")
_AUX = re.compile(r"\b(is|are|was|were|can|could|did|does|do|has|have|had|will|would|may|might|should|must)\b(?! not)")
_CAPITALISED = re.compile(r"(?<=\s)[A-Z][a-z]+(?:-[A-Za-z]+)*\b")
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9]{1,7}s?\b")


@dataclass
class Document:
    name: str
    passages: list[str]
    terms: list[str]  # MeSH terms (PubMedQA) or nothing


@dataclass
class Item:
    kind: str
    supported: bool
    sentence: str
    group: int  # the passage set it is checked against
    cited: bool
    origin: str  # the sentence it was made from


def load_pubmedqa(path: Path, count: int, rng: random.Random) -> list[Document]:
    data = json.loads(path.read_text())
    keys = sorted(data)
    rng.shuffle(keys)
    return [Document(f"pubmedqa:{k}", list(data[k]["CONTEXTS"]), list(data[k].get("MESHES", []))) for k in keys[:count]]


def load_pdfs(folder: Path, settings: Settings, embedder: Any) -> list[Document]:
    """Each PDF page's chunks as one document (pages of one file are told apart by file only)."""
    from rag.chunking import Chunker
    from rag.loading import load_document

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    chunker = Chunker(
        embedder.count_tokens,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        max_tokens=embedder.max_tokens,
    )
    documents = []
    for name in PDFS:
        path = folder / name
        if not path.is_file():
            continue
        document = load_document(path)
        passages = [c for page in document.pages[:PDF_PAGES] for c in chunker.split_text(page.text)]
        documents.append(Document(f"pdf:{name}", passages, []))
    return documents


def usable(sentence: str) -> bool:
    """A prose sentence: 8 to 60 words, mostly words (not a table row or a reference)."""
    words = sentence.split()
    if not 8 <= len(words) <= 60 or not sentence.rstrip().endswith((".", "!", "?")):
        return False
    alphabetic = sum(bool(re.fullmatch(r"[A-Za-z][a-z'-]*[,;:.]?", w)) for w in words)
    return alphabetic / len(words) >= 0.6


def excerpt(sentence: str) -> str | None:
    """The sentence's first clause as a sentence of its own (a partial restatement stays supported)."""
    match = re.search(r"[,;] ", sentence)
    if match is None or len(sentence[: match.start()].split()) < 6:
        return None
    return sentence[: match.start()] + "."


def change_number(sentence: str, passage: str, rng: random.Random) -> str | None:
    """One number of the sentence replaced by a value the passage does not hold."""
    list_marker = re.match(r"\s*\(?\d{1,2}[.)]\s", sentence)  # "(3) …", "5) …": a list number, not a fact
    matches = [m for m in _NUMBER.finditer(sentence) if not (list_marker and m.start() < list_marker.end())]
    if not matches:
        return None
    present = {Decimal(m[1].replace(",", "") + (m[2] or "")).normalize() for m in _NUMBER.finditer(passage)}
    match = rng.choice(matches)
    digits = match[1].replace(",", "")
    for _ in range(20):
        how = rng.random()
        if how < 0.4 and len(digits) > 1:  # drop a digit: 21.0 → 2.0
            i = rng.randrange(len(digits))
            new_int = digits[:i] + digits[i + 1 :]
        elif how < 0.8:  # change a digit: 21 → 27
            i = rng.randrange(len(digits))
            new_int = digits[:i] + rng.choice([d for d in "0123456789" if d != digits[i]]) + digits[i + 1 :]
        else:  # scale: 21 → 42 or 10
            new_int = str(max(1, int(digits) * rng.choice([2, 3]) if rng.random() < 0.5 else int(digits) // 2))
        new_int = new_int.lstrip("0") or "0"
        value = Decimal(new_int + (match[2] or "")).normalize()
        if value not in present:
            return sentence[: match.start()] + new_int + (match[2] or "") + sentence[match.end() :]
    return None


def reformat_numbers(sentence: str) -> str | None:
    """The same numbers in another format: percent in words, no thousands separator, no trailing .0."""
    changed = re.sub(r"(\d)\s?%", r"\1 percent", sentence)
    changed = re.sub(r"\b(\d{1,3}),(\d{3})\b", r"\1\2", changed)
    changed = re.sub(r"\b(\d+)\.0\b(?!\.\d)", r"\1", changed)
    return changed if changed != sentence else None


def names_in(text: str) -> list[tuple[str, str]]:
    """(kind, token) for the capitalised names and acronyms inside ``text`` (not its first word)."""
    found = [("acronym", m.group()) for m in _ACRONYM.finditer(text) if not m.group().isdigit()]
    found += [("name", m.group()) for m in _CAPITALISED.finditer(text)]
    return found


def swap_term(
    sentence: str, document: Document, passage: str, pools: dict[str, list[tuple[str, str]]], rng: random.Random
) -> str | None:
    """A MeSH term, name or acronym of the sentence replaced by one of the same kind from another document."""
    candidates: list[tuple[str, str]] = []
    for term in document.terms:
        if len(term) >= 4 and re.search(rf"\b{re.escape(term)}\b", sentence, re.IGNORECASE):
            candidates.append(("mesh", term))
    for kind, token in names_in(sentence):
        if token.lower() not in _LOWER_WORDS:  # a proper name: never written in lower case in the corpus
            candidates.append((kind, token))
    rng.shuffle(candidates)
    lowered_passage = passage.lower()
    for kind, token in candidates:
        pool = [(doc, t) for doc, t in pools[kind] if doc != document.name and t.lower() not in lowered_passage]
        if not pool:
            continue
        _, replacement = rng.choice(pool)
        match = re.search(rf"\b{re.escape(token)}\b", sentence, re.IGNORECASE)
        if match is None:
            continue
        if kind == "mesh" and match.group()[:1].islower():
            replacement = replacement.lower()
        return sentence[: match.start()] + replacement + sentence[match.end() :]
    return None


def insert_negation(sentence: str) -> str | None:
    match = _AUX.search(sentence)
    if match is None:
        return None
    return sentence[: match.end()] + " not" + sentence[match.end() :]


_LOWER_WORDS: set[str] = set()


def build(documents: list[Document], sentences: int, rng: random.Random) -> tuple[list[Item], list[list[Source]]]:
    """The labelled items and, per sampled sentence, the three numbered passages it is checked against."""
    _LOWER_WORDS.update(w for d in documents for p in d.passages for w in re.findall(r"\b[a-z][a-z-]+\b", p))
    pools: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for document in documents:
        pools["mesh"] += [(document.name, t) for t in document.terms if len(t) >= 4 and "," not in t]
        for passage in document.passages:
            for kind, token in names_in(passage):
                if token.lower() not in _LOWER_WORDS:
                    pools[kind].append((document.name, token))
    candidates = [
        (d, p, s)
        for d in documents
        for p, passage in enumerate(d.passages)
        for s in split_sentences(passage)
        if usable(s)
    ]
    by_source: dict[str, list] = defaultdict(list)
    for candidate in candidates:
        by_source[candidate[0].name.split(":")[0]].append(candidate)
    # Half the sentences from each source (PubMedQA, PDFs), as far as the PDFs allow.
    pdf_share = min(len(by_source["pdf"]), sentences // 3)
    picked = rng.sample(by_source["pdf"], pdf_share) + rng.sample(by_source["pubmedqa"], sentences - pdf_share)
    items: list[Item] = []
    groups: list[list[Source]] = []
    for index, (document, p, sentence) in enumerate(picked):
        passage = document.passages[p]
        others = [d for d in documents if d.name != document.name]
        distractors = [rng.choice(d.passages) for d in rng.sample(others, 2)]
        texts = [passage, *distractors]
        rng.shuffle(texts)
        group = [Source(n, f"doc{n}", f"doc{n}", None, 0.5, t) for n, t in enumerate(texts, start=1)]
        target = texts.index(passage) + 1
        groups.append(group)
        cited = index % 2 == 0

        made = [
            ("verbatim", True, sentence),
            ("reformatted", True, reformat_numbers(sentence)),
            ("excerpt", True, excerpt(sentence)),
            ("number", False, change_number(sentence, passage, rng)),
            ("name", False, swap_term(sentence, document, passage, pools, rng)),
            ("negation", False, insert_negation(sentence)),
        ]
        used = {document.name} | {d.name for d in documents if any(x in d.passages for x in distractors)}
        foreign = [c for c in candidates if c[0].name not in used]
        made.append(("other document", False, rng.choice(foreign)[2]))
        for kind, supported, text in made:
            if text:
                written = append_citation(text, target) if cited else text
                items.append(Item(kind, supported, written, index, cited, sentence))
    return items, groups


class CachedEmbedder:
    """The real embedder, remembering vectors: the three configurations embed the same texts."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.tokenizer = embedder.tokenizer
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            self.cache.update(zip(new, self.embedder.encode(new), strict=True))
        return np.stack([self.cache[t] for t in texts])


def evaluate(checker: GroundingChecker, items: list[Item], groups: list[list[Source]]) -> list[bool]:
    """Whether each item is marked supported."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_group[item.group].append(i)
    marked = [False] * len(items)
    for group, indexes in by_group.items():
        sources = [Source(**{**asdict(s), "cited": False}) for s in groups[group]]
        checks = checker.check([items[i].sentence for i in indexes], sources)
        for i, check in zip(indexes, checks, strict=True):
            marked[i] = check.supported
    return marked


def scores(items: list[Item], marked: list[bool]) -> dict[str, Any]:
    """Balanced accuracy and precision/recall of "unsupported", overall and per kind of change."""
    supported = [m for item, m in zip(items, marked, strict=True) if item.supported]
    false_alarms = sum(not m for m in supported)
    specificity = 1 - false_alarms / len(supported)

    def against(kinds: list[str]) -> dict[str, Any]:
        flagged = [not m for item, m in zip(items, marked, strict=True) if item.kind in kinds]
        caught = sum(flagged)
        recall = caught / len(flagged) if flagged else None
        precision = caught / (caught + false_alarms) if caught + false_alarms else None
        return {
            "items": len(flagged),
            "balanced_accuracy": round((recall + specificity) / 2, 3) if recall is not None else None,
            "precision_unsupported": round(precision, 3) if precision is not None else None,
            "recall_unsupported": round(recall, 3) if recall is not None else None,
        }

    per_supported = {
        kind: round(sum(m for item, m in zip(items, marked, strict=True) if item.kind == kind)
                    / max(1, sum(item.kind == kind for item in items)), 3)
        for kind in SUPPORTED
    }  # fmt: skip
    return {
        "overall": against(UNSUPPORTED),
        "per_kind": {kind: against([kind]) for kind in UNSUPPORTED},
        "supported_kept": round(specificity, 3),
        "supported_kept_per_kind": per_supported,
    }


def run(sentences: int, pubmed: int, seed: int) -> dict[str, Any]:
    from rag.embedding import Embedder
    from rag.logs import quiet_libraries

    quiet_libraries()
    rng = random.Random(seed)
    settings = Settings()
    embedder = Embedder(settings).load()
    started = time.perf_counter()
    documents = load_pubmedqa(SHARED / "pubmedqa" / "ori_pqal.json", pubmed, rng)
    documents += load_pdfs(SHARED / "pdfs", settings, embedder)
    items, groups = build(documents, sentences, rng)
    build_s = time.perf_counter() - started
    cached = CachedEmbedder(embedder)
    threshold = settings.grounding_threshold
    checkers = {
        "old": GroundingChecker.similarity_only(cached, threshold),  # type: ignore[arg-type]
        "facts": GroundingChecker(cached, threshold, negation=False, near_copy=False),  # type: ignore[arg-type]
        "facts+copy": GroundingChecker(cached, threshold, negation=False),  # type: ignore[arg-type]
        "new": GroundingChecker(cached, threshold),  # type: ignore[arg-type]
    }
    results, marks, timings = {}, {}, {}
    for name, checker in checkers.items():
        started = time.perf_counter()
        marks[name] = evaluate(checker, items, groups)
        timings[name] = round(time.perf_counter() - started, 1)
        results[name] = scores(items, marks[name])
    counts = {kind: sum(i.kind == kind for i in items) for kind in SUPPORTED + UNSUPPORTED}
    errors = [
        {"kind": item.kind, "sentence": item.sentence, "origin": item.origin, "marked_supported": marks["new"][i]}
        for i, item in enumerate(items)
        if marks["new"][i] != item.supported
    ]
    return {
        "date": dt.date.today().isoformat(),
        "seed": seed,
        "sentences": sentences,
        "documents": {"pubmedqa": pubmed, "pdfs": [d.name for d in documents if d.name.startswith("pdf:")]},
        "items": counts,
        "threshold": threshold,
        "build_s": round(build_s, 1),
        "check_s": timings,
        "results": results,
        "errors_new": errors,
    }


def markdown(data: dict[str, Any], command: str) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        "# Grounding-check accuracy: supported sentences against changed ones",
        "",
        f"- date: {data['date']}; seed {data['seed']}; {data['sentences']} passage sentences from "
        f"{data['documents']['pubmedqa']} PubMedQA abstracts and {len(data['documents']['pdfs'])} shared PDFs "
        f"({', '.join(p.removeprefix('pdf:') for p in data['documents']['pdfs'])})",
        f"- reproduce: `{command}`",
        "- items: " + ", ".join(f"{k} {v}" for k, v in data["items"].items()),
        f"- each sentence is checked against its own passage and two of other documents; half cite the right "
        f"passage, half cite none; similarity threshold {data['threshold']} (`RAG_GROUNDING_THRESHOLD`)",
        "- old: similarity to the whole passage only (before issue 11); facts: + the facts of `rag.facts`; "
        "facts+copy: + the near-copy rule (swapped words, quotations); new: + the negation rule (the product's check)",
        "- the changes are single edits of a source sentence, the way a small model's copied answers go wrong; "
        "this set does not measure freely paraphrased answers (see factual_qa.md for real answers)",
        f"- seconds to check all items: {', '.join(f'{k} {v}' for k, v in data['check_s'].items())}",
        "",
        "| change | measure | " + " | ".join(CONFIGS) + " |",
        "|---|---|" + "---:|" * len(CONFIGS),
    ]
    rows = [("all changes", "overall")] + [(kind, kind) for kind in UNSUPPORTED]
    for label, key in rows:
        for measure, name in [
            ("balanced accuracy", "balanced_accuracy"),
            ("precision (unsupported)", "precision_unsupported"),
            ("recall (unsupported)", "recall_unsupported"),
        ]:
            values = [
                (data["results"][c]["overall"] if key == "overall" else data["results"][c]["per_kind"][key])[name]
                for c in CONFIGS
            ]
            lines.append(f"| {label} | {measure} | " + " | ".join(cell(v) for v in values) + " |")
    lines.append(
        "| supported | kept supported | "
        + " | ".join(cell(data["results"][c]["supported_kept"]) for c in CONFIGS)
        + " |"
    )
    for kind in SUPPORTED:
        values = [data["results"][c]["supported_kept_per_kind"][kind] for c in CONFIGS]
        lines.append(f"| supported: {kind} | kept supported | " + " | ".join(cell(v) for v in values) + " |")
    lines += [
        "",
        f"The new check's {len(data['errors_new'])} errors are listed in the JSON file (`errors_new`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=240, help="passage sentences to build items from")
    parser.add_argument("--pubmed", type=int, default=150, help="PubMedQA abstracts in the corpus")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (SHARED / "pubmedqa" / "ori_pqal.json").is_file():
        raise SystemExit(f"shared data not found under {SHARED}")
    command = "python -m benchmarks.grounding_accuracy"
    if (args.sentences, args.pubmed, args.seed) != (240, 150, 11):
        command += f" --sentences {args.sentences} --pubmed {args.pubmed} --seed {args.seed}"
    data = run(args.sentences, args.pubmed, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    write_keeping_notes(args.output, markdown(data, command))
    for name, result in data["results"].items():
        print(name, json.dumps(result["overall"]), "numbers:", json.dumps(result["per_kind"]["number"]))


if __name__ == "__main__":
    main()
