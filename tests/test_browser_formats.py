"""Every new format through the upload page in headless Chromium, then a question only a spreadsheet answers.

One upload holds a Word document, slides, a workbook, a CSV file, a web page, a PNG with text and a
scanned PDF (all real files made by the libraries themselves: the fixtures of tests/data/formats and
tests/data/ocr, and a CSV written here with the csv module), plus a ``.docx`` that is really a text
file. The background jobs finish with each file's pages and outcome (the images and the scan read by
OCR); the misnamed file fails with its own message and stores nothing. A question whose answer is a
cell of the workbook, read with its header, is answered from the workbook.

The app runs as ``python -m rag app`` with its own data folder (see ``test_browser``).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
from test_browser import STARTUP_S, ask, documents_page, wait_until_idle

DATA = Path(__file__).resolve().parent / "data"
# name -> (fixture or None when written here, the pages part of its outcome)
GOOD = {
    "report.docx": (DATA / "formats" / "report.docx", "1 page"),
    "deck.pptx": (DATA / "formats" / "deck.pptx", "4 pages"),
    "budget.xlsx": (DATA / "formats" / "budget.xlsx", "3 pages"),
    "birds.csv": (None, "1 page"),
    "ferry.html": (DATA / "formats" / "ferry.html", "1 page"),
    "notice.png": (DATA / "ocr" / "notice.png", "1 page (1 OCR)"),
    "court-order-scan.pdf": (DATA / "ocr" / "court-order-scan.pdf", "2 pages (2 OCR)"),
}
TOTAL_PAGES = 1 + 4 + 3 + 1 + 1 + 1 + 2
MISNAMED = "minutes.docx"  # a text file under a Word name
MISNAMED_MESSAGE = "not a Word document (.docx): it may be corrupt or misnamed"
QUESTION = "What is Grace Hopper's salary?"  # only budget.xlsx has it, as "Name: Grace Hopper; …; Salary: 6100"


def write_csv(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Species", "Count", "Site"])
        writer.writerows([["Oystercatcher", 42, "North spit"], ["Ringed plover", 17, "Shingle bank"]])
        writer.writerow(["Turnstone", 63, "Harbour wall"])
    return path


def library_rows(page, count: int) -> dict[str, list[str]]:
    """The library table's rows by file name (name first), read from the accessible table that the
    grid draws behind its canvas once it has painted ``count`` rows."""
    last = f'[data-testid="stDataFrame"] [data-testid="glide-cell-0-{count - 1}"]'
    page.locator(last).wait_for(state="attached", timeout=30_000)
    rows: dict[str, list[str]] = {}
    for row in page.locator('[data-testid="stDataFrame"] table tbody tr').all():
        cells = [cell.strip() for cell in row.locator("td").all_inner_texts()]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


@pytest.mark.browser
@pytest.mark.slow
def test_every_format_uploads_in_one_go_and_the_workbook_answers(tmp_path: Path):
    files = []
    for name, (fixture, _) in GOOD.items():
        if fixture is None:
            files.append(write_csv(tmp_path / name))
        else:
            files.append(Path(shutil.copy(fixture, tmp_path / name)))
    (tmp_path / MISNAMED).write_text("Minutes of the harbour committee, 3 May.\nPresent: the harbour master.\n")
    files.append(tmp_path / MISNAMED)
    uploads = tmp_path / "data" / "uploads"

    with documents_page(tmp_path, RAG_MAX_NEW_TOKENS="48") as (_, page):
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
        for path in files:
            page.get_by_text(path.name).first.wait_for()
        page.get_by_role("button", name="Add to library").click()

        # Each file's job ends with its outcome and pages; the scan and the picture were read by OCR.
        outcomes: dict[str, str] = {}
        for name, (_, pages) in GOOD.items():
            done = page.locator('[data-testid="stAlertContentSuccess"]', has_text=name)
            done.wait_for(timeout=STARTUP_S * 2 * 1000)
            outcomes[name] = done.inner_text()
            assert re.search(rf"{re.escape(name)}: added \({re.escape(pages)}, [1-9]\d* chunks?\)", outcomes[name]), (
                outcomes[name]
            )
        failed = page.locator('[data-testid="stAlertContentError"]', has_text=MISNAMED)
        failed.wait_for(timeout=60_000)
        assert f"{MISNAMED}: failed — {MISNAMED_MESSAGE}" in failed.inner_text(), failed.inner_text()
        wait_until_idle(page)
        page.locator('[data-testid="stMetricValue"]').first.get_by_text("7", exact=True).wait_for(timeout=30_000)
        assert page.locator('[data-testid="stAlertContentSuccess"]').count() == len(GOOD)
        assert page.locator('[data-testid="stAlertContentError"]').count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        documents, chunks, pages = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        assert (documents, pages) == ("7", str(TOTAL_PAGES)), (documents, chunks, pages)
        stated = sum(int(re.search(r"(\d+) chunks?\)", text).group(1)) for text in outcomes.values())
        assert int(chunks) == stated, (chunks, outcomes)

        # The library lists every accepted file with its pages; the misnamed one is not stored.
        rows = library_rows(page, len(GOOD))
        assert sorted(rows) == sorted(GOOD), rows
        for name, (_, pages) in GOOD.items():
            assert rows[name][1] == pages.split(" ")[0], (name, rows[name])
        assert sorted(p.name for p in uploads.iterdir()) == sorted(GOOD)  # committed, nothing staged left

        # The workbook's cell, read with its header, answers the question; the workbook is the source.
        answer = ask(page, QUESTION)
        key = answer.locator(".rag-key")
        assert key.count() == 1, answer.inner_text()
        assert "Salary: 6100" in key.inner_text() and "budget.xlsx" in key.inner_text(), key.inner_text()
        answer.locator('[data-testid="stExpander"] summary').click()
        answer.locator(".rag-source").first.wait_for()
        sources = answer.locator(".rag-source-title").all_inner_texts()
        assert re.fullmatch(r"\[1\] budget\.xlsx, page 1 — relevance 0\.\d\d.*", sources[0]), sources
        passage = answer.locator(".rag-source").first.inner_text()
        assert "Name: Grace Hopper; Born: 1906; Team: Compilers; Salary: 6100" in passage, passage
        assert page.locator('[data-testid="stException"]').count() == 0
