"""Which figure goes with which subject: the pairings a source states, and answers that swap them.

A fact check that only asks "is 101 in the source?" passes "The base model uses ResNet 101"
when the source says "For base model and large model, we use ResNet 50 or ResNet 101,
respectively": both figures are there, paired the other way. A small model makes exactly
this mistake with table rows and "respectively" lists, so the source's pairings are read:

- a sentence with "respectively" pairs the n items of a list with n figures, in order;
- a table row written by the readers (``Model: base; Backbone: ResNet 50``, see
  ``rag.readers.tables``) pairs its first cell, the row label, with the figures in its other cells,
  and each figure with its column's header;
- a sentence with "respectively" and two lists of names of the same length ("Alice and Bob lead
  the Paris and Rome offices, respectively") pairs the names of the first list with those of the second.

An answer sentence swaps a pairing when it states a figure (or name) of one item together with
words that name only another item of the same list or table, and none that name the figure's own.
It swaps a column when it names a row, a figure of that row and, next to the figure, the header
of another column ("the base model's AP is 50" where 50 is its backbone), and neither that
column's own figure nor anything of the figure's own cell. A sentence with a negation is not
checked ("Alice does not lead the Rome office" is true), nor is a pairing that another sentence
of the cited sources states too ("In 2024 Alice moved to Rome"), nor a table row named by a word
of any of its cells ("DPR" in the row ``Training: Single; Model: DPR``).

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

from rag.facts import CITATION, COMMON_WORDS, NEGATION, Number, find_numbers, same_amount, word_key
from rag.readers.tables import ROW_LINE, row_cells
from rag.sentences import split_sentences

RESPECTIVELY = re.compile(r"\brespectively\b", re.IGNORECASE)
# Between two figures of one list: a separator, then at most two words that repeat a prefix ("ResNet 50 or ResNet 101").
_VALUE_GAP = re.compile(r"\s*(?:,\s*(?:and|or)\s+|,|\s+(?:and|or|vs\.?)\s+|/|;)\s*(?:[^\W\d][\w-]*\s+){0,2}[$€£]?\s*$")
_TOKEN = re.compile(r"“[^”]{1,60}”|\"[^\"]{1,60}\"|[^\W_][\w’'-]*|,|&|/|\S")
_LIST_WORDS = {"and", "or", "&", "/", "vs", "versus"}
_SKIPPED_AFTER_SEPARATOR = {"the", "a", "an", "our", "its", "their", "his", "her"}
_VALUE_MARK = "\u0000"
_NOT_NAMES = COMMON_WORDS | {"were", "been", "being", "respectively", "values", "value"}
MAX_ITEM_WORDS = 3  # an item's last words: "For the quarterly revenue" names "quarterly revenue"
# A header names a figure's column only this close to it, in the same clause: "the base model's AP is 50".
NEAR_BEFORE, NEAR_AFTER = 6, 3
_CLAUSE_TOKEN = re.compile(r"[^\W_][\w’'.-]*[^\W_]|[^\W_]|[,;:()\[\]]")
_CLAUSE_BREAKS = frozenset(
    ", ; : ( ) [ ] and but or while whereas which who with than against versus vs from to compared".split()  # noqa: SIM905
)
_NAME = re.compile(r"[^\W\d_]*[A-Z][\w’'-]*")  # capitalised or with a capital inside: "Paris", "iPhone", "ResNet"


@dataclass(frozen=True)
class Pairing:
    """One item of a list or table and the figures a source gives for it."""

    subject: str  # as written: "large model", "Q3 2024"
    keys: frozenset[str]  # word keys that name this item and no other item of its group
    values: tuple[Number, ...]
    # a table row's words, in any cell, that not every row has: "DPR" of "Training: Single; Model: DPR"
    words: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Cell:
    """One cell of a table row other than its label, and what names its column."""

    header: str  # as written: "Box mAP", "2023"
    keys: frozenset[str]  # header word keys no other column of the row has
    words: frozenset[str]  # word keys of the cell's own text: "resnet" of "ResNet 50"
    values: tuple[Number, ...]


@dataclass(frozen=True)
class Row:
    """A table row written as ``Header: value; Header: value``: its label and its other cells."""

    label: str
    keys: frozenset[str]  # word keys that name this row and no other row of its text
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class NamePairing:
    """One item of a "respectively" sentence paired with a name rather than a figure."""

    subject: str  # "Alice"
    keys: frozenset[str]  # word keys that name this item and no other of its list
    value: str  # "Paris"
    value_keys: frozenset[str]  # every word key of the name: all must be in a sentence that states it


@dataclass(frozen=True)
class Swap:
    """An answer's figure that the source gives for another item than the one the answer names."""

    value: str
    said: str
    source_says: str


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[^\W_][\w’'-]*", text) if w.lower() not in _NOT_NAMES]


def _header_keys(header: str) -> frozenset[str]:
    return frozenset(word_key(w) for w in _words(header))


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
        if (row := row_cells(line)) is None:
            continue
        cells = [value for _, value in row]
        label, rest = cells[0], "; ".join(cells[1:])
        numbers = tuple(find_numbers(rest))
        if numbers and _words(label):
            words = {word_key(w) for cell in cells for w in _words(cell) if not w[0].isdigit()}
            rows.append((label, numbers, words))
    if len(rows) < 2:
        return []
    keys = _distinguishing([label for label, _, _ in rows])
    shared = set.intersection(*(words for _, _, words in rows))
    return [
        Pairing(label, k, values, frozenset(words - shared))
        for (label, values, words), k in zip(rows, keys, strict=True)
    ]


def _cell_words(value: str, numbers: Sequence[Number]) -> frozenset[str]:
    """Keys of a cell's words outside its figures and their units: "resnet" of "ResNet 50", none of "32 minutes"."""
    for number in reversed(numbers):
        value = value[: number.start] + " " + value[number.end :]
    return frozenset(word_key(w) for w in _words(value) if not w[0].isdigit())


def table_rows(text: str) -> list[Row]:
    """Each table row of ``text`` with a named label, its cells and the header words that tell them apart.

    A lone row is named by all its label's words; rows are told apart by the words only one has.
    """
    found = [(row[0][1], row[1:]) for line in text.splitlines() if (row := row_cells(line)) and _words(row[0][1])]
    if len(found) == 1:
        row_keys = [frozenset(word_key(w) for w in _words(found[0][0]))]
    else:
        row_keys = _distinguishing([label for label, _ in found])
    rows = []
    for (label, cells), keys in zip(found, row_keys, strict=True):
        header_keys = _distinguishing([header for header, _ in cells])
        built = tuple(
            Cell(header, k, _cell_words(value, numbers), tuple(numbers))
            for (header, value), k in zip(cells, header_keys, strict=True)
            if (numbers := find_numbers(value))
        )
        if keys and built:
            rows.append(Row(label, keys, built))
    return rows


def _name_lists(text: str) -> list[list[str]]:
    """Coordinated lists of names or quoted terms ("Alice and Bob", "Paris, Rome and Oslo"), in order.

    A list whose last "and" or "or" is followed by something else than a name is no name list
    ("Alice and the team"); a comma after the last name only ends it ("Paris and Rome, respectively").
    """
    lists: list[list[str]] = []
    items: list[str] = []
    current: list[str] = []
    separator = ""  # the separator read since the last name, if any

    def end_list() -> None:
        if current:
            items.append(" ".join(current))
            current.clear()
        if len(items) >= 2 and separator in ("", ","):
            lists.append(list(items))
        items.clear()

    for token in _TOKEN.findall(text):
        lowered = token.lower()
        quoted = token[0] in '“"'
        if quoted or (_NAME.fullmatch(token) and lowered not in _NOT_NAMES):
            if current and quoted:  # a quoted term stands alone
                end_list()
            current.append(token.strip('“”"'))
            separator = ""
        elif current and (token == "," or lowered in _LIST_WORDS):
            items.append(" ".join(current))
            current.clear()
            separator = lowered
        elif separator and (token == "," or lowered in _LIST_WORDS or lowered in _SKIPPED_AFTER_SEPARATOR):
            separator = separator if token == "," else lowered  # ", and", ", the"
        else:
            end_list()
            separator = ""
    end_list()
    return lists


def name_pairings(sentence: str) -> list[NamePairing]:
    """The name-name pairs of a "respectively" sentence with exactly two name lists of one length.

    Empty when the sentence pairs figures (``respectively_pairings``), when the lists do not line
    up, or when there are more lists of that length: then which goes with which is a guess.
    """
    if not RESPECTIVELY.search(sentence) or respectively_pairings(sentence):
        return []
    text = CITATION.sub("", sentence)
    lists = _name_lists(text)
    lengths = [len(items) for items in lists]
    same = [items for items in lists if lengths.count(len(items)) == 2]
    if len(same) != 2 or len(lists) > 2:
        return []
    subjects, values = same
    value_keys = [frozenset(word_key(w) for w in _words(v)) for v in values]
    if not all(value_keys) or len(set(value_keys)) < len(value_keys):
        return []
    subject_keys = _distinguishing(subjects)
    if not all(subject_keys):
        return []
    return [NamePairing(*four) for four in zip(subjects, subject_keys, values, value_keys, strict=True)]


@lru_cache(maxsize=4096)
def source_rows(text: str) -> tuple[Row, ...]:
    return tuple(table_rows(text))


@lru_cache(maxsize=4096)
def source_name_pairings(text: str) -> tuple[tuple[NamePairing, ...], ...]:
    """Every name-pairing group a source text states: one per "respectively" sentence of names."""
    if not RESPECTIVELY.search(text):
        return ()
    return tuple(tuple(p) for s in split_sentences(text) if (p := name_pairings(s)))


@dataclass(frozen=True)
class Statement:
    """A sentence of a source that is neither a table row nor a pairing of names: what else it says."""

    keys: frozenset[str]
    numbers: tuple[Number, ...]


@lru_cache(maxsize=4096)
def source_statements(text: str) -> tuple[Statement, ...]:
    """The other sentences of a source, which may state a pairing the table or list does not."""
    prose = "\n".join(line for line in text.splitlines() if not ROW_LINE.match(line.strip()))
    return tuple(
        Statement(frozenset(word_key(w) for w in _words(s)), tuple(find_numbers(s)))
        for s in split_sentences(prose)
        if not respectively_pairings(s) and not name_pairings(s)
    )


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


def _locate(figure: Figure, found: Sequence[Number]) -> Number | None:
    """The figure's place in the sentence: the number written the same way, else of the same amount."""
    same_text = [n for n in found if n.text == figure.text]
    return (same_text or [n for n in found if _same_value(figure, n)] or [None])[0]


def _near_keys(text: str, number: Number) -> set[str]:
    """Word keys in ``number``'s clause, a few words either side of it ("AP" of "the AP is 50")."""
    before = _CLAUSE_TOKEN.findall(text[: number.start])
    after = _CLAUSE_TOKEN.findall(text[number.end :])
    near: list[str] = []
    for tokens in (reversed(before[-NEAR_BEFORE:]), after[:NEAR_AFTER]):
        for token in tokens:
            if token.lower() in _CLAUSE_BREAKS:
                break
            near.append(token)
    return {word_key(w) for w in near if w.lower() not in _NOT_NAMES}


def _list_swap(
    figures: Sequence[Figure], said_keys: set[str], sources: Sequence[str], asked_keys: set[str]
) -> Swap | None:
    """A figure of one "respectively" item or table row stated with words that name another.

    A sentence that names no item of the list or table speaks of the one the question names, if
    it names exactly one ("The pilotage fee is 120.00" in an answer about the passenger ferry).
    Not when a word of any cell of the figure's own row is there too ("DPR", whose row is labelled
    "Single"), nor when another sentence of the sources puts the figure with the other item.
    """
    for text in sources:
        for group in source_pairings(text):
            asked = [p for p in group if p.keys & asked_keys]
            named_here = any(p.keys & said_keys for p in group)
            context = said_keys if named_here or len(asked) != 1 else said_keys | asked[0].keys
            for figure in figures:
                own = [p for p in group if any(_same_value(figure, v) for v in p.values)]
                if not own or len(own) == len(group):
                    continue
                if any((p.keys | p.words) & context for p in own):
                    continue
                named = [p for p in group if p not in own and p.keys & context]
                if named and not _stated_elsewhere(sources, named[0].keys, figure, frozenset()):
                    return Swap(figure.text, named[0].subject, own[0].subject)
    return None


def _stated_elsewhere(
    sources: Sequence[str], keys: frozenset[str], figure: Figure | None, name: frozenset[str]
) -> bool:
    """Whether another sentence of the sources has the named item's words with the figure or name."""
    return any(
        keys & st.keys and name <= st.keys and (figure is None or any(_same_value(figure, n) for n in st.numbers))
        for text in sources
        for st in source_statements(text)
    )


def _column_swap(plain: str, figures: Sequence[Figure], said_keys: set[str], sources: Sequence[str]) -> Swap | None:
    """A figure of a named row stated with another column's header next to it, in every named row."""
    found = find_numbers(plain)
    for figure in figures:
        number = _locate(figure, found)
        if number is None:
            continue
        near = _near_keys(plain, number)
        for text in sources:
            rows = [r for r in source_rows(text) if r.keys & said_keys]
            swaps = []
            for row in rows:
                own = [c for c in row.cells if any(_same_value(figure, v) for v in c.values)]
                if not own:
                    continue
                if any((c.keys | c.words) & said_keys for c in own):
                    swaps.clear()
                    break
                named = [
                    c
                    for c in row.cells
                    if c not in own and c.keys & near and not any(_same_value(n, v) for n in found for v in c.values)
                ]
                if (
                    not named
                    or (_header_keys(own[0].header) - _header_keys(named[0].header)) & said_keys
                    or _stated_elsewhere(sources, named[0].keys, figure, frozenset())
                ):
                    swaps.clear()  # "took 1199 seconds to complete" names 1199's own column too
                    break
                swaps.append(Swap(figure.text, named[0].header, own[0].header))
            if swaps:
                return swaps[0]
    return None


def _name_swap(said_keys: set[str], sources: Sequence[str]) -> Swap | None:
    """A name of one "respectively" item stated with a name of another, and no other sentence says so."""
    for text in sources:
        for group in source_name_pairings(text):
            for pairing in group:
                if not pairing.value_keys <= said_keys or pairing.keys & said_keys:
                    continue
                named = [p for p in group if p is not pairing and p.keys & said_keys]
                if not named or any(p.value_keys <= said_keys for p in named):  # its own name is there too
                    continue
                if _stated_elsewhere(sources, named[0].keys, None, pairing.value_keys):
                    continue
                return Swap(pairing.value, named[0].subject, pairing.subject)
    return None


def swapped_pairing(
    sentence: str, sources: Iterable[str], numbers: Sequence[Figure] | None = None, question: str = ""
) -> Swap | None:
    """The first figure or name of ``sentence`` that its sources pair with another item than the one it names.

    ``numbers``: the sentence's figures to check (default: all of them); a figure that restates
    the question is usually left out by the caller. Names are checked whatever ``numbers`` holds.
    ``question``: the item it names stands for a sentence of the answer that names none.
    """
    plain = CITATION.sub("", sentence)
    if NEGATION.search(plain):
        return None
    texts = list(sources)
    said_keys = {word_key(w) for w in _words(plain)}
    figures = find_numbers(plain) if numbers is None else numbers
    return (
        _list_swap(figures, said_keys, texts, {word_key(w) for w in _words(question)})
        or _column_swap(plain, figures, said_keys, texts)
        or _name_swap(said_keys, texts)
    )
