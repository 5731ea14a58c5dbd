"""``python -m ingest --watch DIR``: a real subprocess, real file-system events, real Milvus Lite.

The test serves the data folder with the app's local Milvus server (as ``make app`` does), so
it can read the store while the watcher writes to it. Each start of the command loads the
embedding model, so one test walks through the whole life of a watched folder.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rag.collections import collection_names, delete_collection
from rag.config import Settings
from rag.local_server import LocalServer
from rag.store import DocumentStore

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "watched"
SETTLE_S = 1.0
START_S = 240  # loading the model on a busy two-core machine
CHANGE_S = 90

FIRST_HALF = "Blue whales feed on krill in the cold waters of the Southern Ocean. " * 6
SECOND_HALF = "The second half of this note says that whale song carries across whole ocean basins. " * 6
LINE = re.compile(r"^([+~=!-]) (added|replaced|unchanged|failed|removed) +(\S+)")


class Watcher:
    """The command as a subprocess, its stdout read line by line on a thread."""

    def __init__(self, cwd: Path, folder: str) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env = {**clean, "PYTHONPATH": str(ROOT), "RAG_DATA_DIR": str(cwd / "state"), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest", "--watch", folder, "--collection", COLLECTION, "--settle", str(SETTLE_S)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = CHANGE_S) -> str:
        """The next line matching ``pattern``; every line read on the way is kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; seen {self.seen}; stderr:\n{self.stderr_tail()}")

    def quiet_for(self, seconds: float) -> list[str]:
        """Lines printed during the next ``seconds`` (none, when nothing changed)."""
        deadline, got = time.monotonic() + seconds, []
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
        self.seen.extend(got)
        return got

    def interrupt(self) -> int:
        """Ctrl-C, and the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("the watcher ignored Ctrl-C") from None

    def stderr_tail(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read()[-3000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def changes(lines: list[str]) -> list[tuple[str, str]]:
    """(outcome, file name) for each per-change line."""
    return [(m[2], Path(m[3]).name) for m in map(LINE.match, lines) if m]


def stored(settings: Settings, embedder) -> dict[str, str]:
    """File name -> the document's stored text (its chunks in order), read through the local server."""
    store = DocumentStore(settings, embedder).open()
    try:
        found = {}
        for document in store.list_documents():
            rows = sorted(store.rows_of(document.source, ["text", "chunk_index"]), key=lambda r: r["chunk_index"])
            found[Path(document.source).name] = " ".join(r["text"] for r in rows)
        return found
    finally:
        store.close()


def slow_copy(path: Path, first: str, second: str, pause_s: float) -> None:
    """Write a file in two parts with a pause between, as a slow copy does."""
    with open(path, "w") as handle:
        handle.write(first)
        handle.flush()
        os.fsync(handle.fileno())
        time.sleep(pause_s)
        handle.write(second)


