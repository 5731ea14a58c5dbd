"""Step 1 of ingest: read a file into normalised pages.

PDFs are read page by page with pypdf so that page numbers survive into citations;
text and Markdown files are one page without a number. Every way a file can be
unreadable raises ``LoadError`` with a message a person can act on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from pathlib import Path

from rag.records import LoadedDocument, Page

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".csv", ".log"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | PDF_SUFFIXES


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


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def source_key(path: Path) -> str:
    """The stable name a file is stored under: relative to the working folder when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def load_document(path: Path, *, source: str | None = None, max_bytes: int | None = None) -> LoadedDocument:
    """Read one file. Raises ``LoadError`` for anything that yields no usable text."""
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
    if suffix in PDF_SUFFIXES:
        pages, page_total = _read_pdf(path, data)
    else:
        pages, page_total = _read_text(data), 1
    return LoadedDocument(
        source=source or source_key(path),
        title=Path(source).name if source else path.name,
        content_hash=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        pages=pages,
        page_total=page_total,
    )


def _read_text(data: bytes) -> list[Page]:
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # UTF-16 text is full of NUL bytes: check the BOM first
    if not utf16 and b"\x00" in data[:8192]:
        raise LoadError("the file looks binary (it contains NUL bytes), not text")
    for encoding in ("utf-8-sig", "utf-16") if utf16 else ("utf-8-sig",):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("latin-1")
        if _unprintable_share(text) > 0.05:
            raise LoadError("the file is not readable text (not UTF-8 and mostly unprintable)")
    text = normalise_text(text)
    if not text:
        raise LoadError("the file holds only whitespace")
    return [Page(text=text, number=None)]


def _unprintable_share(text: str) -> float:
    bad = sum(1 for ch in text if not ch.isprintable() and ch not in "\n\t\r")
    return bad / max(len(text), 1)


def _read_pdf(path: Path, data: bytes) -> tuple[list[Page], int]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise LoadError("not a PDF file (no %PDF header); it may be corrupt or misnamed")
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
    log.debug("%s: %d of %d pages hold text", path.name, len(pages), page_total)
    return pages, page_total
