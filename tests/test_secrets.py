"""``RAG_MILVUS_TOKEN`` is a secret: no repr, report, log line or error message shows it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_contract import free_port

from rag.config import Settings
from rag.store import DocumentStore, StoreError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "root:Sup3r-s3cret-T0ken"


def test_the_token_is_hidden_in_the_settings_but_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_MILVUS_TOKEN", TOKEN)

    settings = Settings()

    for shown in (repr(settings), str(settings), settings.model_dump_json(), f"{settings.milvus_token}"):
        assert TOKEN not in shown and "Sup3r" not in shown
    assert "**********" in repr(settings)
    assert settings.milvus_token.get_secret_value() == TOKEN


@pytest.mark.slow
def test_the_token_stays_out_of_doctor_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_DATA_DIR=str(tmp_path / "data"), RAG_MILVUS_TOKEN=TOKEN, RAG_CONNECT_TIMEOUT_S="2")
    dead = f"http://127.0.0.1:{free_port()}"

    done = subprocess.run(
        [sys.executable, "-m", "rag", "doctor", "--verbose", "--uri", dead],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 2, done.stdout + done.stderr  # unreachable, said so
    assert dead in done.stdout  # the report names the server it tried
    assert "Sup3r" not in done.stdout + done.stderr


def test_the_token_stays_out_of_logs_and_errors(tmp_path: Path, embedder, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(data_dir=tmp_path, milvus_uri=dead, milvus_token=TOKEN, connect_timeout_s=2)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(StoreError) as caught:
        DocumentStore(settings, embedder).open()

    assert dead in str(caught.value) or "127.0.0.1" in str(caught.value)
    for shown in (str(caught.value), repr(caught.value), caplog.text, repr(caught.value.__cause__)):
        assert "Sup3r" not in shown
