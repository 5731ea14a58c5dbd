"""Tables in a PDF's text layer, rewritten as rows that carry their column headers.

pypdf's plain extraction writes a table as one run of words ("Vessel class Berth fee ... Tall
ship 64.00 80.00"), so a chunk boundary can leave a value far from its row label and header.
pypdf's layout mode keeps each text line's horizontal positions; in it a table is a run of
lines whose cells are separated by wide gaps and sit in the same columns. Each such run is
turned into ``Header: value; ...`` lines (``rag.readers.tables``) that replace the table's words
in the plain text, so every line stands on its own in any chunk.

Only what the text layer shows can be found: a table drawn as a picture, or one whose columns
do not line up, stays as pypdf wrote it. Layout mode costs about twice the plain extraction, so
it runs only on pages whose plain text looks like it may hold a table.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from rag.readers.tables import table_lines

log = logging.getLogger(__name__)

_CELL = re.compile(r"\S+(?: {1,2}\S+)*")  # words apart by at most two spaces are one cell
_NUMBER = re.compile(r"^[-+−(]?[$£€]?\d[\d,.]*%?\)?$")
_NUMERIC_LINE = re.compile(r"(?:^|\s)[-+(]?[$£€]?\d[\d,.]*%?(?=\s|$)")
_TABLE_WORD = re.compile(r"\bTable\b|\bTABLE\b")
MIN_CELLS = 3  # a table line has at least this many cells
MIN_ROWS = 3  # and a table at least this many rows under its header


@dataclass(frozen=True)
class Cell:
    start: int
    end: int
    text: str

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


def may_hold_table(plain: str) -> bool:
    """Cheap test on the plain text: a 'Table' caption, or three lines with two numbers each."""
    if _TABLE_WORD.search(plain):
        return True
    numeric = sum(1 for line in plain.splitlines() if len(_NUMERIC_LINE.findall(line)) >= 2)
    return numeric >= 3


def find_tables(layout: str) -> list[list[list[str]]]:
    """The tables in a layout-mode page: each a list of rows of cell texts, header row first."""
    lines = [_cells(line) for line in layout.replace("\t", " ").splitlines()]
    tables, run = [], []
    for cells in lines:
        if not cells and run and run[-1]:
            run.append(cells)  # one blank line inside a table (row spacing) is allowed
        elif len(cells) >= MIN_CELLS or (run and run[-1] and _continues(cells, run)):
            run.append(cells)
        else:
            tables.append(_table(run))
            run = []
    tables.append(_table(run))
    return [table for table in tables if table]


def rewrite_tables(plain: str, layout: str) -> str:
    """``plain`` (normalised, lines joined) with each table found in ``layout`` replaced by
    self-contained row lines.

    A column of running prose beside a table (the other column of a two-column page) is left to
    the plain text. A table whose words are not found together in ``plain`` is added after the
    page text rather than risk cutting prose out.
    """
    for table in tables_in(plain, layout):
        rows = table_lines(table)
        block = "\n".join(rows)
        span = _span(plain, table)
        if span is None:
            log.debug("table words not found together in the plain text; rows added after the page")
            plain = f"{plain}\n{block}"
        else:
            start, end = span
            plain = f"{plain[:start].rstrip()}\n{block}\n{plain[end:].lstrip()}".strip()
    return plain


def tables_in(plain: str, layout: str) -> list[list[list[str]]]:
    """The tables of ``layout`` less any column of running prose found in ``plain``."""
    tables = [_without_prose(found, plain) for found in find_tables(layout)]
    return [table for table in tables if table and len(table_lines(table)) >= MIN_ROWS]


def _without_prose(table: list[list[str]], plain: str) -> list[list[str]] | None:
    """The table less its columns of running prose: long cells that follow each other in the
    plain text (compared by letters and digits only, as hyphenation and spacing differ)."""
    squashed = _squash(plain)
    keep = []
    for column in range(len(table[0])):
        cells = [row[column] for row in table if row[column]]
        pairs = list(itertools.pairwise(cells))
        running = sum(1 for first, second in pairs if _squash(first + second) in squashed)
        prose = pairs and _mean(len(cell) for cell in cells) >= 20 and running >= len(pairs) / 2
        if not prose:
            keep.append(column)
    if len(keep) < 2:
        return None
    return [[row[i] for i in keep] for row in table]


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _span(plain: str, table: list[list[str]]) -> tuple[int, int] | None:
    """Where the table's words lie in the plain text, if together there: from the header's first
    cell to the last row's last cell, no longer than the cells themselves and their spaces."""
    first = next((cell for cell in table[0] if cell), "")
    last = next((cell for cell in reversed(table[-1]) if cell), "")
    anchor = plain.find(" ".join(cell for cell in table[1] if cell))
    if not first or not last or anchor < 0:
        return None
    start = plain.rfind(first, 0, anchor + 1)
    end = plain.find(last, anchor)
    if start < 0 or end < 0:
        return None
    end += len(last)
    words = sum(len(cell) + 1 for row in table for cell in row if cell)
    return (start, end) if end - start <= 1.3 * words + 20 else None


