"""Plain text and Markdown: the whole file is one page without a number."""

from __future__ import annotations

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult, decode_text, normalise_text
from rag.records import Page


def read_text(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """One page; line breaks are kept (in Markdown and plain text they carry meaning)."""
    text = normalise_text(decode_text(data))
    if not text:
        raise LoadError("the file holds only whitespace")
    return ReadResult([Page(text=text, number=None)], 1)
