"""Which sentences of the retrieved passages answer the question: the key sentence, and a focused prompt.

Retrieval ranks passages; a passage of 1,000 characters usually holds one sentence that answers
and several that don't. Ranking the sentences themselves serves two ends:

- the key sentence, quoted word for word above the answer, so the user sees the source's own words
  first even when the model is wrong;
- a focused prompt (``focus_sources``): a small model copies the right figure far more often from a
  few relevant sentences than from five whole passages (``benchmarks/results/factual_qa.md``).

    >>> ranked = rank_sentences(question, sources, embedder)
    >>> ranked[0].sentence.text
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from rag.answering import KeySentence, Source
from rag.embedding import Embedder
from rag.facts import find_numbers
from rag.grounding import PassageSentence, passage_sentences
from rag.keywords import STOP_WORDS, stem
from rag.questions import asked_figure_kind, asks_for_figure, is_of_kind, new_figures
from rag.readers.tables import row_cells

FOCUS_GAP = "…"  # stands between sentences of one passage that are not adjacent


@dataclass
class RankedSentence:
    """A passage sentence with its score for the question and its index within its passage."""

    sentence: PassageSentence
    index: int
    score: float


def _terms(text: str) -> list[str]:
    return [stem(w) for w in re.findall(r"\w+", text.lower()) if w not in STOP_WORDS]


def rank_sentences(question: str, sources: Sequence[Source], embedder: Embedder) -> list[RankedSentence]:
    """Every sentence of the passages, best answer to ``question`` first.

    Each sentence scores by its cosine similarity to the question plus the BM25-weighted share of
    the question's terms it holds (IDF over the retrieved sentences, so a term every sentence has
    counts little). Half of its score comes from its window (the sentence before it in the same
    passage, and itself), because an answering sentence often leaves its subject to the sentence
    before ("We used λ = 1.1" after "... a linear combination of BM25 and DPR scores").
    A sentence that holds every figure the question gives scores a little more (the table row of
    "6 g" for "… with 6 g of inhibitor?"). A question that asks for a figure prefers sentences
    holding a number the question does not
    (a reference such as "Chapter 1" or "Table 2" is no answer), and a figure of the asked kind most:
    a duration for "how long", a year for "which year", a percentage for "what share".
    Very short pieces (headings, table fragments) are damped.
    """
    candidates: list[tuple[PassageSentence, int]] = []
    windows: list[str] = []
    for source in sources:
        sentences = [p for p in passage_sentences(source) if re.search(r"\w", p.text)]
        for i, sentence in enumerate(sentences):
            candidates.append((sentence, i))
            windows.append(f"{sentences[i - 1].text} {sentence.text}" if i else sentence.text)
    if not question.strip() or not candidates:
        return []
    vectors = embedder.encode_recent([question] + [c.text for c, _ in candidates] + windows)
    count = len(candidates)
    cosine, window_cosine = vectors[1 : count + 1] @ vectors[0], vectors[count + 1 :] @ vectors[0]
    terms = list(dict.fromkeys(_terms(question)))
    relevance = _TermRelevance(terms, [Counter(_terms(c.text)) for c, _ in candidates])
    window_relevance = _TermRelevance(terms, [Counter(_terms(w)) for w in windows], idf=relevance.idf)
    wants_number = asks_for_figure(question)
    kind = asked_figure_kind(question)
    asked = {n.value for n in find_numbers(question)}
    rank = {s.n: i for i, s in enumerate(sources)}
    ranked = []
    for i, (c, index) in enumerate(candidates):
        own = 0.6 * float(cosine[i]) + 0.4 * relevance.share(i)
        window = 0.6 * float(window_cosine[i]) + 0.4 * window_relevance.share(i)
        score = 0.5 * own + 0.5 * window
        if asked and asked <= {n.value for n in find_numbers(c.text)}:
            score += 0.05  # holds the question's own figures: the table row of "6 g", the year asked about
        if wants_number and (figures := new_figures(c.text, question, asked)):
            score += 0.1
            if kind and any(is_of_kind(n, kind) for n in figures):
                score += 0.05  # "70 years" for "how long", rather than the chapter's other numbers
        words = len(c.text.split())
        score *= min(1.0, (words + 2) / 8)  # a heading or a lone cell rarely answers
        score -= 0.01 * rank[c.n]  # between equals, the better-ranked passage
        ranked.append(RankedSentence(c, index, score))
    order = np.argsort([-r.score for r in ranked], kind="stable")
    return [ranked[i] for i in order]


def key_sentence(
    question: str, sources: Sequence[Source], embedder: Embedder, ranked: Sequence[RankedSentence] | None = None
) -> KeySentence | None:
    """The one sentence of the passages that best answers ``question``, verbatim with file and page.

    When the question asks for a figure and the best sentence holds none but leans on the one
    before it ("That's how long it took …" after "… fifty years."), both are quoted, as one
    stretch of the passage.
    """
    ranked = rank_sentences(question, sources, embedder) if ranked is None else ranked
    if not ranked:
        return None
    best = ranked[0]
    source = next(s for s in sources if s.n == best.sentence.n)
    start = best.sentence.start
    if best.index and asks_for_figure(question) and not new_figures(best.sentence.text, question):
        before = next((r.sentence for r in ranked if r.sentence.n == source.n and r.index == best.index - 1), None)
        if before is not None and new_figures(before.text, question):
            start = before.start
    text = source.text[start : best.sentence.end]
    return KeySentence(text, source.source, source.page, source.n, round(best.score, 4))


def focus_sources(
    sources: Sequence[Source], ranked: Sequence[RankedSentence], sentences: int, question: str = ""
) -> list[Source]:
    """The passages cut down to their ``sentences`` best-ranked sentences (each with the one before it).

    Sources keep their numbers, so the model's citations still point at the whole passages the
    user sees; a passage with no chosen sentence is left out. Within a passage the sentences keep
    their order, and a gap between them is marked with an ellipsis. A table row (``Header: value;
    …``) keeps only its label and the columns the question names, when it names any (``focus_row``).
    """
    chosen: dict[int, set[int]] = {}
    for r in ranked[:sentences]:
        indices = chosen.setdefault(r.sentence.n, set())
        indices.update({r.index, max(r.index - 1, 0)})
    focused = []
    for source in sources:
        if source.n not in chosen:
            continue
        parts = [p for p in passage_sentences(source) if re.search(r"\w", p.text)]
        pieces: list[str] = []
        last = None
        for i in sorted(chosen[source.n]):
            if last is not None and i != last + 1:
                pieces.append(FOCUS_GAP)
            pieces.append(focus_row(parts[i].text, question))
            last = i
        focused.append(replace(source, text=" ".join(pieces)))
    return focused


def focus_row(text: str, question: str) -> str:
    """A table row cut to its label and the cells that share a word with the question, in their
    header or their value: "Vessel class: Cruise ship; Winter rate: 655.00" for "What is the winter
    rate for a cruise ship?", so that a small model has one figure to copy, not five. Other text,
    a row none of whose cells the question names, and one whose every cell it names are left whole.

    Measured on 24 questions about the cells of a scanned fee table (two rows in the prompt,
    the best and the one before it): as many right figures (12) as whole rows, and one wrong
    figure against six. The row before stays: without it the model gave 3 right of 24."""
    cells = row_cells(text)
    if cells is None or not question:
        return text
    asked = set(_terms(question))
    named = [cell for cell in cells[1:] if asked & set(_terms(f"{cell[0]} {cell[1]}"))]
    if not named or len(named) == len(cells) - 1:
        return text
    return "; ".join(f"{header}: {value}" for header, value in [cells[0], *named])


class _TermRelevance:
    """BM25 weight of the question's terms in each text, as a share of the most it could be (0..1).

    1.0 means every term once, in a text of average length; IDF comes from the retrieved sentences,
    so a term every sentence has counts little.
    """

    def __init__(self, terms: list[str], documents: list[Counter[str]], idf: dict[str, float] | None = None) -> None:
        self.terms = terms
        self.documents = documents
        self.lengths = [sum(d.values()) for d in documents]
        self.average = sum(self.lengths) / (len(documents) or 1) or 1.0
        if idf is None:
            frequency = Counter(t for d in documents for t in set(d))
            total = len(documents)
            idf = {t: math.log(1 + (total - frequency[t] + 0.5) / (frequency[t] + 0.5)) for t in terms}
        self.idf = idf

    def share(self, i: int) -> float:
        document, length = self.documents[i], self.lengths[i]
        bm25 = sum(
            self.idf[t] * document[t] * 2.2 / (document[t] + 1.2 * (0.25 + 0.75 * length / self.average))
            for t in self.terms
            if document[t]
        )
        return min(bm25 / (sum(self.idf.values()) or 1.0), 1.0)
