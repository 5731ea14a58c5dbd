"""Does a source say what a sentence says? The check behind every mark, and ``rag check``.

Embedding similarity alone measures topic: "The module's efficiency is 2.0%" sits close to
a page that says 21.0 %. A sentence therefore counts as supported only when

1. it is similar enough to the passage(s) it cites (the old check, ``grounding_threshold``,
   taken as the better of the whole passage and its closest sentence), and
2. those passages hold every fact it states (``rag.facts``: figures with units, dates, names,
   quoted and rare terms); numbers and words that restate the question are excepted, and so is a
   name the question gives that another retrieved passage of the same document holds, and
3. it does not flip the negation of the source sentence it restates ("is not" for "is"), and
4. it does not pair a value with another item than the source does (``rag.relations``: a
   "respectively" list of figures or names, a table row or column: "the base model uses ResNet 101"
   where 101 is the large one's).

An uncited sentence is checked against each passage in turn and takes the first that
supports it. Each result names its reason when unsupported ("2.0% is not in source [1]")
and quotes, word for word, the source sentence(s) that support it (``evidence``) or that
come closest (``closest``), so a page can highlight them inside the shown passage.

    >>> checker = GroundingChecker(embedder, threshold=0.45)
    >>> [check] = checker.check(["The module is 2.0% efficient [1]."], sources)
    >>> check.supported, check.reason
    (False, '2.0% is not in source [1]')
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from rag.answering import Evidence, SentenceCheck, Source, cited_numbers
from rag.embedding import Embedder
from rag.facts import CITATION, NEGATION, Fact, TextFacts, extract_facts, near_copy_changes
from rag.relations import swapped_pairing
from rag.sentences import sentence_spans, split_sentences

# A sentence this close to a source sentence restates it: a negation in one and not the other flips it.
NEGATION_SIMILARITY = 0.75
MAX_EVIDENCE = 3  # source sentences quoted for one answer sentence at most
QUOTED = 0.9  # share of a sentence's words that a source sentence has in the same order: a quotation


@dataclass
class PassageSentence:
    """One sentence of a numbered passage, with its place in the passage's text."""

    n: int
    start: int
    end: int
    text: str


@dataclass
class _Outcome:
    supported: bool
    similarity: float
    group: list[int]
    reason: str | None
    evidence: list[PassageSentence]
    missing: list[Fact] = field(default_factory=list)


def passage_sentences(source: Source) -> list[PassageSentence]:
    """The sentences of a passage, verbatim, with offsets into ``source.text`` (for highlighting)."""
    return [PassageSentence(source.n, s, e, source.text[s:e]) for s, e in sentence_spans(source.text)]


def find_sentence(passage: str, sentence: str) -> tuple[int, int] | None:
    """Where a quoted sentence sits in a passage (any whitespace between words), for highlighting."""
    words = sentence.split()
    if not words:
        return None
    match = re.search(r"\s+".join(re.escape(w) for w in words), passage)
    return match.span() if match else None


