"""Uploads as background jobs, so that they outlive the page run that received them.

Streamlit stops a page's script run when the user leaves the page; an ingest inside that run
was cut off halfway (a staging file left behind, the other files never read). Here the page
only stages each file (``rag.uploads``) and queues a job; one worker thread per process
ingests the jobs in order through ``Ingestor.ingest_staged``, which commits or removes the
staging file. Any page can then show the jobs' states.

A staging file outlives its job only when the process itself stops mid-ingest. The next start
(``UploadJobs.start``) settles each one against the store: a version stored completely is kept,
an unfinished one is queued again (its partial chunks removed first), so an upload survives a
restart; one whose collection is gone is removed. It says so (``cleanup_notice``, a log line).

    >>> jobs = UploadJobs.start(settings.data_dir / "uploads", services_for)
    >>> job = jobs.submit(services, "report.pdf", data)
    >>> jobs.wait_idle(); print(job.describe())
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from rag.config import DEFAULT_COLLECTION
from rag.pipeline import Progress
from rag.records import FileResult, Outcome, plural
from rag.uploads import (
    StagedUpload,
    UploadError,
    find_staging,
    remove_unwritten,
    safe_filename,
    stage_upload,
    staging_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from rag.services import Services

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class JobState(StrEnum):
    QUEUED = "queued"
    READING = "reading"
    EMBEDDING = "embedding"
    DONE = "done"
    FAILED = "failed"


ACTIVE = frozenset({JobState.QUEUED, JobState.READING, JobState.EMBEDDING})


@dataclass(frozen=True)
class Recovered:
    """A staging file an earlier run left behind, and what the start did with it: kept (committed,
    its version was stored completely), resumed (its unfinished version's chunks removed and the
    file queued again) or removed (no collection to add it to, or the store could not be asked)."""

    name: str
    collection: str
    kept: bool
    resumed: bool = False


@dataclass
class UploadJob:
    """One uploaded file on its way into a collection; the worker thread updates it in place."""

    name: str
    collection: str
    state: JobState = JobState.QUEUED
    pages: tuple[int, int] = (0, 0)  # read, of total
    chunks: tuple[int, int] = (0, 0)  # embedded, of total
    result: FileResult | None = None
    error: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    submitted_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    staged: StagedUpload | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        """The state in words: "reading page 3 of 10", "added (2 pages, 9 chunks)", "failed — reason"."""
        if self.state is JobState.READING and self.pages[1]:
            return f"reading page {self.pages[0]} of {self.pages[1]}"
        if self.state is JobState.EMBEDDING and self.chunks[1]:
            return f"embedding {self.chunks[0]}/{self.chunks[1]} chunks"
        if self.state is JobState.DONE and self.result is not None:
            return f"{self.result.outcome.value} ({self.result.size_text()})"
        if self.state is JobState.FAILED:
            return f"failed — {self.error or 'unknown error'}"
        return self.state.value


class UploadJobs:
    """A FIFO queue of upload jobs and the one thread that ingests them (one per app process)."""

    def __init__(
        self, recovered: list[Recovered] | None = None, resume: list[tuple[Services, StagedUpload]] | None = None
    ) -> None:
        self.recovered = recovered or []
        self._jobs: list[UploadJob] = []
        self._queue: queue.Queue[tuple[UploadJob, Services] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._work, name="upload-jobs", daemon=True)
        self._thread.start()
        for services, staged in resume or []:
            job = UploadJob(staged.name, services.settings.collection, staged=staged)
            with self._lock:
                self._jobs.append(job)
                self._queue.put((job, services))

    @classmethod
    def start(cls, uploads_root: Path, services_for: Callable[[str], Services | None] | None = None) -> UploadJobs:
        """Settle what an earlier run left half-done under ``uploads_root``, then start the worker.

        ``services_for(collection)`` gives the services of a collection that exists (None otherwise),
        to check each leftover against the store; without it the leftovers are only removed."""
        remove_unwritten(uploads_root)
        recovered, resume = [], []
        for staged in find_staging(uploads_root):
            collection = _collection_of(staged.staging, uploads_root)
            services = services_for(collection) if services_for is not None else None
            recovered.append(recover(staged, collection, services))
            if recovered[-1].resumed and services is not None:
                resume.append((services, staged))
        for verb, chosen in (
            ("removed", lambda r: not r.kept and not r.resumed),
            ("kept (stored completely)", lambda r: r.kept),
            ("queued again", lambda r: r.resumed),
        ):
            names = [f"{r.collection}/{r.name}" for r in recovered if chosen(r)]
            if names:
                log.warning(
                    "%s %s an earlier run left unfinished: %s",
                    verb,
                    plural(len(names), "staged upload"),
                    ", ".join(names),
                )
        return cls(recovered, resume)

    def cleanup_notice(self) -> str | None:
        """What the start settled, for the Documents page; None when there was nothing."""
        removed = [r.name for r in self.recovered if not r.kept and not r.resumed]
        kept = [r.name for r in self.recovered if r.kept]
        resumed = [r.name for r in self.recovered if r.resumed]
        parts = []
        if resumed:
            parts.append(
                f"The app stopped last time before it finished adding {plural(len(resumed), 'upload')} "
                f"({', '.join(resumed)}): {'it is' if len(resumed) == 1 else 'they are'} being added again "
                "now, and the library keeps any earlier version until then."
            )
        if removed:
            parts.append(
                f"The app stopped last time before it finished adding {plural(len(removed), 'upload')} "
                f"({', '.join(removed)}): their unfinished copies were removed, and the library keeps its "
                "earlier versions. Upload them again to add them."
            )
        if kept:
            parts.append(
                f"{plural(len(kept), 'upload')} ({', '.join(kept)}) had been stored completely when the app "
                "stopped, and were kept."
            )
        return " ".join(parts) or None

    # Submitting and watching -------------------------------------------------------------------

    def submit(self, services: Services, name: str, data: bytes) -> UploadJob:
        """Stage one upload and queue it; returns at once. A file that cannot be accepted (bad name or
        type, too big, the same name still being added) is a failed job with the reason."""
        settings = services.settings
        job = UploadJob(name, settings.collection)
        with self._lock:
            self._jobs.append(job)
            try:
                target = (settings.uploads_dir / safe_filename(name)).resolve()
                busy = {j.staged.staging for j in self._jobs if j.active and j.staged is not None}
                if staging_path(target) in busy:
                    raise UploadError(f"a file named {target.name} is still being added; add it again once it is done")
                job.staged = stage_upload(name, data, settings.uploads_dir, max_bytes=settings.max_file_mb * 1_000_000)
            except UploadError as exc:
                job.state, job.error = JobState.FAILED, str(exc)
                return job
            except OSError as exc:
                job.state, job.error = JobState.FAILED, f"cannot save the upload: {exc.strerror or exc}"
                return job
            self._queue.put((job, services))
        return job

    def jobs(self, collection: str | None = None) -> list[UploadJob]:
        """Every job of this process (of one collection, if given), oldest first."""
        with self._lock:
            return [j for j in self._jobs if collection is None or j.collection == collection]

    def active(self, collection: str | None = None) -> int:
        """How many jobs are queued or being ingested."""
        return sum(j.active for j in self.jobs(collection))

    def forget_finished(self, collection: str | None = None) -> None:
        """Drop finished jobs from the list (the page clears old outcomes after a delete)."""
        with self._lock:
            self._jobs = [j for j in self._jobs if j.active or (collection is not None and j.collection != collection)]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is queued or running; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: not any(j.active for j in self._jobs), timeout)

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        self._queue.put(None)

    # The worker thread --------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, services = item
            try:
                self._run(job, services)
            except Exception as exc:  # never let one job stop the worker: the jobs behind it would hang
                log.exception("upload job %s (%s) broke the worker's step", job.id, job.name)
                self._set(job, state=JobState.FAILED, error=str(exc) or type(exc).__name__, finished_at=time.time())
            with self._idle:
                self._idle.notify_all()

    def _run(self, job: UploadJob, services: Services) -> None:
        assert job.staged is not None
        self._set(job, state=JobState.READING)
        progress = Progress(on_pages=lambda done, total: self._set(job, pages=(done, total)))
        progress.on_chunks = lambda done, total: self._set(job, state=JobState.EMBEDDING, chunks=(done, total))
        try:
            result = services.ingestor().ingest_staged(job.staged, progress=progress)
        except Exception as exc:  # the store went away, say: this job fails, the next still runs
            log.exception("upload job %s (%s) failed", job.id, job.name)
            job.staged.discard()
            self._set(job, state=JobState.FAILED, error=str(exc) or type(exc).__name__, finished_at=time.time())
            return
        if result.outcome is Outcome.FAILED:
            self._set(job, result=result, state=JobState.FAILED, error=result.error, finished_at=time.time())
        else:
            self._set(job, result=result, state=JobState.DONE, finished_at=time.time())
        log.info("upload %s into %s: %s", job.name, job.collection, job.describe())

    def _set(self, job: UploadJob, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)


def recover(staged: StagedUpload, collection: str, services: Services | None) -> Recovered:
    """Settle a leftover staging file against its collection's store (``services``; None when the
    collection is gone). A version stored completely is committed; an unfinished one has its
    chunks removed and is to be queued again (resumed), once: one that a restart queued again
    already goes, as does one without a store to ask."""
    try:
        if services is not None:
            content_hash = hashlib.sha256(staged.staging.read_bytes()).hexdigest()
            ingestor = services.ingestor()
            _, complete = ingestor.store.version_state(staged.name, content_hash, ingestor.chunking)
            if complete:
                staged.commit()
                return Recovered(staged.name, collection, kept=True)
            ingestor.store.discard_version(staged.name, content_hash, ingestor.chunking)
            if not staged.resumed_mark.exists():
                staged.resumed_mark.touch()
                return Recovered(staged.name, collection, kept=False, resumed=True)
            log.warning("the upload %s, added again after a restart, stopped the app again: removed", staged.name)
    except Exception:  # the store may be down: the file still goes, and a later upload replaces the rest
        log.warning("could not check the leftover upload %s against the store", staged.staging, exc_info=True)
    staged.discard()
    return Recovered(staged.name, collection, kept=False)


def _collection_of(staging: Path, uploads_root: Path) -> str:
    """``uploads/`` holds the default collection's uploads, ``uploads/<name>/`` another's."""
    relative = staging.parent.relative_to(uploads_root)
    return relative.parts[0] if relative.parts else DEFAULT_COLLECTION
