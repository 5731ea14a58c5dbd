"""What a file's bytes really are, so that a misnamed, locked or legacy file gets a message
that says so instead of a parser's stack trace.

Office files since 2007 (OOXML: .docx, .pptx, .xlsx) are ZIP archives with a known main part.
A password-protected one is not a ZIP at all: Office wraps the encrypted package in an OLE
compound file (the container of the legacy .doc/.xls/.ppt formats) with a stream named
``EncryptedPackage``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from rag.readers.base import LoadError

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class OfficeKind:
    """One OOXML format: its names in messages and the part every such file has."""

    suffix: str
    name: str  # "a Word document"
    noun: str  # "document", in "the document is encrypted"
    main_part: str


DOCX = OfficeKind(".docx", "a Word document", "document", "word/document.xml")
PPTX = OfficeKind(".pptx", "a PowerPoint presentation", "presentation", "ppt/presentation.xml")
XLSX = OfficeKind(".xlsx", "an Excel workbook", "workbook", "xl/workbook.xml")
OFFICE_KINDS = (DOCX, PPTX, XLSX)

# Stream names (UTF-16 in the OLE directory) that identify the legacy binary formats.
_LEGACY = (
    ("WordDocument", "a legacy Word 97-2003 document (.doc)"),
    ("Workbook", "a legacy Excel 97-2003 workbook (.xls)"),
    ("Book", "a legacy Excel 5 workbook (.xls)"),
    ("PowerPoint Document", "a legacy PowerPoint 97-2003 presentation (.ppt)"),
)
_ODF = {
    "application/vnd.oasis.opendocument.text": "an OpenDocument text (.odt)",
    "application/vnd.oasis.opendocument.spreadsheet": "an OpenDocument spreadsheet (.ods)",
    "application/vnd.oasis.opendocument.presentation": "an OpenDocument presentation (.odp)",
}
_MAGIC = (
    (b"%PDF", "a PDF document (.pdf)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"{\\rtf", "a Rich Text document (.rtf)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
)


def is_encrypted_office(data: bytes) -> bool:
    """A password-protected OOXML file: an OLE container holding an ``EncryptedPackage`` stream."""
    return data.startswith(OLE_MAGIC) and "EncryptedPackage".encode("utf-16-le") in data


def looks_like(data: bytes) -> str | None:
    """A short description of what the bytes are ("a PDF document (.pdf)"), or None if unknown."""
    head = data[:1024].lstrip()
    for magic, description in _MAGIC:
        if head.startswith(magic):
            return description
    if data.startswith(OLE_MAGIC):
        if is_encrypted_office(data):
            return "a password-protected Office file"
        for stream, description in _LEGACY:
            if stream.encode("utf-16-le") + b"\x00\x00" in data:
                return description
        return "a legacy Office 97-2003 file"
    if data.startswith(b"PK\x03\x04"):
        return _zip_kind(data)
    lowered = head[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "an HTML page (.html)"
    return None


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = archive.read("mimetype").decode("ascii", "replace").strip() if "mimetype" in names else ""
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError):
        return "a damaged ZIP archive"
    for kind in OFFICE_KINDS:
        if kind.main_part in names:
            return f"{kind.name} ({kind.suffix})"
    return _ODF.get(mimetype, "a ZIP archive")


def check_office_file(data: bytes, kind: OfficeKind) -> None:
    """Raise ``LoadError`` unless ``data`` is a ZIP holding ``kind``'s main part.

    Says whether the file is password-protected, a legacy binary file, another format with
    the wrong extension, or simply damaged.
    """
    if is_encrypted_office(data):
        raise LoadError(f"the {kind.noun} is encrypted with a password; remove the password and ingest it again")
    seen = looks_like(data)
    if seen == f"{kind.name} ({kind.suffix})":
        return
    prefix = f"not {kind.name} ({kind.suffix})"
    if seen is None or seen in ("a damaged ZIP archive", "a ZIP archive"):
        raise LoadError(f"{prefix}: it may be corrupt or misnamed")
    if seen.startswith("a legacy"):
        raise LoadError(
            f"{prefix}: it looks like {seen}, which is not supported; "
            f"save it as {kind.suffix} (in Office or LibreOffice) and ingest it again"
        )
    raise LoadError(f"{prefix}: it may be corrupt or misnamed (it looks like {seen})")
