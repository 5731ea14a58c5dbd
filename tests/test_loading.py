"""Step 1 of ingest: files to pages, and a specific message for every file that cannot be read."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from rag.loading import LoadError, load_document, normalise_text, source_key
from rag.readers.base import ReadOptions

ARTICLE = (
    "Dense passage retrieval encodes questions and passages with two BERT encoders. "
    "The passages closest to a question in vector space are read by the answer model. "
)


def encrypted_copy(source: Path | bytes, target: Path, password: str = "s3cret") -> Path:
    """The same PDF locked with a user password, as a person would get from a PDF tool."""
    writer = PdfWriter(clone_from=io.BytesIO(source) if isinstance(source, bytes) else source)
    writer.encrypt(user_password=password, owner_password="owner-" + password)
    writer.write(target)
    return target


# Text files -----------------------------------------------------------------------------


def test_text_file_is_one_page_without_number(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\r\n\r\n\r\nfirst   line\nsecond\tline  \n", encoding="utf-8")

    document = load_document(path, source="notes.md")

    assert [page.number for page in document.pages] == [None]
    assert document.pages[0].text == "# Notes\n\nfirst line\nsecond line"
    assert document.page_total == 1
    assert document.title == "notes.md"
    assert document.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert document.size_bytes == path.stat().st_size


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("utf-8-sig", "Café crème ☕"), ("utf-16", "Café crème ☕ in UTF-16"), ("latin-1", "Café crème")],
)
def test_text_encodings_are_read(tmp_path: Path, encoding: str, text: str) -> None:
    path = tmp_path / "note.txt"
    path.write_bytes(text.encode(encoding))

    assert load_document(path).pages[0].text == text


def test_source_is_relative_to_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    path = tmp_path / "docs" / "a.txt"
    path.write_text("hello")
    monkeypatch.chdir(tmp_path)

    assert source_key(Path("docs/a.txt")) == "docs/a.txt"
    assert load_document(path).source == "docs/a.txt"
    assert source_key(Path("/elsewhere/b.txt")) == "/elsewhere/b.txt"


def test_normalise_text_undoes_pdf_layout() -> None:
    raw = "The ﬁrst re-\nsult  was\u00a0good.\nIt held\x07 up.\n\n\n\nNext para."

    assert normalise_text(raw, join_lines=True) == "The first result was good. It held up.\n\nNext para."
    assert normalise_text(raw) == "The first result was good.\nIt held up.\n\nNext para."


# PDFs made here (no shared data needed) ---------------------------------------------------


def test_pdf_pages_keep_their_numbers_and_blank_pages_are_counted(tmp_path: Path, make_pdf) -> None:
    path = make_pdf(tmp_path / "three.pdf", ["Page one talks about whales.", "", "Page three talks about Rust."])

    document = load_document(path)

    assert [(page.number, page.text) for page in document.pages] == [
        (1, "Page one talks about whales."),
        (3, "Page three talks about Rust."),
    ]
    assert document.page_total == 3


def bad_files(tmp_path: Path, make_pdf) -> dict[str, tuple[Path, str]]:
    """Every kind of unreadable file, with the words its message must contain."""
    good_pdf = make_pdf(tmp_path / "good.pdf", [ARTICLE * 5, ARTICLE])
    data = good_pdf.read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, content: bytes, expected: str) -> None:
        path = tmp_path / name
        path.write_bytes(content)
        cases[name] = (path, expected)

    cases["encrypted.pdf"] = (
        encrypted_copy(good_pdf, tmp_path / "encrypted.pdf"),
        "the PDF is encrypted with a password; remove the password",
    )
    add("truncated.pdf", data[: len(data) // 2], "the PDF is corrupt or truncated")
    add("garbled.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8, "the PDF is corrupt or truncated")
    add("empty.pdf", b"", "the file is empty (0 bytes)")
    add("empty.txt", b"", "the file is empty (0 bytes)")
    add("misnamed.pdf", b"just some words, not a PDF", "not a PDF file (no %PDF header)")
    scan = make_pdf(tmp_path / "scan.pdf", ["", ""])
    cases["scan.pdf"] = (scan, "no text could be extracted from any of its 2 pages")
    add("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "the file looks binary")
    add("cp.txt", bytes(range(0x80, 0xA0)) * 10, "not readable text")
    add("blank.md", b"  \n\t\n  ", "the file holds only whitespace")
    add("report.doc", b"\xd0\xcf\x11\xe0 legacy Word", "unsupported file type '.doc'")
    add("setup.exe", b"MZ\x90\x00", "unsupported file type '.exe'")
    add("README", b"no suffix", "unsupported file type '(none)'")
    return cases


BAD_NAMES = [
    "encrypted.pdf",
    "truncated.pdf",
    "garbled.pdf",
    "empty.pdf",
    "empty.txt",
    "misnamed.pdf",
    "scan.pdf",
    "image.txt",
    "cp.txt",
    "blank.md",
    "report.doc",
    "setup.exe",
    "README",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_each_bad_file_gets_a_specific_message(tmp_path: Path, make_pdf, name: str) -> None:
    path, expected = bad_files(tmp_path, make_pdf)[name]

    with pytest.raises(LoadError) as caught:
        load_document(path)

    assert expected in str(caught.value)


def test_blank_pdf_says_ocr_found_nothing_either(tmp_path: Path, make_pdf) -> None:
    path = make_pdf(tmp_path / "blank.pdf", [""])

    with pytest.raises(LoadError, match="no text could be extracted") as caught:
        load_document(path)

    assert "OCR included: they look blank" in str(caught.value)


def test_missing_folder_and_oversized_files(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x" * 2_000_001)

    with pytest.raises(LoadError, match="file not found"):
        load_document(tmp_path / "nothing.txt")
    with pytest.raises(LoadError, match="not a regular file"):
        load_document(tmp_path)
    with pytest.raises(LoadError, match=r"the file is 2\.0 MB, over the 1 MB limit"):
        load_document(big, max_bytes=1_000_000)


# The shared real PDFs -------------------------------------------------------------------


def test_copy_protected_pdf_opens_with_its_empty_password(pdfs: Path) -> None:
    path = pdfs / "copy-protected.pdf"
    assert PdfReader(path).is_encrypted

    document = load_document(path)

    assert document.page_total == len(PdfReader(path).pages)
    assert sum(len(page.text) for page in document.pages) > 1000


def test_real_pdf_with_a_user_password_is_refused(pdfs: Path, tmp_path: Path) -> None:
    path = encrypted_copy(pdfs / "multi-column-2p.pdf", tmp_path / "locked.pdf")

    with pytest.raises(LoadError, match="encrypted with a password; remove the password"):
        load_document(path)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.95])
def test_truncated_real_pdf_is_reported_corrupt(pdfs: Path, tmp_path: Path, keep: float) -> None:
    data = (pdfs / "multi-column-2p.pdf").read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(LoadError, match="the PDF is corrupt or truncated"):
        load_document(path)


def test_scanned_pdf_with_ocr_off_names_its_pages(pdfs: Path) -> None:
    """With OCR on, tests/test_ocr.py reads it."""
    with pytest.raises(LoadError) as caught:
        load_document(pdfs / "loremipsum-flat.pdf", options=ReadOptions(ocr="off"))

    message = str(caught.value)
    assert "no text could be extracted" in message
    assert "page 1 holds ink but no text layer" in message
    assert "RAG_OCR=off" in message


def test_korean_pdf_keeps_hangul(pdfs: Path) -> None:
    document = load_document(pdfs / "korean-text-with-tables.pdf")

    text = " ".join(page.text for page in document.pages)
    assert sum("\uac00" <= ch <= "\ud7a3" for ch in text) > 100
