"""Keep a collection in sync with a folder: ``python -m ingest --watch DIR``.

watchdog reports file-system events; each touched path waits until it has been quiet for
``settle_s`` and its size and modification time stopped changing, so a file that is still
being copied is read once, complete. New and changed files go through the normal ingest
(content hashes make an unchanged file a no-op); a deleted file's document is removed. On
start the watcher catches up with what changed while it was not running: it ingests the
folder and removes documents whose file under the folder is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from rag.loading import is_supported
from rag.pipeline import Deletion, Ingestor, collect_files, delete_document
from rag.records import FileResult, Outcome

log = logging.getLogger(__name__)

Stat = tuple[int, int] | None  # (size, mtime_ns), or None for a missing file
Change = FileResult | Deletion


@dataclass
class ChangeCounts:
    """What a catch-up or a watch session did, for its summary line."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def summary(self) -> str:
        order = ["added", "replaced", "unchanged", "removed", "failed"]
        return ", ".join(f"{self.counts.get(k, 0)} {k}" for k in order)


def _stat(path: Path) -> Stat:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if path.is_file() else None


def _watched(path: Path) -> bool:
    """A file the watcher cares about: a supported type, not hidden (editor swap files, staging copies)."""
    return is_supported(path) and not any(part.startswith(".") for part in path.parts[-1:])


class _Events(FileSystemEventHandler):
    """Turns watchdog events into "look at this path later" calls (runs on watchdog's thread)."""

    def __init__(self, touch: Callable[[Path], None], touch_tree: Callable[[Path], None]) -> None:
        self.touch = touch
        self.touch_tree = touch_tree

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in {"opened", "closed_no_write"}:
            return
        if event.is_directory and event.event_type == "modified":
            return  # a file inside changed: that file has its own event
        paths = [event.src_path, *([event.dest_path] if getattr(event, "dest_path", "") else [])]
        for raw in paths:
            path = Path(raw.decode() if isinstance(raw, bytes) else raw)
            (self.touch_tree if event.is_directory else self.touch)(path)


class FolderWatcher:
    """One folder kept in sync with the ingestor's collection.

    ``on_change`` hears of every file ingested (its ``FileResult``) and every document removed
    (its ``Deletion``); the command prints a line for each. ``settle_s``: how long a path must be
    quiet, its size and modification time unchanged, before it is read.
    """

    def __init__(
        self,
        ingestor: Ingestor,
        folder: Path,
        *,
        settle_s: float = 1.0,
        on_change: Callable[[Change], None] = lambda change: None,
    ) -> None:
        self.ingestor = ingestor
        self.store = ingestor.store
        self.folder = folder.resolve()
        self.settle_s = settle_s
        self.on_change = on_change
        self.state_dir = ingestor.settings.data_dir.resolve()  # the app's own files: uploads, Milvus Lite
        self._pending: dict[Path, tuple[float, Stat]] = {}  # path -> (when to look, stat seen last)
        self._lock = threading.Lock()

    # Sources under the folder -------------------------------------------------------------

    def _path_of(self, source: str) -> Path:
        path = Path(source)
        return path if path.is_absolute() else Path.cwd() / path

    def stored_sources(self) -> dict[Path, str]:
        """Stored documents whose file lies under the folder, by path.

        An uploaded document (kept in the data folder under its plain name) is never one of them,
        even when the folder is the working folder."""
        uploads = self.ingestor.settings.uploads_dir
        found = {}
        for document in self.store.list_documents():
            path = self._path_of(document.source)
            if path.is_relative_to(self.folder) and not (uploads / document.source).is_file():
                found[path] = document.source
        return found

    def _wanted(self, path: Path) -> bool:
        """A supported, visible file outside the data folder (whose uploads are documents already)."""
        return _watched(path) and not path.resolve().is_relative_to(self.state_dir)

    # Catch-up -----------------------------------------------------------------------------

    def catch_up(self, stop: threading.Event | None = None) -> ChangeCounts:
        """Ingest every file in the folder (unchanged ones are skipped by their content hash) and
        remove documents whose file under the folder no longer exists. A set ``stop`` ends it
        between files; the next catch-up finishes the job."""
        counts = ChangeCounts()
        files, _ = collect_files([self.folder])
        for path in filter(self._wanted, files):
            if stop is not None and stop.is_set():
                return counts
            result = self.ingestor.ingest_file(path)
            counts.add(result.outcome.value)
            if result.outcome is not Outcome.UNCHANGED:
                self.on_change(result)
        for path, source in sorted(self.stored_sources().items()):
            if not path.exists():
                self._remove(source)
                counts.add("removed")
        return counts

    # Live changes -------------------------------------------------------------------------

    def touch(self, path: Path) -> None:
        """Look at ``path`` once it has been quiet for ``settle_s`` (any event restarts the wait)."""
        if not self._wanted(path):
            return
        with self._lock:
            self._pending[path] = (time.monotonic() + self.settle_s, _stat(path))

    def touch_tree(self, folder: Path) -> None:
        """A folder appeared, moved or vanished: look at every file in it and every document under it."""
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file():
                    self.touch(path)
        for path in self.stored_sources():
            if path.is_relative_to(folder):
                self.touch(path)

    def process_due(self) -> int:
        """Handle every path that has settled; returns how many were handled."""
        now = time.monotonic()
        due = []
        with self._lock:
            for path, (when, seen) in list(self._pending.items()):
                if when > now:
                    continue
                current = _stat(path)
                if current != seen:  # still being written: wait another settle period
                    self._pending[path] = (now + self.settle_s, current)
                    continue
                del self._pending[path]
                due.append((path, current))
        for path, current in due:
            self._handle(path, exists=current is not None)
        return len(due)

    def _handle(self, path: Path, *, exists: bool) -> None:
        if exists:
            self.on_change(self.ingestor.ingest_file(path))
            return
        source = self.stored_sources().get(path)
        if source is not None:
            self._remove(source)

    def _remove(self, source: str) -> None:
        self.on_change(delete_document(self.ingestor.settings, self.store, source))

    def run(self, stop: threading.Event, *, tick_s: float = 0.2) -> None:
        """Watch until ``stop`` is set (the command sets it on Ctrl-C); then stop watchdog's thread."""
        observer = Observer()
        observer.schedule(_Events(self.touch, self.touch_tree), str(self.folder), recursive=True)
        observer.start()
        try:
            while not stop.is_set():
                self.process_due()
                stop.wait(tick_s)
        finally:
            observer.stop()
            observer.join(timeout=10)
