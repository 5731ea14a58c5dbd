"""Plain text and Markdown: the whole file is one page without a number."""

from __future__ import annotations

from rag.readers.base import LoadError, ReadResult, decode_text, normalise_text
from rag.records import Page


def read_text(data: bytes) -> ReadResult:
    """One page; line breaks are kept (in Markdown and plain text they carry meaning)."""
    text = normalise_text(decode_text(data))
    if not text:
        raise LoadError("the file holds only whitespace")
    return [Page(text=text, number=None)], 1
