"""Web pages saved as HTML: the main text only, with trafilatura.

Navigation, sidebars, footers, scripts and styles are dropped; the page title becomes a
heading line, and tables are kept with each row written with its column headers. A page is
one page without a number, like a text file.
"""

from __future__ import annotations

import codecs
import contextlib
import re

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult, looks_binary, normalise_text
from rag.readers.sniff import looks_like
from rag.readers.tables import table_lines
from rag.records import Page

_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def read_html(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """The page title and main text (Markdown headings and lists), one page."""
    seen = looks_like(data)
    if seen is not None and not seen.startswith("an HTML page"):
        raise LoadError(f"not a web page (.html): it looks like {seen}")
    if looks_binary(data):
        raise LoadError("not a web page (.html): the file looks binary (it contains NUL bytes), not HTML")
    import trafilatura
    from trafilatura.metadata import extract_metadata

    html = decode_html(data)
    markdown = trafilatura.extract(
        html, output_format="markdown", include_tables=True, include_comments=False, include_images=False
    )
    text = normalise_text(_rows_with_headers(markdown or ""))
    if not text:
        raise LoadError("the web page has no main text to extract (only markup, navigation or scripts)")
    title = normalise_text(extract_metadata(html).title or "")
    if title and not text.lstrip("# ").startswith(title):
        text = f"# {title}\n\n{text}"
    return ReadResult([Page(text=text, number=None)], 1)


def decode_html(data: bytes) -> str:
    """UTF-8 or a BOM first, then the charset the page declares, then Windows-1252 (what browsers assume)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    declared = _CHARSET.search(data[:4096])
    encoding = "cp1252"
    if declared:
        with contextlib.suppress(LookupError, UnicodeDecodeError):  # an unknown name: keep the default
            encoding = codecs.lookup(declared[1].decode("ascii")).name
    return data.decode(encoding, errors="replace")


def _rows_with_headers(markdown: str) -> str:
    """Markdown tables (``| a | b |`` lines under a ``|---|`` line) to self-contained row lines."""
    lines = markdown.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[i + 1].strip()):
            end = i + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            rows = [_cells(line) for line in [lines[i], *lines[i + 2 : end]]]
            out.extend(table_lines(rows))
            i = end
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
