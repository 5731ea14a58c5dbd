"""``python -m ingest`` writes to the store while ``python -m rag app`` holds it.

Milvus Lite opens a folder in one process only, so the app serves its folder on loopback
and ingest connects to that server. The document ingested from the terminal then shows
up in the running app (seen in a real browser) without a restart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_browser import CHROMIUM, ROOT, AppProcess, chromium_page, pid_alive, running_app, wait_until_idle

NOTES = """# Release notes

The shared store lets the terminal and the app work on one Milvus Lite folder at the same time.
Ingest connects to the local server that the app started, instead of opening the folder itself.
"""


def ingest(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=cwd,
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_ingest_from_a_terminal_while_the_app_runs(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "release-notes.md").write_text(NOTES)
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver (make test-setup)")
    with (
        running_app(tmp_path / "data", tmp_path / "app.log") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        # The app opens the (empty) store first.
        page.goto("/documents")
        page.get_by_text("The library is empty").wait_for(timeout=180_000)
        served_at = json.loads(app.endpoint.read_text())["uri"]

        # The terminal reaches the same store through the app's server, not the folder.
        listed = ingest("--list", env=app.env, cwd=work)
        assert listed.returncode == 0, listed.stderr
        assert f"no documents in 'documents' at {served_at}" in listed.stdout

        added = ingest("release-notes.md", env=app.env, cwd=work)
        assert added.returncode == 0, added.stdout + added.stderr
        assert re.search(r"\+ added +release-notes\.md \(1 pages?, 1 chunks?\)", added.stderr), added.stderr
        assert "1 files: 1 added" in added.stdout

        listed = ingest("--list", "--json", env=app.env, cwd=work)
        assert listed.returncode == 0, listed.stderr
        assert [d["source"] for d in json.loads(listed.stdout)] == ["release-notes.md"]

        # The running app sees the new document on its next run: no restart.
        page.reload()
        page.get_by_role("heading", name="Documents").wait_for()
        wait_until_idle(page)
        assert page.locator('[data-testid="stMetricValue"]').all_inner_texts()[:2] == ["1", "1"]
        page.locator('[data-testid="stMultiSelect"]').click()
        assert page.get_by_role("option", name="release-notes.md").is_visible()
        page.keyboard.press("Escape")

        # ... and can answer from it (no LLM needed to check retrieval: an unrelated
        # question is refused, showing the closest passage from the new document).
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Chat").click()
        box = page.get_by_placeholder("Ask a question about your documents")
        box.fill("What is the recipe for apple pie?")
        box.press("Enter")
        closest = page.locator('[data-testid="stExpander"]').filter(has_text="Closest passages")
        closest.wait_for(timeout=180_000)
        closest.locator("summary").click()
        closest.get_by_text("release-notes.md").first.wait_for()
    assert app.process is not None and app.process.returncode == 0, app.log()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "Ctrl-C"])
def test_app_stops_cleanly(tmp_path: Path, how: str):
    """No Milvus server left running, no stale endpoint file, exit status 0."""
    app = AppProcess(tmp_path / "data", tmp_path / "app.log").start()
    try:
        assert app.endpoint.exists()
        assert app.milvus_pid is not None and pid_alive(app.milvus_pid)
    finally:
        app.stop(how)  # asserts the server is gone and the endpoint file removed
    assert app.process is not None and app.process.returncode == 0, app.log()
    assert "Traceback" not in app.log(), app.log()
