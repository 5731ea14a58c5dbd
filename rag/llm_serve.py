"""Run ``transformers serve`` (an OpenAI-compatible server) on the bundled model, on loopback.

The LLM-server tests and ``benchmarks/concurrent_questions.py`` need a real server to talk to;
this is the one place that starts it (offline, on a free port, in its own process group so that
stopping it ends its workers too), waits until ``/v1/models`` answers, and stops it again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rag.config import Settings

SERVE = Path(sys.executable).with_name("transformers")  # installed by requirements-test.txt
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


class ServeError(RuntimeError):
    """``transformers serve`` is missing, exited, or did not answer in time; the message holds its log's tail."""


def serve_installed() -> bool:
    return SERVE.is_file()


@dataclass
class Served:
    """A running ``transformers serve``: its OpenAI base URL and the model (folder) it serves."""

    process: subprocess.Popen[bytes]
    url: str
    model: str
    log: Path

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to its process group; SIGKILL if it has not gone within the stop timeout."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Die at once, as a crashed or powered-off server does."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model: str, log: Path, *, continuous_batching: bool = False, timeout_s: float = START_TIMEOUT_S) -> Served:
    """Start ``transformers serve`` for ``model`` on a free loopback port; return once ``/v1/models`` answers.

    Raises ServeError (with the log's tail) if it is not installed, exits, or does not answer within
    ``timeout_s``; a server that did not come up is stopped first.
    """
    if not serve_installed():
        raise ServeError("transformers serve is not installed: pip install -r requirements-test.txt")
    port = _free_port()
    batching = "--continuous-batching" if continuous_batching else "--no-continuous-batching"
    command = [str(SERVE), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", batching]
    command += ["--format", "quiet", model]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    served = Served(process, f"http://127.0.0.1:{port}/v1", model, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"transformers serve exited with {process.returncode}:\n{served.tail()}")
        try:
            with urllib.request.urlopen(f"{served.url}/models", timeout=2) as response:
                if response.status == 200:
                    return served
        except OSError:
            time.sleep(0.5)
    served.stop()
    raise ServeError(f"transformers serve did not answer within {timeout_s:g} s:\n{served.tail()}")


@contextmanager
def serving(
    model: str, log: Path, *, continuous_batching: bool = False, timeout_s: float = START_TIMEOUT_S
) -> Iterator[Served]:
    """``start`` as a context manager: the server is stopped however the block ends."""
    served = start(model, log, continuous_batching=continuous_batching, timeout_s=timeout_s)
    try:
        yield served
    finally:
        served.stop()


def converted_bundled_model(settings: Settings | None = None, *, convert: Callable[[], object] | None = None) -> Path:
    """The bundled GGUF model's converted folder, which the server loads (it cannot read the GGUF).

    If it is not there yet, ``convert`` makes it (default: loading the in-process model once).
    """
    from rag.generation import TransformersGenerator, converted_copy_exists, gguf_cache_dir

    settings = settings or Settings()
    folder = gguf_cache_dir(Path(settings.resolved_llm_model), Path(settings.model_cache_dir).expanduser())
    if not converted_copy_exists(folder):
        (convert or TransformersGenerator(settings).load)()
    if not converted_copy_exists(folder):
        raise ServeError(f"the bundled model's converted copy was not made in {folder}")
    return folder
