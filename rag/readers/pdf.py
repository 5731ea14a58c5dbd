"""PDFs page by page with pypdf, so that page numbers survive into citations; scans through OCR.

pypdf reads every page's text layer. A page is OCR'd (``rag.ocr``) when that layer is missing
or too small for the ink on the page: a court order scanned to images with a real docket line
on top has 80 characters of text over a page full of ink, and must not be stored as the docket
line. Born-digital pages measured 95 (Hangul) to 435 (a paper in 10 pt) characters per square
inch of ink; a docket line over a scanned page has about 6. ``RAG_OCR`` (``ReadOptions.ocr``)
chooses: ``auto`` as above, ``force`` every page with ink, ``off`` none (the pages that needed
it are reported as unread).

Tables in the text layer are written row by row with their column headers (``pdf_tables``).
``read_page`` reads one page of an open PDF, so that a caller may read page ranges on its own.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag.readers.base import NO_OPTIONS, LoadError, OcrMode, ReadOptions, ReadResult, normalise_text
from rag.readers.pdf_tables import may_hold_table, rewrite_tables
from rag.readers.sniff import looks_like
from rag.records import Page, page_ranges

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader

    from rag.ocr import PageRenderer

log = logging.getLogger(__name__)

CHARS_PER_INK_SQ_IN = 30.0  # below this many characters of text layer per square inch of ink: a scan
MIN_INK_SQ_IN = 0.3  # less ink than this is a blank page (scanner specks, a page number)
MAX_INK_SHARE = 0.5  # a page is at most this dark: enough text skips the ink measurement


@dataclass(frozen=True)
class PageText:
    """One page's text and where it came from."""

    text: str
    ocr: bool = False  # the text was read by OCR
    unread: bool = False  # the page holds ink its text layer does not cover, and OCR is off


def open_pdf(data: bytes) -> PdfReader:
    """A pypdf reader on ``data``, decrypted where the password is empty; ``LoadError`` otherwise."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        seen = looks_like(data)
        hint = f" (it looks like {seen})" if seen else ""
        raise LoadError(f"not a PDF file (no %PDF header); it may be corrupt or misnamed{hint}")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Copy-protected PDFs have an empty user password and open normally.
            try:
                opened = reader.decrypt("")
            except Exception as exc:  # pypdf raises several types for unsupported ciphers
                raise LoadError(f"the PDF is encrypted and cannot be opened ({exc})") from exc
            if not opened:
                raise LoadError("the PDF is encrypted with a password; remove the password and ingest it again")
        if len(reader.pages) == 0:
            raise LoadError("the PDF has no pages")
    except LoadError:
        raise
    except FileNotDecryptedError as exc:
        raise LoadError("the PDF is encrypted with a password; remove the password and ingest it again") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise LoadError(f"the PDF is corrupt or truncated and could not be read ({exc})") from exc
    return reader


def read_page(
    reader: PdfReader, index: int, *, ocr: OcrMode = "auto", renderer: PageRenderer | None = None
) -> PageText:
    """The text of page ``index`` (from 0): its text layer, or OCR where the layer falls short.

    Without a ``renderer`` only the text layer is read.
    """
    page = reader.pages[index]
    raw = page.extract_text() or ""
    layer = normalise_text(raw, join_lines=True)
    if renderer is None or not _needs_ocr(layer, renderer, index, ocr):
        return PageText(_with_tables(page, raw, layer))
    if ocr == "off":
        return PageText(_with_tables(page, raw, layer), unread=True)
    text = renderer.recognise(index)
    # A page OCR'd for ink that was a picture, not text, keeps its exact text layer.
    if ocr == "auto" and _letters(text) <= 2 * _letters(layer):
        return PageText(_with_tables(page, raw, layer))
    return PageText(text, ocr=True) if text else PageText(layer)


def _with_tables(page: PageObject, raw: str, layer: str) -> str:
    """The layer with its tables written row by row (``pdf_tables``), where the page may hold one."""
    if not layer or not may_hold_table(raw):
        return layer
    try:
        layout = page.extract_text(extraction_mode="layout")
    except Exception as exc:  # layout mode fails on some pages plain mode reads: keep the plain text
        log.debug("layout extraction failed, tables left as plain text: %s", exc)
        return layer
    return rewrite_tables(layer, layout)


def _needs_ocr(layer: str, renderer: PageRenderer, index: int, ocr: OcrMode) -> bool:
    letters = _letters(layer)
    if ocr != "force" and letters >= CHARS_PER_INK_SQ_IN * MAX_INK_SHARE * renderer.area_sq_in(index):
        return False  # enough text for the darkest page: no need to look
    ink = renderer.ink(index)
    if ink < MIN_INK_SQ_IN:
        return False
    return ocr == "force" or letters < CHARS_PER_INK_SQ_IN * ink


def _letters(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def read_pdf(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """Pages with text keep their numbers; blank pages count in the total but yield no page."""
    from pypdf.errors import PdfReadError

    reader = open_pdf(data)
    page_total = len(reader.pages)
    renderer = _renderer(data)
    pages, ocr_pages, unread = [], [], []
    try:
        for index in range(page_total):
            page = read_page(reader, index, ocr=options.ocr, renderer=renderer)
            number = index + 1
            if page.text:
                pages.append(Page(text=page.text, number=number))
            if page.ocr:
                ocr_pages.append(number)
            if page.unread:
                unread.append(number)
            options.on_page(number, page_total)
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise LoadError(f"the PDF is corrupt or truncated and could not be read ({exc})") from exc
    finally:
        if renderer is not None:
            renderer.close()
    if not pages:
        raise LoadError(_no_text_message(page_total, unread, options.ocr, rendered=renderer is not None))
    log.debug("%d of %d pages hold text, %d by OCR", len(pages), page_total, len(ocr_pages))
    return ReadResult(pages, page_total, tuple(ocr_pages), tuple(unread))


def _renderer(data: bytes) -> PageRenderer | None:
    """pypdfium2's view of the same bytes; None (text layer only) where it cannot open them."""
    from rag.ocr import PageRenderer

    try:
        return PageRenderer(data)
    except Exception as exc:  # pypdfium2 raises PdfiumError (a RuntimeError) or OSError
        log.warning("cannot render the PDF's pages, reading its text layer only: %s", exc)
        return None


def _no_text_message(page_total: int, unread: list[int], ocr: OcrMode, *, rendered: bool) -> str:
    if ocr == "off" and unread:
        return (
            f"no text could be extracted from any of its {page_total} pages: {page_ranges(unread, 'page')} "
            f"{'holds' if len(unread) == 1 else 'hold'} ink but no text layer (a scan?); OCR is off "
            "(RAG_OCR=off): set RAG_OCR=auto to read them"
        )
    if not rendered:
        return (
            f"no text could be extracted from any of its {page_total} pages, and they could not be "
            "rendered for OCR (the PDF may be damaged)"
        )
    return f"no text could be extracted from any of its {page_total} pages, OCR included: they look blank"
