"""What every reader shares: the error type, text normalisation and decoding of text bytes."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from rag.records import Page

OcrMode = Literal["auto", "off", "force"]


@dataclass(frozen=True)
class ReadOptions:
    """What a reader may need beyond the bytes: the OCR mode and a per-page progress hook."""

    ocr: OcrMode = "auto"
    on_page: Callable[[int, int], None] = lambda done, total: None  # pages read so far, of all


@dataclass(frozen=True)
class ReadResult:
    """What a reader returns: the pages that hold text, all pages of the file (blank ones too),
    the numbers of pages read by OCR, and of pages with ink but no text left unread (OCR off)."""

    pages: list[Page]
    page_total: int
    ocr_pages: tuple[int, ...] = field(default=())
    unread_pages: tuple[int, ...] = field(default=())


NO_OPTIONS = ReadOptions()


class LoadError(Exception):
    """A file that cannot be ingested, with the reason in words."""


_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
_SOFT_BREAK = re.compile(r"(?<=\S)\n(?=\S)")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalise_text(text: str, *, join_lines: bool = False) -> str:
    """Undo layout artefacts: hyphenated line breaks, ligatures, stray whitespace.

    ``join_lines`` turns single line breaks into spaces (PDF lines are layout, not meaning).
    """
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    if join_lines:
        text = _SOFT_BREAK.sub(" ", text)
    return text.strip()


def looks_binary(data: bytes) -> bool:
    """NUL bytes near the start mean a binary file (UTF-16 text has them too: its BOM says so)."""
    return data[:2] not in (b"\xff\xfe", b"\xfe\xff") and b"\x00" in data[:8192]


def decode_text(data: bytes) -> str:
    """Text bytes to a string: UTF-8 (with or without BOM), UTF-16 with a BOM, else Latin-1.

    Raises ``LoadError`` for binary data or bytes that are mostly unprintable in every encoding.
    """
    if looks_binary(data):
        raise LoadError("the file looks binary (it contains NUL bytes), not text")
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
    for encoding in ("utf-8-sig", "utf-16") if utf16 else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    text = data.decode("latin-1")
    if _unprintable_share(text) > 0.05:
        raise LoadError("the file is not readable text (not UTF-8 and mostly unprintable)")
    return text


def _unprintable_share(text: str) -> float:
    bad = sum(1 for ch in text if not ch.isprintable() and ch not in "\n\t\r")
    return bad / max(len(text), 1)
