"""Tables as lines that stand on their own: each row is written with its column headers.

A chunk boundary can fall between any two rows, and a question about one cell is matched
against one chunk, so a row must carry its own meaning: ``Name: Ada; Born: 1815`` rather than
``Ada 1815`` under a header row that went into another chunk.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

_WHITESPACE = re.compile(r"\s+")
# A line ``table_lines`` wrote: ``Header: value; Header: value`` (two cells or more).
ROW_LINE = re.compile(r"^[^:;\n]{1,80}: [^;\n]+(?:; [^:;\n]{1,80}: [^;\n]+)+$")


def cell_text(value: object) -> str:
    """One cell as text: integral floats without ``.0``, dates without a midnight time, on one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds" if value.second else "minutes")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return _WHITESPACE.sub(" ", str(value)).strip()


def table_lines(rows: Iterable[Sequence[object]]) -> list[str]:
    """Rows of cell values to self-contained lines, one per row.

    The header row is the first row with two or more values; single-value rows before it
    (a title above the table) are written as they are. Empty rows and empty cells are left
    out; a cell under an empty header is written alone (the row label of a matrix).
    """
    cleaned = [[cell_text(value) for value in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    lines: list[str] = []
    start = next((i for i, row in enumerate(cleaned) if sum(1 for cell in row if cell) >= 2), None)
    if start is None or start == len(cleaned) - 1:  # no table, or only a header row: plain lines
        return ["; ".join(cell for cell in row if cell) for row in cleaned]
    lines.extend(next(cell for cell in row if cell) for row in cleaned[:start])
    headers = cleaned[start]
    for row in cleaned[start + 1 :]:
        cells = []
        for column, value in enumerate(row):
            if not value:
                continue
            header = headers[column] if column < len(headers) else ""
            cells.append(f"{header}: {value}" if header and header != value else value)
        lines.append("; ".join(cells))
    return lines


def row_cells(line: str) -> list[tuple[str, str]] | None:
    """The ``(header, value)`` cells of a line ``table_lines`` wrote, label first; None for other lines."""
    line = line.strip()
    if not ROW_LINE.match(line):
        return None
    return [(header, value) for header, _, value in (cell.partition(": ") for cell in line.split("; "))]