def _cells(line: str) -> list[Cell]:
    return [Cell(m.start(), m.end(), m.group()) for m in _CELL.finditer(line)]


def _continues(cells: list[Cell], run: list[list[Cell]]) -> bool:
    """A line of one or two cells inside a table: the second line of a wrapped cell."""
    widest = max(run, key=len)
    return 0 < len(cells) < MIN_CELLS and len(widest) >= MIN_CELLS and cells[0].start > widest[0].end


def _table(run: list[list[Cell]]) -> list[list[str]] | None:
    lines = [cells for cells in run if cells]
    wide = [len(cells) for cells in lines if len(cells) >= MIN_CELLS]
    if len(wide) < MIN_ROWS + 1:
        return None
    width = max(set(wide), key=lambda n: (wide.count(n), n))  # the commonest row width
    full = [cells for cells in lines if len(cells) == width]
    columns = [
        Cell(round(_mean(c.start for c in col)), round(_mean(c.end for c in col)), "")
        for col in zip(*full, strict=True)
    ]
    if not _aligned(full, columns):
        return None
    grid = [[c.text for c in cells] if len(cells) == width else _place(cells, columns) for cells in lines]
    if any(sum(1 for row in grid if row[i]) < len(grid) / 2 for i in range(width)):
        return None  # a column that is mostly empty: code or prose with wide gaps, not a table
    header_lines = 1
    while header_lines < min(2, len(grid) - MIN_ROWS) and not _has_number(grid[header_lines]) and _has_number(grid[-1]):
        header_lines += 1
    header = [" ".join(filter(None, parts)) for parts in zip(*grid[:header_lines], strict=True)]
    rows: list[list[str]] = []
    for row in grid[header_lines:]:
        if rows and not row[0] and sum(1 for cell in row if cell) < len(row) / 2:
            rows[-1] = [" ".join(filter(None, pair)) for pair in zip(rows[-1], row, strict=True)]
        else:
            rows.append(row)
    return [header, *rows] if len(rows) >= MIN_ROWS else None


def _mean(values: Iterable[int]) -> float:
    items = list(values)
    return sum(items) / len(items)


def _place(cells: list[Cell], columns: list[Cell]) -> list[str]:
    """The cells of a shorter line (a header's second line, a wrapped cell) under the nearest columns."""
    row = [""] * len(columns)
    for cell in cells:
        nearest = min(range(len(columns)), key=lambda i: _distance(cell, columns[i]))
        row[nearest] = f"{row[nearest]} {cell.text}".strip()
    return row


def _distance(cell: Cell, column: Cell) -> float:
    if cell.start < column.end and column.start < cell.end:
        return 0.0
    return abs(cell.centre - column.centre)


def _aligned(full: list[list[Cell]], columns: list[Cell]) -> bool:
    """Most cells sit in their column (within a few characters; a centred header may not):
    wide-gapped prose or code does not line up so."""
    cells = [(cell, column) for cells in full for cell, column in zip(cells, columns, strict=True)]
    return sum(1 for cell, column in cells if _distance(cell, column) <= 6) >= 0.8 * len(cells)


def _has_number(row: list[str]) -> bool:
    return any(_NUMBER.match(cell) for cell in row if cell)
