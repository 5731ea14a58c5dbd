"""Tables on OCR'd pages, written as rows that carry their column headers.

The OCR engine finds boxes of text (a line of prose, or one table cell) with their positions,
and lists them top to bottom. Written in that order, a scanned table is one cell after another,
and a value loses its row label and header: "Blind 5 1 4 34.5% … Low Vision 5 2 3 98.3%" reads
as well for either row. Here the boxes are put back in rows and columns:

- a *line* is a run of boxes side by side (each overlapping the next in height, which follows
  a slightly turned scan);
- a *table* is at least ``MIN_ROWS`` lines of ``MIN_CELLS`` or more boxes that share columns; a
  line whose boxes all sit under later columns continues the row above (a cell on two lines);
- its *header* is its first line where that line holds no figure and the rows do, plus the boxes
  stacked just above it, column by column (a header wrapped over several lines: "Ballots /
  Incomplete/ / Terminated").

Rows are written by ``rag.readers.tables.table_lines``, as every reader writes its tables, in
the table's place among the page's prose. A page without such a table reads as before.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rag.readers.base import normalise_text
from rag.readers.tables import table_lines

MIN_CELLS = 3  # a table line has at least this many boxes
MIN_ROWS = 3  # and a table at least this many rows under its header
MAX_CELL_CHARS = 30  # longer cells on average: columns of prose side by side, not a table
_FIGURE = re.compile(r"\d")
_YEAR = re.compile(r"(?:19|20)\d\d")


@dataclass(frozen=True)
class TextBox:
    """One box of text the OCR engine found, in pixels from the page's top left."""

    left: float
    top: float
    right: float
    bottom: float
    text: str

    @property
    def height(self) -> float:
        return self.bottom - self.top


@dataclass
class _Table:
    boxes: set[int]  # indices of the boxes it takes, header included
    rows: list[list[str]]  # header row first, then the rows
    has_header: bool


def page_text(boxes: Sequence[TextBox]) -> str:
    """The page's text: prose normalised with lines joined, each table as one line per row.

    Boxes stay in the engine's order; a table's rows stand where its first box stood.
    """
    tables = find_tables(boxes)
    owner = {i: t for t in tables for i in t.boxes}
    parts: list[str] = []
    prose: list[str] = []
    for i, box in enumerate(boxes):
        table = owner.get(i)
        if table is None:
            prose.append(box.text)
            continue
        if min(table.boxes) == i:
            parts += [normalise_text("\n".join(prose), join_lines=True), "\n".join(_row_lines(table))]
            prose = []
    parts.append(normalise_text("\n".join(prose), join_lines=True))
    return "\n".join(part for part in parts if part)


def find_tables(boxes: Sequence[TextBox]) -> list[_Table]:
    """The tables among the boxes (see the module's docstring)."""
    if len(boxes) < MIN_CELLS * MIN_ROWS:
        return []
    unit = statistics.median(box.height for box in boxes)
    lines = _lines(boxes)
    tables: list[_Table] = []
    taken: set[int] = set()
    start = 0
    while start < len(lines):
        table, end = _table_at(boxes, lines, start, unit, taken)
        if table is None:
            start += 1
        else:
            tables.append(table)
            taken |= table.boxes
            start = end
    return tables


def _lines(boxes: Sequence[TextBox]) -> list[list[int]]:
    """Boxes grouped into lines, each left to right, the lines top to bottom. A box joins the
    line whose last box it overlaps most in height, by at least half the lower box."""
    lines: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda k: boxes[k].left):
        box = boxes[i]
        best, best_share = None, 0.5
        for line in lines:
            last = boxes[line[-1]]
            if last.right > box.left + 0.5 * box.height:
                continue  # side by side only
            share = (min(last.bottom, box.bottom) - max(last.top, box.top)) / max(1.0, min(last.height, box.height))
            if share >= best_share:
                best, best_share = line, share
        if best is None:
            lines.append([i])
        else:
            best.append(i)
    return sorted(lines, key=lambda line: statistics.fmean(boxes[k].top for k in line))


def _overlap(box: TextBox, column: tuple[float, float]) -> float:
    """How far the box and the column overlap across the page (negative: the gap between them)."""
    return min(box.right, column[1]) - max(box.left, column[0])


