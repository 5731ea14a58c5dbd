"""PDFs page by page with pypdf, so that page numbers survive into citations."""

from __future__ import annotations

import io
import logging

from rag.readers.base import LoadError, ReadResult, normalise_text
from rag.readers.sniff import looks_like
from rag.records import Page

log = logging.getLogger(__name__)


def read_pdf(data: bytes) -> ReadResult:
    """Pages with text keep their numbers; blank pages count in the total but yield no page."""
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
        pages = []
        for number, page in enumerate(reader.pages, start=1):
            text = normalise_text(page.extract_text() or "", join_lines=True)
            if text:
                pages.append(Page(text=text, number=number))
        page_total = len(reader.pages)
    except LoadError:
        raise
    except FileNotDecryptedError as exc:
        raise LoadError("the PDF is encrypted with a password; remove the password and ingest it again") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise LoadError(f"the PDF is corrupt or truncated and could not be read ({exc})") from exc
    if page_total == 0:
        raise LoadError("the PDF has no pages")
    if not pages:
        raise LoadError(
            f"no text could be extracted from any of its {page_total} pages: it is probably a scan "
            "without a text layer; OCR is not included, run it through an OCR tool first"
        )
    log.debug("%d of %d pages hold text", len(pages), page_total)
    return pages, page_total
