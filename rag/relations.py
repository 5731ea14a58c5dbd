"""Which figure goes with which subject: the pairings a source states, and answers that swap them.

A fact check that only asks "is 101 in the source?" passes "The base model uses ResNet 101"
when the source says "For base model and large model, we use ResNet 50 or ResNet 101,
respectively": both figures are there, paired the other way. A small model makes exactly
this mistake with table rows and "respectively" lists, so the source's pairings are read:

- a sentence with "respectively" pairs the n items of a list with n figures, in order;
- a table row written by the readers (``Model: base; Backbone: ResNet 50``, see
  ``rag.readers.tables``) pairs its first cell, the row label, with the figures in its other cells.

An answer sentence swaps a pairing when it states a figure of one item together with words
that name only another item of the same list or table, and none that name the figure's own.

    >>> swapped_pairing("The base model uses ResNet 101.", [source_text])
    Swap(value='101', said='base model', source_says='large model')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Protocol

from rag.facts import CITATION, COMMON_WORDS, Number, find_numbers, same_amount, word_key
from rag.sentences import split_sentences

RESPECTIVELY = re.compile(r"\brespectively\b", re.IGNORECASE)
# Between two figures of one list: a separator, then at most two words that repeat a prefix ("ResNet 50 or ResNet 101").
_VALUE_GAP = re.compile(r"\s*(?:,\s*(?:and|or)\s+|,|\s+(?:and|or|vs\.?)\s+|/|;)\s*(?:[^\W\d][\w-]*\s+){0,2}[$€£]?\s*$")
_TOKEN = re.compile(r"“[^”]{1,60}”|\"[^\"]{1,60}\"|[^\W_][\w’'-]*|,|&|/|\S")
_LIST_WORDS = {"and", "or", "&", "/", "vs", "versus"}
_SKIPPED_AFTER_SEPARATOR = {"the", "a", "an", "our", "its", "their", "his", "her"}
_ROW = re.compile(r"^[^:;\n]{1,80}: [^;\n]+(?:; [^:;\n]{1,80}: [^;\n]+)+$")
_VALUE_MARK = "\u0000"
_NOT_NAMES = COMMON_WORDS | {"were", "been", "being", "respectively", "values", "value"}
MAX_ITEM_WORDS = 3  # an item's last words: "For the quarterly revenue" names "quarterly revenue"


@dataclass(frozen=True)
class Pairing:
    """One item of a list or table and the figures a source gives for it."""

    subject: str  # as written: "large model", "Q3 2024"
    keys: frozenset[str]  # word keys that name this item and no other item of its group
    values: tuple[Number, ...]


@dataclass(frozen=True)
class Swap:
    """An answer's figure that the source gives for another item than the one the answer names."""

    value: str
    said: str
    source_says: str


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[^\W_][\w’'-]*", text) if w.lower() not in _NOT_NAMES]


def _distinguishing(subjects: Sequence[str]) -> list[frozenset[str]]:
    """Per subject, the word keys no other subject of the group has ("base" of "base model")."""
    keys = [{word_key(w) for w in _words(s)} for s in subjects]
    return [frozenset(k - set().union(*(o for j, o in enumerate(keys) if j != i))) for i, k in enumerate(keys)]


def _value_run(text: str) -> tuple[list[Number], tuple[int, int]] | None:
    """The longest run (two or more) of figures joined as a list: "50 or ResNet 101", "12%, 15% and 20%"."""
    numbers = find_numbers(text)
    best: list[Number] = []
    run: list[Number] = []
    for number in numbers:
        if run and _VALUE_GAP.match(text[run[-1].end : number.start]):
            run.append(number)
        else:
            run = [number]
        if len(run) > len(best):
            best = list(run)
    if len(best) < 2:
        return None
    return best, (best[0].start, best[-1].end)


def _subject_lists(text: str) -> list[list[str]]:
    """Coordinated lists of short phrases ("base model and large model", "A, B, and C"), in order."""
    lists: list[list[str]] = []
    items: list[str] = []  # the items of the list being read
    current: list[str] = []  # the words of the item being read
    after_separator = False

    def end_item() -> None:
        if current:
            items.append(" ".join(current[-MAX_ITEM_WORDS:]))
            current.clear()

    def end_list() -> None:
        end_item()
        if len(items) >= 2:
            lists.append(list(items))
        items.clear()

    for token in _TOKEN.findall(text):
        lowered = token.lower()
        if token[0] in '“"':
            current.append(token.strip('“”"'))
            after_separator = False
        elif token == "," or lowered in _LIST_WORDS:
            if current:
                end_item()
                after_separator = True
            elif not after_separator:  # a separator after a verb or bracket: no list here
                end_list()
        elif after_separator and not current and lowered in _SKIPPED_AFTER_SEPARATOR:
            continue
        elif token[0].isalnum() and lowered not in _NOT_NAMES:
            current.append(token)
            after_separator = False
        else:  # a verb, preposition, bracket or the figures end the item and the list
            end_list()
            after_separator = False
    end_list()
    return lists


def respectively_pairings(sentence: str) -> list[Pairing]:
    """The item-figure pairs of a sentence with "respectively"; empty when its lists do not line up."""
    if not RESPECTIVELY.search(sentence):
        return []
    text = CITATION.sub("", sentence)
    found = _value_run(text)
    if found is None:
        return []
    values, (start, end) = found
    masked = f"{text[:start]} {_VALUE_MARK} {text[end:]}"
    lists = [items for items in _subject_lists(masked) if len(items) == len(values)]
    if not lists:
        return []
    subjects = lists[0]
    return [Pairing(s, k, (v,)) for s, k, v in zip(subjects, _distinguishing(subjects), values, strict=True)]


def table_pairings(text: str) -> list[Pairing]:
    """Row label and figures of each table row in ``text`` written as ``Header: value; Header: value``."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not _ROW.match(line):
            continue
        cells = [cell.split(": ", 1)[1] for cell in line.split("; ")]
        label, rest = cells[0], "; ".join(cells[1:])
        numbers = tuple(find_numbers(rest))
        if numbers and _words(label):
            rows.append((label, numbers))
    if len(rows) < 2:
        return []
    keys = _distinguishing([label for label, _ in rows])
    return [Pairing(label, k, values) for (label, values), k in zip(rows, keys, strict=True)]


@lru_cache(maxsize=4096)
def source_pairings(text: str) -> tuple[tuple[Pairing, ...], ...]:
    """Every group of pairings a source text states: one per "respectively" sentence, one per table."""
    groups = [tuple(p) for s in split_sentences(text) if (p := respectively_pairings(s))]
    table = table_pairings(text)
    if table:
        groups.append(tuple(table))
    return tuple(groups)


class Figure(Protocol):
    """A number as ``rag.facts`` reads it: a value, an optional scale ("billion") and unit."""

    value: Decimal | None
    scale: Decimal | None
    unit: str | None
    text: str


def _same_value(a: Figure, b: Number) -> bool:
    return same_amount(a, b) and (a.unit is None or b.unit is None or a.unit == b.unit)


def swapped_pairing(sentence: str, sources: Iterable[str], numbers: Sequence[Figure] | None = None) -> Swap | None:
    """The first figure of ``sentence`` that its sources pair with another item than the one it names.

    ``numbers``: the sentence's figures to check (default: all of them); a figure that restates
    the question is usually left out by the caller.
    """
    plain = CITATION.sub("", sentence)
    said_keys = {word_key(w) for w in _words(plain)}
    figures = find_numbers(plain) if numbers is None else numbers
    for text in sources:
        for group in source_pairings(text):
            for figure in figures:
                own = [p for p in group if any(_same_value(figure, v) for v in p.values)]
                if not own or len(own) == len(group):
                    continue
                if any(p.keys & said_keys for p in own):
                    continue
                named = [p for p in group if p not in own and p.keys & said_keys]
                if named:
                    return Swap(figure.text, named[0].subject, own[0].subject)
    return None
