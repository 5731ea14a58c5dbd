"""``python -m rag app``: start the Streamlit app so that other processes can share its store.

For a Milvus Lite store the launcher first serves the folder with a local Milvus Lite
server on loopback, so that ``python -m ingest`` can write to the same store while the
app is running; the server stops with the app. SIGTERM or SIGINT (Ctrl-C) stops both
and removes the endpoint file.

The Streamlit child builds its own ``Settings`` from the environment, so the launcher hands
its resolved settings over as ``RAG_*`` variables: ``--uri`` and ``--collection`` reach the app.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from rag.config import Settings
from rag.local_server import LocalServer

APP = Path(__file__).resolve().parent.parent / "app.py"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def settings_env(settings: Settings) -> dict[str, str]:
    """``RAG_*`` variables that rebuild these settings in a child process (the fields that were set)."""
    env = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"RAG_{name.upper()}"] = str(value)
    return env


def run_app(settings: Settings, *, port: int = 8501) -> int:
    env = {**os.environ, **settings_env(settings)}
    server: LocalServer | None = None
    app: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        if app is None:
            raise KeyboardInterrupt  # still starting: give up and clean up below
        if app.poll() is None:
            app.send_signal(signum)  # Streamlit shuts down cleanly; wait() below then returns

    previous = {signum: signal.signal(signum, forward) for signum in _STOP_SIGNALS}
    try:
        if settings.is_local_store:
            server = LocalServer(Path(settings.resolved_milvus_uri))
            uri = server.start()
            print(f"Milvus Lite store {settings.resolved_milvus_uri} is served at {uri} for the app and ingest")
        command = [
            sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(port), "--server.maxUploadSize", str(settings.max_file_mb),
        ]  # fmt: skip
        app = subprocess.Popen(command, env=env)
        code = app.wait()
        return 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code
    except KeyboardInterrupt:
        return 130
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            try:
                app.wait(timeout=15)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        if server is not None:
            server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