def _tokens_of(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _below(similarity: float, threshold: float) -> str:
    """A score under the threshold, with the digits it takes not to read as the threshold itself
    (0.449 against 0.45 shows "0.449", not "0.45")."""
    for digits in (2, 3):
        shown = f"{similarity:.{digits}f}"
        if float(shown) < threshold:
            return shown
    return f"{math.floor(similarity * 10_000) / 10_000:.4f}"


def _sources_label(numbers: Sequence[int]) -> str:
    listed = ", ".join(str(n) for n in sorted(numbers))
    return f"source [{listed}]" if len(numbers) == 1 else f"sources [{listed}]"


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class GroundingChecker:
    """Marks sentences as supported or not by numbered passages, with reasons and evidence."""

    def __init__(
        self,
        embedder: Embedder,
        threshold: float,
        *,
        facts: bool = True,
        negation: bool = True,
        sentence_similarity: bool = True,
        near_copy: bool = True,
        pairings: bool = True,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        # All three off is the similarity-only check from before issue 11, kept for the benchmark.
        self.use_facts = facts
        self.use_negation = negation
        self.use_sentence_similarity = sentence_similarity  # also the passage's closest sentence, not only the whole
        self.use_near_copy = near_copy  # swapped words and quotations, against the closest source sentence
        self.use_pairings = pairings  # a figure the source gives for another row or "respectively" item
        self._text_facts: dict[str, TextFacts] = {}

    @classmethod
    def similarity_only(cls, embedder: Embedder, threshold: float) -> GroundingChecker:
        """The check before issue 11: the sentence's cosine similarity to the whole cited passage."""
        return cls(
            embedder, threshold, facts=False, negation=False, sentence_similarity=False, near_copy=False, pairings=False
        )

    @cached_property
    def vocabulary(self) -> frozenset[str]:
        """Whole lowercase words the embedding model knows: what is not in it is a rare term or a name."""
        vocab = self.embedder.tokenizer.get_vocab()
        return frozenset(w for w in vocab if w.isalpha() and w.islower())

    def facts_of(self, text: str) -> TextFacts:
        facts = self._text_facts.get(text)
        if facts is None:
            if len(self._text_facts) > 2048:
                self._text_facts.clear()
            facts = self._text_facts[text] = TextFacts(text)
        return facts

    def check(self, sentences: Sequence[str], sources: Sequence[Source], question: str = "") -> list[SentenceCheck]:
        """One ``SentenceCheck`` per sentence; uncited supported sentences get the citation they lacked."""
        if not sentences:
            return []
        if not sources:
            return [SentenceCheck(s, False, 0.0, [], reason="no source to check it against") for s in sentences]
        plain = [CITATION.sub("", s).strip() or s for s in sentences]
        parts = [passage_sentences(s) for s in sources]
        flat = [p for part in parts for p in part]
        vectors = self.embedder.encode_recent(plain + [s.text for s in sources] + [p.text for p in flat])
        sentence_vectors = vectors[: len(plain)]
        passage_similarity = sentence_vectors @ vectors[len(plain) : len(plain) + len(sources)].T
        sentence_similarity = sentence_vectors @ vectors[len(plain) + len(sources) :].T
        by_number = {s.n: i for i, s in enumerate(sources)}
        checks = []
        for i, sentence in enumerate(sentences):
            cited = [n for n in dict.fromkeys(cited_numbers(sentence)) if n in by_number]
            facts = extract_facts(plain[i], question=question, vocabulary=self.vocabulary) if self.use_facts else []
            context = (sources, flat, by_number, passage_similarity[i], sentence_similarity[i], question)
            if cited:
                outcome = self._judge(plain[i], facts, cited, *context)
            else:
                order = np.argsort(-passage_similarity[i], kind="stable")
                outcomes = [self._judge(plain[i], facts, [sources[j].n], *context) for j in order]
                outcome = next((o for o in outcomes if o.supported), outcomes[0])
            checks.append(self._as_check(sentence, cited, outcome, sources, by_number))
        return checks

    def _judge(
        self,
        sentence: str,
        facts: list[Fact],
        group: list[int],
        sources: Sequence[Source],
        flat: list[PassageSentence],
        by_number: dict[int, int],
        passage_similarity: np.ndarray,
        sentence_similarity: np.ndarray,
        question: str,
    ) -> _Outcome:
        """Whether the passages numbered ``group`` together support ``sentence``."""
        members = [k for k, p in enumerate(flat) if p.n in group]
        members.sort(key=lambda k: -float(sentence_similarity[k]))
        passage_best = max(float(passage_similarity[by_number[n]]) for n in group)
        sentence_best = float(sentence_similarity[members[0]]) if members else -1.0
        similarity = max(passage_best, sentence_best) if self.use_sentence_similarity else passage_best
        missing = []
        texts = [self.facts_of(sources[by_number[n]].text) for n in group]
        if facts:
            missing = [f for f in facts if not any(t.has(f) for t in texts)]
            if missing and question:
                missing = self._beyond_document(missing, group, sources, by_number, question)
        swap = None
        if self.use_pairings:
            figures = [f for f in facts if f.kind in ("number", "year") and f not in missing]
            swap = swapped_pairing(sentence, [sources[by_number[n]].text for n in group], figures, question)
        negation_change = None
        quoted = False
        if self.use_near_copy and members:
            # A near copy of a source sentence that swaps a word for one the passages never use states
            # something else; so does one that adds or drops a "not". One that quotes it (nearly)
            # word for word is similar enough however short a piece of a long sentence it takes.
            copy = near_copy_changes(sentence, flat[members[0]].text)
            if copy is not None:
                known = {w for f in facts for w in _tokens_of(f.text)} | set(_tokens_of(question))
                for word in dict.fromkeys(copy.swapped):
                    if word not in known and not any(t.has(Fact("term", word, words=(word,))) for t in texts):
                        missing.append(Fact("term", word, words=(word,)))
                        known.add(word)
                negation_change = copy.negations
                quoted = copy.share >= QUOTED and not copy.swapped
        evidence = self._evidence(facts, [flat[k] for k in members])
        reasons = []
        if similarity < self.threshold and not quoted:
            reasons.append(
                f"not similar enough to {_sources_label(group)} ({_below(similarity, self.threshold)}, "
                f"needs {self.threshold:.2f})"
            )
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            reasons.append(f"{_listing([f.text for f in missing])} {verb} not in {_sources_label(group)}")
        if swap is not None:
            reasons.append(f"{_sources_label(group)} gives {swap.value} for “{swap.source_says}”, not “{swap.said}”")
        if self.use_negation and members:
            closest = flat[members[0]].text
            if negation_change is None and sentence_best >= NEGATION_SIMILARITY:
                negation_change = len(NEGATION.findall(sentence)) - len(NEGATION.findall(closest))
            if negation_change:
                said, source_says = NEGATION.findall(sentence), NEGATION.findall(closest)
                reasons.append(
                    f'says "{said[-1].strip()}" where {_sources_label(group)} does not'
                    if negation_change > 0
                    else f'leaves out the "{source_says[-1].strip()}" of {_sources_label(group)}'
                )
        return _Outcome(not reasons, similarity, group, "; ".join(reasons) or None, evidence, missing)

    def _beyond_document(
        self, missing: list[Fact], group: list[int], sources: Sequence[Source], by_number: dict[int, int], question: str
    ) -> list[Fact]:
        """The missing facts, less names and terms that restate the question and that another retrieved
        passage of the same document holds: "DPR" in a passage of the DPR paper that only says "we".
        A name no passage of that document holds stays missing (an answer about another product)."""
        documents = {sources[by_number[n]].source for n in group}
        siblings = [self.facts_of(s.text) for s in sources if s.source in documents and s.n not in group]
        if not siblings:
            return missing
        asked = self.facts_of(question)
        return [
            f
            for f in missing
            if f.kind not in ("name", "term", "quote") or not asked.has(f) or not any(t.has(f) for t in siblings)
        ]

    def _evidence(self, facts: list[Fact], ranked: list[PassageSentence]) -> list[PassageSentence]:
        """The closest source sentence, plus the next closest ones that hold facts it lacks."""
        if not ranked:
            return []
        chosen = [ranked[0]]
        uncovered = [f for f in facts if not self.facts_of(ranked[0].text).has(f)]
        for candidate in ranked[1:]:
            if not uncovered or len(chosen) >= MAX_EVIDENCE:
                break
            held = [f for f in uncovered if self.facts_of(candidate.text).has(f)]
            if held:
                chosen.append(candidate)
                uncovered = [f for f in uncovered if f not in held]
        return chosen

    @staticmethod
    def _as_check(
        sentence: str, cited: list[int], outcome: _Outcome, sources: Sequence[Source], by_number: dict[int, int]
    ) -> SentenceCheck:
        quotes = [
            Evidence(p.n, sources[by_number[p.n]].source, sources[by_number[p.n]].page, p.text)
            for p in outcome.evidence
        ]
        inferred = False
        citations = cited
        if not cited and outcome.supported:
            citations, inferred = outcome.group, True
            sentence = append_citation(sentence, outcome.group[0])
        for n in citations:
            sources[by_number[n]].cited = True
        return SentenceCheck(
            sentence,
            outcome.supported,
            round(outcome.similarity, 4),
            citations,
            inferred,
            reason=outcome.reason,
            evidence=quotes if outcome.supported else [],
            closest=[] if outcome.supported else quotes,
            missing=[f.text for f in outcome.missing],
        )


def append_citation(sentence: str, n: int) -> str:
    """``sentence`` with ``[n]`` before its final punctuation."""
    match = re.search(r"[.!?]+$", sentence)
    if match:
        return f"{sentence[: match.start()]} [{n}]{match.group()}"
    return f"{sentence} [{n}]"


# ``rag check`` ------------------------------------------------------------------------------

Verdict = Literal["supported", "unsupported", "no evidence"]


@dataclass
class ClaimCheck:
    """The verdict on a claim checked against the stored documents."""

    claim: str
    verdict: Verdict
    reason: str
    evidence: list[dict[str, Any]]  # {"source", "page", "text" (the passage), "quote" (its sentence)}
    sentences: list[SentenceCheck] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "verdict": self.verdict, "reason": self.reason, "evidence": self.evidence}


def check_claim(
    claim: str,
    retriever: Any,
    threshold: float,
    *,
    sources: Sequence[str] | None = None,
    k: int | None = None,
) -> ClaimCheck:
    """Retrieve passages for ``claim`` and check it with the chat's checker.

    "no evidence" when nothing stored is relevant enough to the claim; otherwise "supported"
    when every sentence of it is, and "unsupported" with the reasons of the sentences that are not.
    """
    from rag.answering import number_sources

    retrieval = retriever.retrieve(claim, k=k, sources=sources)
    if not retrieval.found:
        return ClaimCheck(claim, "no evidence", "no stored passage is relevant enough to this claim", [])
    numbered = number_sources(retrieval.hits)
    sentences = split_sentences(claim) or [claim]
    checks = GroundingChecker(retriever.embedder, threshold).check(sentences, numbered)
    by_number = {s.n: s for s in numbered}
    evidence, seen = [], set()
    for check in checks:
        for item in check.evidence or check.closest:
            if (item.n, item.text) not in seen:
                seen.add((item.n, item.text))
                passage = by_number[item.n]
                evidence.append({"source": item.source, "page": item.page, "text": passage.text, "quote": item.text})
    failed = [c for c in checks if not c.supported]
    if failed:
        reason = "; ".join(c.reason or "not supported" for c in failed)
        if len(checks) > 1:
            reason = "; ".join(f'"{CITATION.sub("", c.text).strip()}": {c.reason}' for c in failed)
        return ClaimCheck(claim, "unsupported", reason, evidence, checks, numbered)
    cited = sorted({n for c in checks for n in c.citations})
    reason = f"{_sources_label(cited)} {'says' if len(cited) == 1 else 'say'} so"
    return ClaimCheck(claim, "supported", reason, evidence, checks, numbered)
