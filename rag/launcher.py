"""``python -m rag app``: start the Streamlit app so that other processes can share its store.

For a Milvus Lite store the launcher first serves the folder with a local Milvus Lite
server on loopback, so that ``python -m ingest`` can write to the same store while the
app is running; the server stops with the app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rag.config import Settings
from rag.local_server import LocalServer

APP = Path(__file__).resolve().parent.parent / "app.py"


def run_app(settings: Settings, *, port: int = 8501) -> int:
    env = dict(os.environ)
    server: LocalServer | None = None
    if settings.is_local_store:
        server = LocalServer(Path(settings.resolved_milvus_uri))
        uri = server.start()
        print(f"Milvus Lite store {settings.resolved_milvus_uri} is served at {uri} for the app and ingest")
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
