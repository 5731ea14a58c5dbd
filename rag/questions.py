"""What kind of answer a question asks for: a figure ("How many…", "What is the rate…", "When…").

An answer that states no figure to such a question has not answered it, however well its
sentences match the sources: "BM25 has significantly higher performance [2]" to "What is the
top-20 accuracy of BM25?" is supported sentence by sentence and still no answer. The chat
says so above the sentence marks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal

from rag.facts import Number, extract_facts, find_numbers, is_year

_HOW = r"how\s+(?:many|much|long|old|far|big|large|high|low|often|fast|heavy|tall|wide|deep|soon)"
_WHAT_FIGURE = (
    r"(?:what|which)\s+(?:[\w-]+\s+){0,2}?(?:percentage|proportion|share|fraction|number|amount|year|date|day|month|time|age"
    r"|size|value|figure|version|temperature|speed|price|cost|dose|score)"
)
_WHEN = r"when\s+(?:did|was|were|is|are|will|does|do|has|had)|in\s+(?:what|which)\s+year|since\s+when"
_MEASURE = (
    r"rate|accuracy|percentage|percent|number|count|size|amount|price|cost|value|score|length|weight|duration"
    r"|temperature|speed|capacity|efficiency|revenue|income|profit|population|budget|fee|limit|threshold|dose"
    r"|concentration|voltage|power|frequency|resistance|age|height|depth|width|area|volume|density|salary"
    r"|margin|ratio|total|sum|distance|deadline|date|year|period|term|dimension|century"
)
_WHAT_IS_MEASURE = (
    rf"what(?:'s|\s+is|\s+was|\s+are|\s+were)?\s+(?:the\s+|its\s+|their\s+)?(?:[\w-]+\s+){{0,4}}(?:{_MEASURE})s?\b"
)
_ASKS_FOR_FIGURE = re.compile(rf"\b(?:{_HOW}|{_WHAT_FIGURE}|{_WHEN}|{_WHAT_IS_MEASURE})", re.IGNORECASE)
FIGURE_KINDS = frozenset({"number", "year", "date"})
# "Table 2" or "Section 4.1" point at where an answer might be; they are not one.
REFERENCE = re.compile(
    r"\b(?:table|tab|figure|fig|section|sec|chapter|page|p|pp|eq|equation|appendix|step|item)\.?\s*\d+(?:\.\d+)*",
    re.IGNORECASE,
)


_ASKS_DURATION = re.compile(
    r"\b(?:for\s+)?how\s+long\s+(?:does|did|do|will|would|can|could|has|have|had|should|must|may|might|is\s+it|was\s+it)\b"
    r"|\bhow\s+(?:many|much)\s+(?:more\s+)?(?:years|months|weeks|days|hours|minutes|seconds|time)\b"
    r"|\b(?:for|in)\s+how\s+long\b",
    re.IGNORECASE,
)
_ASKS_YEAR = re.compile(r"\b(?:(?:in\s+)?(?:what|which)\s+year|since\s+when|when\s+(?:did|was|were))\b", re.IGNORECASE)
_ASKS_PERCENT = re.compile(r"\b(?:what|which)\s+(?:\w+\s+){0,2}?(?:percentage|percent|share)\b", re.IGNORECASE)
DURATION_UNITS = frozenset({"ms", "s", "min", "h", "d", "wk", "mo", "y"})


def asked_figure_kind(question: str) -> str | None:
    """The kind of figure a question asks for, where its words say: "duration", "year" or "percent"."""
    if _ASKS_DURATION.search(question):
        return "duration"
    if _ASKS_YEAR.search(question):
        return "year"
    if _ASKS_PERCENT.search(question):
        return "percent"
    return None


def is_of_kind(number: Number, kind: str) -> bool:
    """Whether a number found in a text is a figure of the asked ``kind`` ("70 years" is a duration)."""
    if kind == "duration":
        return number.unit in DURATION_UNITS
    if kind == "percent":
        return number.unit == "%"
    return is_year(number)


# A section number opening a heading that runs into its first sentence: "3 Dense Passage Retriever (DPR) We …".
_SECTION_NUMBER = re.compile(r"^\s*\d{1,2}(?:\.\d{1,2})*\.?\s+(?=[A-Z])")


def new_figures(text: str, question: str, asked: set[Decimal] | None = None) -> list[Number]:
    """The numbers of ``text`` that could answer ``question``: not the question's own, not "Table 2",
    not a heading's section number. ``asked``: the question's numbers, when the caller has them."""
    asked = {n.value for n in find_numbers(question)} if asked is None else asked
    plain = REFERENCE.sub(" ", _SECTION_NUMBER.sub(" ", text))
    return [n for n in find_numbers(plain) if n.value not in asked]


def asks_for_figure(question: str) -> bool:
    """Whether the question asks for a number, an amount, a date or a year."""
    return bool(_ASKS_FOR_FIGURE.search(question))


def states_a_figure(sentences: Iterable[str], question: str) -> bool:
    """Whether any sentence states a figure, date or year that the question did not already give."""
    plain = (REFERENCE.sub(" ", s) for s in sentences)
    return any(f.kind in FIGURE_KINDS for s in plain for f in extract_facts(s, question=question))


def missing_figure_warning(question: str, sentences: Iterable[str]) -> str | None:
    """The warning for an answer that states no figure to a question asking for one; None otherwise."""
    if asks_for_figure(question) and not states_a_figure(sentences, question):
        return "The question asks for a figure and the answer gives none: check the key sentence and the sources."
    return None
