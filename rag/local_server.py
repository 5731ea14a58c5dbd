"""Share one Milvus Lite folder between processes.

Milvus Lite opens a local folder in one process at a time. The app therefore serves its
folder with Milvus Lite's own gRPC server on loopback and leaves a small endpoint file
beside it; any other process (``python -m ingest``, ``python -m rag``) that finds a live
endpoint connects to that server instead of opening the folder itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class StoreBusyError(RuntimeError):
    """The Milvus Lite folder is held by another process that serves no endpoint."""


def endpoint_file(db_path: Path) -> Path:
    return db_path.parent / f"{db_path.name}.server.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_endpoint(db_path: Path) -> str | None:
    """URI of a live server for this folder, or None (a stale endpoint file is removed)."""
    marker = endpoint_file(db_path)
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if _pid_alive(int(info.get("pid", -1))) and _port_open(int(info.get("port", -1))):
        return str(info["uri"])
    marker.unlink(missing_ok=True)
    return None


def resolve_local_uri(db_path: Path) -> str:
    """The URI a client should use for a Milvus Lite folder: its server if one runs, else the path."""
    return running_endpoint(db_path) or str(db_path)


@dataclass
class LocalServer:
    """A ``milvus-lite server`` child process serving one folder on loopback."""

    db_path: Path
    process: subprocess.Popen | None = None
    port: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> str:
        """Start serving (or adopt a server that already serves this folder); return its URI."""
        existing = running_endpoint(self.db_path)
        if existing:
            log.info("using the Milvus Lite server already serving %s at %s", self.db_path, existing)
            return existing
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        log_path = self.db_path.parent / f"{self.db_path.name}.server.log"
        command = [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.db_path), "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:]
                raise StoreBusyError(
                    f"could not serve {self.db_path}: another process (an ingest still running?) has it "
                    f"open, or the folder is damaged. Server log:\n{tail}"
                )
            if _port_open(self.port):
                endpoint_file(self.db_path).write_text(
                    json.dumps({"pid": self.process.pid, "port": self.port, "uri": self.uri})
                )
                log.info("serving %s at %s (pid %d)", self.db_path, self.uri, self.process.pid)
                return self.uri
            time.sleep(0.1)
        self.stop()
        raise StoreBusyError(f"the Milvus Lite server for {self.db_path} did not start within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        endpoint_file(self.db_path).unlink(missing_ok=True)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
