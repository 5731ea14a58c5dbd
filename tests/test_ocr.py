"""OCR of scanned PDF pages and images, offline, through the real engine and the real ingest path.

The fixtures in tests/data/ocr/ come from make_fixtures.py there: a two-page court order
typeset, rendered, turned, speckled and saved as JPEG page images under a real docket line of
text (the case of issue 12: a scan whose only text layer is a header), a PNG, a two-page TIFF
and a picture without text. Source and licence in tests/data/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.cli import _describe, main
from rag import ocr
from rag.config import Settings
from rag.loading import SUPPORTED_SUFFIXES, LoadError, load_document
from rag.pipeline import Ingestor, Progress
from rag.readers.base import ReadOptions
from rag.records import Outcome, page_ranges
from rag.services import Services
from rag.store import DocumentStore

OCR = Path(__file__).resolve().parent / "data" / "ocr"
PDFS = Path(__file__).resolve().parent / "data" / "pdfs"
SCAN = OCR / "court-order-scan.pdf"
NO_TEXT = "no text found in image: OCR read nothing, so nothing was stored"

pytestmark = pytest.mark.slow  # every OCR'd page takes seconds on two cores


def squash(text: str) -> str:
    return " ".join(text.lower().split())


# Scanned PDFs ---------------------------------------------------------------------------


def test_scan_under_a_docket_line_is_read_by_ocr_page_by_page() -> None:
    seen: list[tuple[int, int]] = []

    document = load_document(SCAN, options=ReadOptions(on_page=lambda done, total: seen.append((done, total))))

    assert (document.page_total, document.ocr_pages, document.unread_pages) == (2, (1, 2), ())
    assert seen == [(1, 2), (2, 2)]
    first, second = document.pages
    assert (first.number, second.number) == (1, 2)
    # the order itself, not only the docket line that was its text layer
    assert "sixty metres of the lifeboat slipway" in squash(first.text)
    assert "order on motion for preliminary injunction" in squash(first.text)
    assert "post a bond of twelve thousand five hundred dollars" in squash(second.text)
    assert "judge amelia thornbury" in squash(second.text)
    assert "bond" not in squash(first.text)  # page numbers kept: the bond is on page 2 only
    assert "Page 2 of 2" in second.text  # the docket line is on the page too


def test_with_ocr_off_the_scan_keeps_its_docket_lines_and_names_the_unread_pages() -> None:
    document = load_document(SCAN, options=ReadOptions(ocr="off"))

    assert (document.ocr_pages, document.unread_pages) == ((), (1, 2))
    assert [len(page.text) for page in document.pages] == [len(page.text) for page in document.pages if page.text]
    assert all(page.text.startswith("Case 1:24-cv-01734-AT Document 42") for page in document.pages)
    assert all(len(page.text) < 100 for page in document.pages)


def test_born_digital_pages_are_not_ocrd_in_auto_and_are_in_force(pdfs: Path) -> None:
    paper = load_document(pdfs / "multi-column.pdf")  # 13 pages of text, figures and tables
    assert paper.ocr_pages == ()

    forced = load_document(OCR / "harbour-fees.pdf", options=ReadOptions(ocr="force"))
    assert forced.ocr_pages == (1,)
    assert "schedule of fees" in squash(forced.pages[0].text)


def test_scan_without_any_text_layer_is_read(pdfs: Path) -> None:
    document = load_document(pdfs / "loremipsum-flat.pdf")

    assert document.ocr_pages == (1,)
    assert "lorem ipsum dolor sit amet" in squash(document.pages[0].text)


def test_the_engine_is_loaded_once_per_process() -> None:
    assert ocr.engine() is ocr.engine()


# Images ---------------------------------------------------------------------------------


def test_png_and_multi_page_tiff_are_read() -> None:
    png = load_document(OCR / "notice.png")
    assert [page.number for page in png.pages] == [None]
    assert "barges block the channel used by the lifeboat" in squash(png.pages[0].text)

    tiff = load_document(OCR / "ledger.tiff")
    assert (tiff.page_total, [page.number for page in tiff.pages]) == (2, [1, 2])
    assert "paraffin delivered to skerry point" in squash(tiff.pages[0].text)
    assert "relief boat was late twice" in squash(tiff.pages[1].text)
    assert "relief boat" not in squash(tiff.pages[0].text)


def test_image_without_text_says_so() -> None:
    with pytest.raises(LoadError, match=f"^{NO_TEXT}$"):
        load_document(OCR / "meadow.jpg")


def test_image_bad_inputs_get_their_own_message(tmp_path: Path) -> None:
    pdf_as_png = tmp_path / "scan.png"
    pdf_as_png.write_bytes(SCAN.read_bytes())
    with pytest.raises(LoadError, match=r"not a PNG, JPEG or TIFF image: it looks like a PDF document \(.pdf\)"):
        load_document(pdf_as_png)

    png_as_pdf = tmp_path / "notice.pdf"
    png_as_pdf.write_bytes((OCR / "notice.png").read_bytes())
    with pytest.raises(LoadError, match=r"not a PDF file \(no %PDF header\).*it looks like a PNG image"):
        load_document(png_as_pdf)

    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((OCR / "meadow.jpg").read_bytes()[:600])
    with pytest.raises(LoadError, match=r"^the image could not be read: the image is damaged or truncated"):
        load_document(truncated)

    with pytest.raises(LoadError, match=r"OCR is off \(RAG_OCR=off\)"):
        load_document(OCR / "notice.png", options=ReadOptions(ocr="off"))


def test_upload_page_accepts_the_image_types() -> None:
    """The upload page offers SUPPORTED_SUFFIXES (app_pages/documents.py), which come from the reader table."""
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff"} <= SUPPORTED_SUFFIXES
    assert "SUPPORTED_SUFFIXES" in (Path(__file__).resolve().parents[1] / "app_pages" / "documents.py").read_text()


# Through ingest and search ----------------------------------------------------------------


def test_ocrd_scan_is_ingested_and_answers_a_question_from_its_page(
    ingestor: Ingestor, store: DocumentStore, embedder
) -> None:
    pages: list[tuple[int, int]] = []

    report = ingestor.ingest([SCAN, OCR / "meadow.jpg"], progress=Progress(on_pages=lambda d, t: pages.append((d, t))))

    scan, meadow = report.files
    assert (scan.outcome, scan.pages, scan.ocr_pages) == (Outcome.ADDED, 2, 2)
    assert scan.size_text() == f"2 pages (2 OCR), {scan.chunks} chunks"
    assert _describe(scan).startswith("+ added      ") and "(2 pages (2 OCR), " in _describe(scan)
    assert scan.to_dict()["ocr_pages"] == 2
    assert (1, 2) in pages and (2, 2) in pages
    assert (meadow.outcome, meadow.error) == (
        Outcome.FAILED,
        "no text found in image: OCR read nothing, so nothing was stored",
    )
    assert [document.title for document in store.list_documents()] == [SCAN.name]  # nothing of the picture

    question = "How large is the bond the defendant must post with the clerk?"
    hits = store.search(question, embedder.embed_query(question), k=2)
    assert hits[0].page == 2
    assert "twelve thousand five hundred dollars" in squash(hits[0].text)


def test_with_ocr_off_the_outcome_names_the_pages_left_without_text(
    settings: Settings, embedder, store: DocumentStore
) -> None:
    ingestor = Ingestor(settings.model_copy(update={"ocr": "off"}), embedder, store)

    result = ingestor.ingest_file(SCAN)

    assert (result.outcome, result.ocr_pages, result.unread_pages) == (Outcome.ADDED, 0, (1, 2))
    assert result.size_text() == f"2 pages (no text read on pages 1-2: OCR is off), {result.chunks} chunks"
    flat = ingestor.ingest_file(PDFS / "loremipsum-flat.pdf")
    assert flat.outcome is Outcome.FAILED
    assert "page 1 holds ink but no text layer" in flat.error and "RAG_OCR=auto" in flat.error


def test_an_uploaded_image_is_read_and_a_picture_refused(ingestor: Ingestor, store: DocumentStore) -> None:
    """The upload page's path: the bytes are staged, ingested, and kept only when they hold text."""
    uploaded = ingestor.ingest_upload("notice.png", (OCR / "notice.png").read_bytes())
    refused = ingestor.ingest_upload("meadow.jpg", (OCR / "meadow.jpg").read_bytes())

    assert (uploaded.outcome, uploaded.pages, uploaded.ocr_pages) == (Outcome.ADDED, 1, 1)
    assert (refused.outcome, refused.error) == (Outcome.FAILED, NO_TEXT)
    assert [document.source for document in store.list_documents()] == ["notice.png"]
    assert sorted(path.name for path in ingestor.settings.uploads_dir.iterdir()) == ["notice.png"]


def test_the_ingest_command_reports_ocr_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedder
) -> None:
    for name in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(Services, "embedder", property(lambda services: embedder))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "state"))
    for name in ("ledger.tiff", "meadow.jpg"):
        (tmp_path / name).write_bytes((OCR / name).read_bytes())

    status = main(["ledger.tiff", "meadow.jpg"])

    out, err = capsys.readouterr()
    assert status == 1  # the picture failed
    assert "+ added      ledger.tiff (2 pages (2 OCR), 2 chunks)" in err
    assert f"! failed     meadow.jpg: {NO_TEXT}" in err
    assert out.startswith("2 files: 1 added, 0 replaced, 0 unchanged, 1 failed")


def test_page_ranges_in_words() -> None:
    assert page_ranges([2]) == "page 2"
    assert page_ranges([1, 2, 3, 5, 7, 8]) == "pages 1-3, 5, 7-8"
