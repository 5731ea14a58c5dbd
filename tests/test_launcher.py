"""``python -m rag app --uri X --collection Y``: the flags reach the Streamlit app, not only the launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from store_contract import free_port
from test_browser import STARTUP_S, chromium_page, no_app_errors, wait_until_idle

from rag.config import Settings
from rag.launcher import settings_env

ROOT = Path(__file__).resolve().parents[1]


def test_settings_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    given = Settings(
        milvus_uri="/srv/elsewhere/store.db", collection="flagged", hybrid=False, top_k=7, milvus_token="s3cret"
    )

    env = settings_env(given)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()

    assert env["RAG_MILVUS_URI"] == "/srv/elsewhere/store.db" and env["RAG_COLLECTION"] == "flagged"
    assert "RAG_CHUNK_SIZE" not in env  # defaults stay defaults: only what was set is passed on
    assert rebuilt.model_dump() == given.model_dump()
    assert rebuilt.milvus_token.get_secret_value() == "s3cret"


def doctor(uri: Path, collection: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rag", "doctor", "--uri", str(uri), "--collection", collection],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2 would be an unreachable store
    return done.stdout


@pytest.mark.browser
@pytest.mark.slow
def test_app_flags_reach_the_app(tmp_path: Path) -> None:
    """The app opens the store and collection given on the command line, not the environment's."""
    data_dir = tmp_path / "data"
    uri = tmp_path / "elsewhere" / "flagged.db"
    uri.parent.mkdir()
    collection = "flagged_docs"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_DATA_DIR=str(data_dir), RAG_COLLECTION="from_environment", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "app.log"
    command = [sys.executable, "-m", "rag", "app", "--uri", str(uri), "--collection", collection, "--port", str(port)]

    with open(log_path, "ab") as log:
        app = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert app.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, f"no answer within {STARTUP_S} s:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert (uri.parent / "flagged.db.server.json").exists()  # the launcher serves the flagged folder

        with chromium_page(f"http://127.0.0.1:{port}", tmp_path / "failure.png") as page:
            page.goto("/documents")
            page.get_by_role("heading", name="Documents").wait_for(timeout=STARTUP_S * 1000)
            wait_until_idle(page, STARTUP_S * 1000)
            details = page.locator('[data-testid="stExpander"]').filter(has_text="Store details")
            details.locator("summary").click()
            text = details.locator('[data-testid="stExpanderDetails"]').inner_text()
            no_app_errors(page)
        assert f"Location: {uri} (connected at http://127.0.0.1:" in text, text
        assert f"Collection: {collection}" in text, text
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)

    # The app created its collection in the flagged folder; the environment's store was never opened.
    assert "(does not exist)" not in doctor(uri, collection, env)
    assert "(does not exist)" in doctor(uri, "from_environment", env)
    assert not (data_dir / "milvus.db").exists()
