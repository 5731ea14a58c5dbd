"""Uploads outlive the page in headless Chromium: add several files, leave for Chat at once, come back
and find them all done (``rag.upload_jobs``); a staging file left by an earlier run is removed at start
and the Documents page says so.

The app runs as ``python -m rag app`` with its own data folder (see ``test_browser``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_browser import STARTUP_S, documents_page, wait_until_idle

PDFS = ["multi-column.pdf", "loremipsum-flat.pdf", "multi-column-2p.pdf"]
NOTES = "notes.txt"
BROKEN = "broken.pdf"
LEFTOVER = ".ferry-times.part.txt"  # what a run stopped mid-ingest leaves behind
UNWRITTEN = ".big-scan.part.pdf.writing"  # an upload still being received when the run stopped


@pytest.mark.browser
@pytest.mark.slow
def test_uploads_finish_after_leaving_for_chat(tmp_path: Path, pdfs: Path):
    files = []
    for name in PDFS:
        shutil.copy(pdfs / name, tmp_path / name)
        files.append(tmp_path / name)
    (tmp_path / NOTES).write_text("Milvus Lite keeps the vectors in one local folder.\n")
    (tmp_path / BROKEN).write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    files += [tmp_path / NOTES, tmp_path / BROKEN]
    uploads = tmp_path / "data" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / LEFTOVER).write_text("The first ferry to Saltmere leaves at 07:15 from pier 3.\n")
    (uploads / UNWRITTEN).write_bytes(b"%PDF-1.4 half an upl")

    with documents_page(tmp_path, RAG_MAX_NEW_TOKENS="48") as (app, page):
        # The start adds the earlier run's unfinished upload again and says so; the half-received
        # one is gone.
        warning = page.locator('[data-testid="stAlertContentWarning"]', has_text="ferry-times.txt")
        warning.wait_for(timeout=30_000)
        assert "1 upload" in warning.inner_text() and "being added again" in warning.inner_text(), warning.inner_text()
        assert not (uploads / UNWRITTEN).exists()
        assert "queued again 1 staged upload" in app.log(), app.log()
        page.locator('[data-testid="stAlertContentSuccess"]', has_text="ferry-times.txt").wait_for(timeout=60_000)
        assert (uploads / "ferry-times.txt").exists() and not (uploads / LEFTOVER).exists()

        # Add five files and leave for Chat as soon as the page has queued them.
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
        for path in files:
            page.get_by_text(path.name).first.wait_for()
        page.get_by_role("button", name="Add to library").click()
        page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60_000)
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Chat").click()
        page.get_by_role("heading", name="Chat with your documents").wait_for(timeout=60_000)
        still = page.get_by_text("Documents are still being added")
        still.wait_for(timeout=30_000)
        assert "in progress" in still.inner_text()

        # Back on Documents, every job is there; the page refreshes itself until all are done.
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Documents").click()
        page.get_by_role("heading", name="Documents").wait_for()
        for path in files[:-1]:
            page.locator('[data-testid="stAlertContentSuccess"]', has_text=path.name).wait_for(timeout=STARTUP_S * 1000)
        failed = page.locator('[data-testid="stAlertContentError"]', has_text=BROKEN)
        failed.wait_for(timeout=30_000)
        assert "the PDF is corrupt or truncated" in failed.inner_text(), failed.inner_text()
        wait_until_idle(page)
        page.locator('[data-testid="stMetricValue"]').first.get_by_text("5", exact=True).wait_for(timeout=30_000)
        assert page.locator('[data-testid="stAlertContentSuccess"]').count() == 5  # the resumed upload's too
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.get_by_text("Documents are still being added").count() == 0

        # Every accepted upload is committed under its name; nothing staged is left behind.
        assert sorted(p.name for p in uploads.iterdir()) == sorted([*PDFS, NOTES, "ferry-times.txt"])

        # Chat no longer says anything is being added.
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Chat").click()
        page.get_by_role("heading", name="Chat with your documents").wait_for()
        wait_until_idle(page)
        assert page.get_by_text("Documents are still being added").count() == 0
