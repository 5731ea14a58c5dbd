"""Step 1 of ingest: read a file into normalised pages.

``load_document`` checks the file and hands its bytes to the reader for its suffix
(``rag.readers``): PDFs page by page so that page numbers survive into citations (scanned
pages through OCR), slides and sheets one page each, text, Markdown, CSV, Word, web pages and
images as one page without a number (a multi-page TIFF a page per frame).
Every way a file can be unreadable raises ``LoadError`` with a message a person can act on.

Legacy binary Office formats (.doc, .xls, .ppt) are not read: they stay unsupported types.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult, normalise_text
from rag.readers.image import read_image
from rag.readers.office import read_docx, read_pptx
from rag.readers.pdf import read_pdf
from rag.readers.spreadsheet import read_csv, read_xlsx
from rag.readers.text import read_text
from rag.readers.web import read_html
from rag.records import LoadedDocument

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LoadError",
    "is_supported",
    "load_document",
    "normalise_text",
    "source_key",
]

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".log"}
WEB_SUFFIXES = {".html", ".htm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}

READERS: dict[str, Callable[[bytes, ReadOptions], ReadResult]] = {
    **dict.fromkeys(TEXT_SUFFIXES, read_text),
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".pptx": read_pptx,
    ".xlsx": read_xlsx,
    ".csv": read_csv,
    **dict.fromkeys(WEB_SUFFIXES, read_html),
    **dict.fromkeys(IMAGE_SUFFIXES, read_image),
}
SUPPORTED_SUFFIXES = set(READERS)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def source_key(path: Path) -> str:
    """The stable name a file is stored under: relative to the working folder when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def load_document(
    path: Path, *, source: str | None = None, max_bytes: int | None = None, options: ReadOptions = NO_OPTIONS
) -> LoadedDocument:
    """Read one file. Raises ``LoadError`` for anything that yields no usable text.

    ``options`` carry the OCR mode and a per-page progress hook to the reader."""
    if not path.exists():
        raise LoadError("file not found")
    if not path.is_file():
        raise LoadError("not a regular file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise LoadError(f"unsupported file type '{suffix or '(none)'}'; supported: {kinds}")
    data = path.read_bytes()
    if not data:
        raise LoadError("the file is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise LoadError(f"the file is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    read = READERS[suffix](data, options)
    log.debug("%s: %d of %d pages hold text", path.name, len(read.pages), read.page_total)
    return LoadedDocument(
        source=source or source_key(path),
        title=Path(source).name if source else path.name,
        content_hash=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        pages=read.pages,
        page_total=read.page_total,
        ocr_pages=read.ocr_pages,
        unread_pages=read.unread_pages,
    )