def _table_at(
    boxes: Sequence[TextBox], lines: list[list[int]], start: int, unit: float, taken: set[int]
) -> tuple[_Table | None, int]:
    """The table whose first line is ``lines[start]``, if there is one, and the line after it."""
    if len(lines[start]) < MIN_CELLS or taken.intersection(lines[start]):
        return None, start + 1
    end = start
    while end < len(lines) and not taken.intersection(lines[end]):
        line = lines[end]
        if len(line) < MIN_CELLS and (end == start or boxes[line[0]].left <= boxes[lines[start][0]].right):
            break  # a short line starting under the first column: prose after the table
        end += 1
    while end > start and len(lines[end - 1]) < MIN_CELLS:
        end -= 1  # a table ends on a full row
    run = lines[start:end]
    wide = [line for line in run if len(line) >= MIN_CELLS]
    if len(wide) < MIN_ROWS:
        return None, start + 1
    counts = [len(line) for line in wide]
    width = max(set(counts), key=lambda n: (counts.count(n), n))  # the commonest row width
    full = [line for line in wide if len(line) == width]
    columns = [(min(boxes[k].left for k in col), max(boxes[k].right for k in col)) for col in zip(*full, strict=True)]
    if any(a[1] > b[0] for a, b in itertools.pairwise(columns)):
        return None, start + 1  # columns that overlap: not a grid
    grid: list[list[list[int]]] = []  # rows of cells of box indices
    for line in run:
        row: list[list[int]] = [[] for _ in columns]
        for k in line:
            fits = [c for c, column in enumerate(columns) if _overlap(boxes[k], column) > 0]
            if len(fits) != 1:
                return None, start + 1  # a box across columns, or between them: not this grid
            row[fits[0]].append(k)
        grid.append(row)
    texts = [boxes[k].text for line in run for k in line]
    if statistics.fmean(len(text) for text in texts) > MAX_CELL_CHARS:
        return None, start + 1  # columns of prose side by side
    figures = [any(_is_figure(boxes[k].text) for cell in row for k in cell) for row in grid]
    lead = figures.index(True) if any(figures) else 0  # lines of the header inside the run
    body = grid[lead:]
    if len([row for row in body if row[0]]) < MIN_ROWS:
        return None, start + 1
    used = {k for line in run for k in line}
    pitch = statistics.median(
        boxes[b[0][0]].top - boxes[a[0][0]].top for a, b in itertools.pairwise(row for row in body if row[0])
    )
    first_top = min(boxes[k].top for cell in body[0] for k in cell)
    inside = used - _boxes(grid[:lead])  # the header's lines inside the run may join the header
    header = _header(boxes, columns, first_top, max(3 * unit, 1.5 * pitch), 0.6 * unit, taken | inside)
    rows: list[list[str]] = []
    for row in body:
        cells = [" ".join(boxes[k].text for k in cell) for cell in row]
        if rows and not row[0]:  # under later columns only: the second line of the row's cells
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    header_text = [" ".join(boxes[k].text for k in cell) for cell in header]
    has_header = sum(1 for text in header_text if text) >= 2
    if not has_header and not any(figures):
        has_header, header_text, rows = True, rows[0], rows[1:]  # a table of words: its first line heads it
    return _Table(used | _boxes([header]), [header_text, *rows] if has_header else rows, has_header), end


def _boxes(grid: Sequence[Sequence[Sequence[int]]]) -> set[int]:
    return {k for row in grid for cell in row for k in cell}


def _is_figure(text: str) -> bool:
    """A cell that holds a figure; a year alone heads a column ("2023") more often than it fills one."""
    return bool(_FIGURE.search(text)) and not _YEAR.fullmatch(text.strip())


def _header(
    boxes: Sequence[TextBox],
    columns: list[tuple[float, float]],
    top: float,
    first_gap: float,
    next_gap: float,
    taken: set[int],
) -> list[list[int]]:
    """Per column, the boxes stacked above the table's first row, top to bottom.

    A box belongs to the column it overlaps most. One across three or more columns is prose (a
    caption, a paragraph) and ends every stack it stands over. The first box may stand apart from
    the row (a rule and padding, ``first_gap``); the ones above it follow closely, as the lines
    of one cell do (``next_gap``).
    """
    above = sorted(
        (k for k, box in enumerate(boxes) if k not in taken and box.bottom <= top + 0.25 * box.height),
        key=lambda k: -boxes[k].bottom,
    )
    header: list[list[int]] = []
    for c in range(len(columns)):
        chosen: list[int] = []
        edge, allowed = top, first_gap
        for k in above:
            overlaps = [_overlap(boxes[k], other) for other in columns]
            if overlaps[c] <= 0:
                continue
            if sum(1 for o in overlaps if o > 0) >= 3 or edge - boxes[k].bottom > allowed:
                break
            if max(range(len(columns)), key=lambda i: overlaps[i]) != c:
                continue  # another column's header, reaching over this one
            chosen.append(k)
            edge, allowed = boxes[k].top, next_gap
        header.append(chosen[::-1])
    return header


def _row_lines(table: _Table) -> list[str]:
    if table.has_header:
        return table_lines(table.rows)
    return ["; ".join(cell for cell in row if cell) for row in table.rows]