@pytest.mark.slow
@pytest.mark.server
def test_watch_adds_replaces_removes_stops_and_catches_up(tmp_path: Path, embedder) -> None:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Sourdough bread rises with wild yeast and lactic bacteria. " * 5)
    (folder / "e.md").write_text("# Volcanoes\n\nBasalt flows cool into columns. " * 5)
    (folder / "skip.exe").write_bytes(b"MZ")  # not a supported type: never looked at
    settings = Settings(data_dir=tmp_path / "state", collection=COLLECTION)
    server = LocalServer(Path(settings.resolved_milvus_uri))
    server.start()
    watcher = Watcher(tmp_path, "inbox")
    try:
        # Start: the folder is caught up with, one line per file, then it watches.
        watcher.wait_for(r"^caught up with .*inbox in 'watched': 2 added, 0 replaced, 0 unchanged, 0 removed", START_S)
        watcher.wait_for(r"^watching for changes")
        assert sorted(changes(watcher.seen)) == [("added", "a.txt"), ("added", "e.md")]
        assert sorted(stored(settings, embedder)) == ["a.txt", "e.md"]

        # A file copied slowly, in two writes, is read once and complete.
        slow_copy(folder / "sub" / "b.txt", FIRST_HALF, SECOND_HALF, pause_s=SETTLE_S * 0.6)
        watcher.wait_for(r"^\+ added +inbox/sub/b\.txt \(1 page, \d+ chunks?\)")
        assert watcher.quiet_for(SETTLE_S * 3) == []  # no second read of the same file
        text = stored(settings, embedder)["b.txt"]
        assert "Southern Ocean" in text and "whole ocean basins" in text

        # Changed: replaced; deleted: removed; one line each.
        (folder / "a.txt").write_text("Sourdough starter needs feeding with flour and water every day. " * 5)
        watcher.wait_for(r"^~ replaced +inbox/a\.txt")
        (folder / "sub" / "b.txt").unlink()
        watcher.wait_for(r"^- removed +inbox/sub/b\.txt \(\d+ chunks?\)")
        assert watcher.quiet_for(SETTLE_S * 2) == []
        documents = stored(settings, embedder)
        assert sorted(documents) == ["a.txt", "e.md"]
        assert "feeding with flour" in documents["a.txt"] and "wild yeast" not in documents["a.txt"]
        assert changes(watcher.seen).count(("added", "b.txt")) == 1

        # A folder moved in brings its files; removing the folder removes their documents.
        staging = tmp_path / "staging" / "papers"
        staging.mkdir(parents=True)
        (staging / "p1.txt").write_text("Tardigrades survive drying out by making protective sugars. " * 5)
        (staging / "p2.md").write_text("# Comets\n\nComet tails point away from the sun. " * 5)
        staging.rename(folder / "papers")
        for name in ("p1.txt", "p2.md"):
            watcher.wait_for(rf"^\+ added +inbox/papers/{re.escape(name)}")
        shutil.rmtree(folder / "papers")
        for _ in range(2):
            watcher.wait_for(r"^- removed +inbox/papers/")
        assert sorted(stored(settings, embedder)) == ["a.txt", "e.md"]

        # Ctrl-C stops it cleanly.
        assert watcher.interrupt() == 0
        assert watcher.quiet_for(1)[-1:] == ["stopped"]
        assert "Traceback" not in watcher.stderr_tail()

        # Changes while it was not running: the restart catches up with them.
        (folder / "c.md").write_text("# Tides\n\nThe moon pulls the oceans into two bulges. " * 5)
        (folder / "a.txt").write_text("Rye bread needs a sour starter and a long, slow proof. " * 5)
        (folder / "e.md").unlink()
        watcher = Watcher(tmp_path, "inbox")
        watcher.wait_for(r"^caught up .*: 1 added, 1 replaced, 0 unchanged, 1 removed", START_S)
        assert sorted(changes(watcher.seen)) == [("added", "c.md"), ("removed", "e.md"), ("replaced", "a.txt")]
        documents = stored(settings, embedder)
        assert sorted(documents) == ["a.txt", "c.md"]
        assert "Rye bread" in documents["a.txt"]
        watcher.wait_for(r"^watching for changes")

        # Its collection deleted while it watches: the next change stops it with the reason.
        delete_collection(settings, COLLECTION)
        (folder / "c.md").write_text("# Tides\n\nSpring tides follow the new and the full moon. " * 5)
        assert watcher.process.wait(timeout=CHANGE_S) == 2
        assert "the collection 'watched' no longer exists" in watcher.stderr_tail()
        assert COLLECTION not in collection_names(settings)  # not brought back by the watcher
    finally:
        watcher.kill()
        server.stop()


def test_catch_up_in_the_working_folder_leaves_uploaded_documents_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings, ingestor
) -> None:
    """Watching the working folder: an uploaded document is stored under its plain name, as a file
    in that folder would be, yet it is no file of the folder and the catch-up must not remove it;
    nor is its kept copy in the data folder (inside the watched one here) ingested a second time."""
    from rag.pipeline import Deletion
    from rag.watch import FolderWatcher

    monkeypatch.chdir(tmp_path)
    assert ingestor.ingest_upload("uploaded.txt", FIRST_HALF.encode()).outcome.value == "added"
    (tmp_path / "here.txt").write_text(SECOND_HALF)
    (tmp_path / "gone.txt").write_text("A file that is deleted while nobody watches. " * 5)
    assert ingestor.ingest_file(tmp_path / "gone.txt").outcome.value == "added"
    (tmp_path / "gone.txt").unlink()
    seen = []
    counts = FolderWatcher(ingestor, tmp_path, on_change=seen.append).catch_up()
    assert counts.counts == {"added": 1, "removed": 1}
    assert [(type(c).__name__, c.source) for c in seen] == [("FileResult", "here.txt"), ("Deletion", "gone.txt")]
    assert isinstance(seen[1], Deletion)
    assert sorted(d.source for d in ingestor.store.list_documents()) == ["here.txt", "uploaded.txt"]
