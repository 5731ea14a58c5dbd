"""Ingest, end to end: load -> chunk -> embed -> store, one file at a time.

The command line and the upload page both call ``Ingestor`` (``ingest``, ``ingest_upload``)
and ``delete_document``; neither touches pypdf, the model or Milvus. Each file gets its
own outcome; a bad file never stops the batch, and nothing of it is stored. A stored
version is the file's content hash with the chunker's signature, so changed chunk
settings re-chunk every document on its next ingest ("replaced").
"""

from __future__ import annotations

import glob
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.chunking import Chunker, chunk_id
from rag.config import Settings
from rag.embedding import Embedder
from rag.loading import LoadError, is_supported, load_document, source_key
from rag.parallel_reading import PdfReaderPool, pdf_page_total
from rag.readers.base import ReadOptions
from rag.records import Chunk, FileResult, IngestReport, LoadedDocument, Outcome
from rag.store import DocumentStore, VersionState
from rag.uploads import StagedUpload, UploadError, remove_upload, stage_upload

log = logging.getLogger(__name__)

# Small files are stored in batches: one version check and one stale-chunk delete for up to
# BATCH_FILES files (or BATCH_CHARS characters of text), and their chunks embedded together.
BATCH_FILES = 256
BATCH_CHARS = 1_000_000


@dataclass(frozen=True)
class Checked:
    """A file's version check, made on its bytes before it is read."""

    source: str
    content_hash: str
    state: VersionState


@dataclass
class Progress:
    """Hooks a front end can fill to show progress; all optional."""

    on_files: Callable[[int], None] = lambda total: None
    on_file_start: Callable[[Path], None] = lambda path: None
    on_chunks: Callable[[int, int], None] = lambda done, total: None
    on_file_done: Callable[[FileResult], None] = lambda result: None
    on_pages: Callable[[int, int], None] = lambda done, total: None  # pages of the file read (OCR is slow)


def collect_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[FileResult]]:
    """Expand files, folders (recursively, supported types only) and glob patterns.

    Returns the files to ingest, in a stable order without repeats, and a failed result
    for each argument that matched nothing.
    """
    files: list[Path] = []
    missing: list[FileResult] = []
    for raw in paths:
        text = str(raw)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            found = [m for m in matches if m.is_file()]
            found += [f for m in matches if m.is_dir() for f in _walk(m)]
        else:
            path = Path(text)
            found = _walk(path) if path.is_dir() else [path] if path.exists() else []
        if not found:
            missing.append(FileResult(Path(text), text, Outcome.FAILED, error="no such file, folder or match"))
        files.extend(found)
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return [Path(f) for f in unique], missing


def new_result(document: LoadedDocument, path: Path) -> FileResult:
    """A document's result before it is stored: added, with its pages."""
    result = FileResult(path, document.source, Outcome.ADDED, pages=document.page_total)
    result.ocr_pages, result.unread_pages = len(document.ocr_pages), document.unread_pages
    return result


def checked_state(checked: Mapping[Path, Checked], path: Path, document: LoadedDocument) -> VersionState | None:
    """The version check made before ``document`` was read, if it was made on the same bytes and name."""
    check = checked.get(path)
    if check is None or (check.source, check.content_hash) != (document.source, document.content_hash):
        return None
    return check.state


def batch_chars(batch: list[tuple[Path, LoadedDocument | FileResult]]) -> int:
    return sum(len(page.text) for _, d in batch if isinstance(d, LoadedDocument) for page in d.pages)


def _walk(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_supported(p) and not p.name.startswith("."))


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    """The chunker for these settings; raises ``ChunkSizeError`` when they do not fit the model."""
    return Chunker(
        embedder.count_tokens,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        max_tokens=embedder.max_tokens,
    )


def chunking_signature(chunker: Chunker) -> str:
    """What a stored version records of its chunking: splitter version, size and overlap."""
    signature = getattr(chunker, "signature", None)
    if signature:
        return str(signature)
    overlap = getattr(getattr(chunker, "_splitter", None), "_chunk_overlap", "?")
    return f"{chunker.chunk_size}/{overlap}"


@dataclass(frozen=True)
class Deletion:
    """What ``delete_document`` removed."""

    source: str
    chunks: int
    upload_removed: bool


def delete_document(settings: Settings, store: DocumentStore, source: str) -> Deletion:
    """Delete a document everywhere: its chunks in the store and its uploaded copy (if it was uploaded).

    The Documents page and ``python -m ingest --delete`` both call this."""
    chunks = store.delete(source)
    return Deletion(source, chunks, remove_upload(source, settings.uploads_dir))


class Ingestor:
    """Turns files into stored chunks.

    >>> ingestor = Ingestor(settings, embedder, store)
    >>> report = ingestor.ingest(["docs/"])
    >>> print(report.summary())
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: DocumentStore,
        *,
        pdf_workers: int | None = None,
        parallel_min_pages: int | None = None,
    ) -> None:
        """``pdf_workers`` and ``parallel_min_pages`` override ``RAG_PDF_WORKERS`` and ``RAG_PARALLEL_MIN_PAGES``."""
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self._chunker: Chunker | None = None
        self.pdf_pool = PdfReaderPool(pdf_workers or settings.pdf_workers or None)
        self.parallel_min_pages = settings.parallel_min_pages if parallel_min_pages is None else parallel_min_pages

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = build_chunker(self.settings, self.embedder)
        return self._chunker

    @property
    def chunking(self) -> str:
        """The signature recorded with every version this ingestor writes."""
        return chunking_signature(self.chunker)

    def ingest_upload(self, name: str, data: bytes, *, progress: Progress | None = None) -> FileResult:
        """Ingest an uploaded file and keep it under ``settings.uploads_dir`` (stored under its plain name).

        The bytes are staged beside their final place and replace a stored file of that name only
        once they ingested, so a failed upload never replaces a good one."""
        try:
            staged = stage_upload(
                name, data, self.settings.uploads_dir, max_bytes=self.settings.max_file_mb * 1_000_000
            )
        except UploadError as exc:
            return FileResult(Path(name), name, Outcome.FAILED, error=str(exc))
        return self.ingest_staged(staged, progress=progress)

    def ingest_staged(self, staged: StagedUpload, *, progress: Progress | None = None) -> FileResult:
        """Ingest an upload already staged (``rag.upload_jobs`` stages it in the page, ingests it later):
        the staging file is committed once it ingested, and removed otherwise."""
        try:
            result = self.ingest_file(staged.staging, source=staged.name, progress=progress)
        except BaseException:
            staged.discard()
            raise
        if result.outcome is Outcome.FAILED:
            staged.discard()
        else:
            result.path = staged.commit()
        return result

    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        progress: Progress | None = None,
        sources: dict[Path, str] | None = None,
    ) -> IngestReport:
        """Ingest every file under ``paths``. ``sources`` may name the stored key of a file
        (the upload page stores files under their uploaded name)."""
        progress = progress or Progress()
        started = time.perf_counter()
        self.chunker  # noqa: B018 (fail fast, before any file, on a chunk size the model cannot read)
        named = {Path(path).resolve(): source for path, source in (sources or {}).items()}
        files, report_missing = collect_files(paths)
        report = IngestReport(files=list(report_missing))
        progress.on_files(len(files) + len(report_missing))
        for result in report_missing:
            progress.on_file_done(result)

        def finish(results: list[FileResult]) -> None:
            for result in results:
                report.files.append(result)
                progress.on_file_done(result)

        batch: list[tuple[Path, LoadedDocument | FileResult]] = []  # read, not stored yet, in order
        checked: dict[Path, Checked] = {}
        unchanged: dict[Path, FileResult] = {}
        try:
            for number, path in enumerate(files):
                if number % BATCH_FILES == 0:  # one version check for the next files, before reading any
                    checked = self.check_versions({p: named.get(p) for p in files[number : number + BATCH_FILES]})
                    unchanged = self.unchanged_results(checked)
                progress.on_file_start(path)
                if path in unchanged:
                    batch.append((path, unchanged[path]))  # in its place among the files read
                    continue
                big = self._big_pdf(path)
                if big is not None:
                    finish(self._store_batch(batch, progress, checked))
                    batch = []
                    check = checked.get(path)
                    finish([self._ingest_big_pdf(path, named.get(path), *big, progress=progress, checked=check)])
                    continue
                loaded = self.load_file(path, source=named.get(path), progress=progress)
                if isinstance(loaded, LoadedDocument) and loaded.source in {
                    d.source for _, d in batch if isinstance(d, LoadedDocument)
                }:
                    finish(self._store_batch(batch, progress, checked))  # one version of a source per batch
                    batch = []
                batch.append((path, loaded))
                if len(batch) >= BATCH_FILES or batch_chars(batch) >= BATCH_CHARS:
                    finish(self._store_batch(batch, progress, checked))
                    batch = []
            finish(self._store_batch(batch, progress, checked))
        finally:
            self.pdf_pool.close()
        report.seconds = time.perf_counter() - started
        return report

    def ingest_file(self, path: Path, *, source: str | None = None, progress: Progress | None = None) -> FileResult:
        """Load, chunk, embed and store one file; never raises for a bad file. A file stored
        already in this exact version is reported unchanged without being read. A big PDF goes
        to the reader pool, as in ``ingest`` (uploads too), and the pool is closed on return:
        the upload jobs make an ingestor per file, and its worker processes must not outlive it."""
        progress = progress or Progress()
        checked = self.check_versions({path: source})
        unchanged = self.unchanged_results(checked)
        if path in unchanged:
            return unchanged[path]
        big = self._big_pdf(path)
        if big is None:
            return self._ingest_inline(path, source, progress, checked)
        try:
            return self._ingest_big_pdf(path, source, *big, progress=progress, checked=checked.get(path))
        finally:
            self.pdf_pool.close()

    def _ingest_inline(
        self, path: Path, source: str | None, progress: Progress, checked: Mapping[Path, Checked]
    ) -> FileResult:
        """One file read in this process, then chunked, embedded and stored."""
        loaded = self.load_file(path, source=source, progress=progress)
        if isinstance(loaded, FileResult):
            return loaded
        return self.ingest_document(loaded, path=path, progress=progress, state=checked_state(checked, path, loaded))

    def check_versions(self, paths: Mapping[Path, str | None]) -> dict[Path, Checked]:
        """Version checks of files (path -> stored name, None: the usual one) made on their bytes
        before any reading, so that a stored scan is not OCR'd again to learn it is unchanged.
        One round trip for all. Files that cannot be checked (unreadable, empty, too big, two
        files under one name) are left out: the reader says why, or the usual check decides."""
        hashes: dict[Path, tuple[str, str]] = {}
        for path, source in paths.items():
            digest = self._content_hash(path)
            if digest is not None:
                hashes[path] = (source or source_key(path), digest)
        names = [name for name, _ in hashes.values()]
        repeated = {name for name in names if names.count(name) > 1}
        versions = {name: digest for name, digest in hashes.values() if name not in repeated}
        if not versions:
            return {}
        states = self.store.version_states(versions, self.chunking)
        return {
            path: Checked(name, digest, states[name]) for path, (name, digest) in hashes.items() if name in versions
        }

    def unchanged_results(self, checked: Mapping[Path, Checked]) -> dict[Path, FileResult]:
        """Results of the checked files stored completely in this exact version (pages as stored)."""
        return {
            path: FileResult(path, check.source, Outcome.UNCHANGED, chunks=check.state.chunks, pages=check.state.pages)
            for path, check in checked.items()
            if check.state.complete
        }

    def _content_hash(self, path: Path) -> str | None:
        """The SHA-256 of a supported file's bytes, as ``load_document`` records it; None where it cannot be read."""
        try:
            if not is_supported(path) or not path.is_file():
                return None
            size = path.stat().st_size
            if size == 0 or size > self.settings.max_file_mb * 1_000_000:
                return None
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None

    def load_file(
        self, path: Path, *, source: str | None = None, progress: Progress | None = None
    ) -> LoadedDocument | FileResult:
        """Read one file: the document, or a failed result that says why; never raises for a bad file."""
        progress = progress or Progress()
        try:
            options = ReadOptions(ocr=self.settings.ocr, on_page=progress.on_pages)
            document = load_document(
                path, source=source, max_bytes=self.settings.max_file_mb * 1_000_000, options=options
            )
        except LoadError as exc:
            return FileResult(path, source or source_key(path), Outcome.FAILED, error=str(exc))
        except OSError as exc:
            error = f"cannot read the file: {exc.strerror}"
            return FileResult(path, source or source_key(path), Outcome.FAILED, error=error)
        return document

    def ingest_document(
        self,
        document: LoadedDocument,
        *,
        path: Path | None = None,
        progress: Progress | None = None,
        state: VersionState | None = None,
    ) -> FileResult:
        """Chunk, embed and store a document already in memory (the evaluation commands use this).
        ``state``: the version check already made on these bytes, if any."""
        progress = progress or Progress()
        path = path or Path(document.source)
        result = new_result(document, path)
        if state is None:
            known, complete = self.store.version_state(document.source, document.content_hash, self.chunking)
        else:
            known, complete = state.known, state.complete
        if complete:
            result.outcome = Outcome.UNCHANGED
            result.chunks = self.store.count(document.source)
            return result
        chunks = self.chunker.split_document(document)
        if not chunks:
            result.outcome, result.error = Outcome.FAILED, "no text left after cleaning"
            return result
        try:
            self._embed_and_store(chunks, progress)
        except Exception as exc:
            # Chunks of the new version may be partly written: remove them, keep the old version.
            log.exception("ingest of %s failed", path)
            self._discard_partial(document.source, document.content_hash, replaced=known)
            result.outcome, result.error = Outcome.FAILED, f"could not store it: {exc}"
            return result
        result.outcome = Outcome.REPLACED if known else Outcome.ADDED
        result.chunks = len(chunks)
        return result

    def ingest_documents(
        self, documents: Sequence[LoadedDocument], progress: Progress | None = None
    ) -> list[FileResult]:
        """Many small in-memory documents in one embedding pass (a corpus for evaluation, say).

        Unchanged documents are skipped; if the write fails, every document counts as failed
        and a rerun finishes the job (writes are upserts).
        """
        progress = progress or Progress()
        results, pending = [], []
        for document in documents:
            result = FileResult(Path(document.source), document.source, Outcome.ADDED, pages=document.page_total)
            known, complete = self.store.version_state(document.source, document.content_hash, self.chunking)
            chunks = [] if complete else self.chunker.split_document(document)
            result.outcome = Outcome.UNCHANGED if complete else Outcome.REPLACED if known else Outcome.ADDED
            if not complete and not chunks:
                result.outcome, result.error = Outcome.FAILED, "no text left after cleaning"
            result.chunks = len(chunks)
            results.append(result)
            pending.extend(chunks)
        try:
            self._embed_and_store(pending, progress)
        except Exception as exc:
            log.exception("batch ingest failed")
            for result in results:
                if result.outcome is not Outcome.UNCHANGED:
                    result.outcome, result.error = Outcome.FAILED, f"could not store it: {exc}"
        return results

    def _embed_and_store(
        self, chunks: list[Chunk], progress: Progress, embedded: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Embed in groups, longest texts first, while a background thread writes the previous group.

        Sorting by length over all the chunks keeps padding as low as one ``encode`` call over
        all texts would; progress is still reported per group. ``embedded``: vectors already
        made (by chunk id), written first. Other versions of the documents are removed only
        after every chunk of these is written, in one delete per batch of documents.
        """
        group = self.settings.embedding_batch_size * 4
        embedded = embedded or {}
        ready = [c for c in chunks if c.id in embedded]
        order = ready + sorted((c for c in chunks if c.id not in embedded), key=lambda c: len(c.text), reverse=True)
        added_at = int(time.time())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as writer:
            writing: Future | None = None
            for start in range(0, len(order), group):
                part = order[start : start + group]
                new = [c for c in part if c.id not in embedded]
                fresh = iter(self.embedder.encode([c.text for c in new]) if new else ())
                vectors = np.stack([embedded[c.id] if c.id in embedded else next(fresh) for c in part])
                if writing is not None:
                    writing.result()  # one write in flight at a time; raises a write error here
                writing = writer.submit(self.store.upsert, part, vectors, added_at=added_at, chunking=self.chunking)
                progress.on_chunks(min(start + group, len(order)), len(order))
            if writing is not None:
                writing.result()
        firsts = list({c.source: c for c in chunks if c.index == 0}.values())
        if firsts:
            self.store.remove_stale_many(firsts, chunking=self.chunking)

    def _store_batch(
        self,
        batch: list[tuple[Path, LoadedDocument | FileResult]],
        progress: Progress,
        checked: Mapping[Path, Checked] | None = None,
    ) -> list[FileResult]:
        """Store files read together, results in their order: one version check (the one made
        before reading, where the bytes read are the bytes checked), one embedding pass, one
        stale-chunk delete. If the write fails, every file being written fails and none of its
        new chunks stay (the old versions do)."""
        checked = checked or {}
        documents = [(path, d) for path, d in batch if isinstance(d, LoadedDocument)]
        if len(documents) <= 1:  # one file: the per-file path, exactly
            return [
                d
                if isinstance(d, FileResult)
                else self.ingest_document(d, path=path, progress=progress, state=checked_state(checked, path, d))
                for path, d in batch
            ]
        states = {d.source: state for path, d in documents if (state := checked_state(checked, path, d)) is not None}
        unchecked = {d.source: d.content_hash for _, d in documents if d.source not in states}
        if unchecked:
            states.update(self.store.version_states(unchecked, self.chunking))
        results: dict[int, FileResult] = {}
        pending: list[Chunk] = []
        writing: list[tuple[FileResult, LoadedDocument, bool]] = []
        for path, document in documents:
            result = results[id(document)] = new_result(document, path)
            state = states[document.source]
            if state.complete:
                result.outcome, result.chunks = Outcome.UNCHANGED, state.chunks
                continue
            chunks = self.chunker.split_document(document)
            if not chunks:
                result.outcome, result.error = Outcome.FAILED, "no text left after cleaning"
                continue
            result.outcome = Outcome.REPLACED if state.known else Outcome.ADDED
            result.chunks = len(chunks)
            pending.extend(chunks)
            writing.append((result, document, state.known))
        try:
            self._embed_and_store(pending, progress)
        except Exception as exc:
            log.exception("ingest of a batch of %d files failed", len(writing))
            for result, document, known in writing:
                self._discard_partial(document.source, document.content_hash, replaced=known)
                result.outcome, result.error, result.chunks = Outcome.FAILED, f"could not store it: {exc}", 0
        return [d if isinstance(d, FileResult) else results[id(d)] for _, d in batch]

    def _big_pdf(self, path: Path) -> tuple[bytes, int] | None:
        """The bytes and page count of a PDF for the reader pool (many pages, plainly readable)."""
        if path.suffix.lower() != ".pdf" or self.parallel_min_pages <= 0:
            return None
        try:
            if not path.is_file() or path.stat().st_size > self.settings.max_file_mb * 1_000_000:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        pages = pdf_page_total(data)
        return (data, pages) if pages is not None and pages >= self.parallel_min_pages else None

    def _ingest_big_pdf(
        self,
        path: Path,
        source: str | None,
        data: bytes,
        page_total: int,
        *,
        progress: Progress,
        checked: Checked | None = None,
    ) -> FileResult:
        """A big PDF read by the worker pool, range by range, each range chunked and its chunks
        embedded as they arrive. Rows carry the document's chunk count, so writing starts once
        the last page is read (vectors wait in memory until then); a failure before that writes
        nothing. Pages are read as the inline reader reads them, OCR included (in the workers).
        Progress is pages while reading, then chunks as they are written (those embedded while
        reading come first): the chunk total is known only once the last page is read."""
        title = Path(source).name if source else path.name  # as load_document names it (uploads: not the staging file)
        source = source or source_key(path)
        content_hash = hashlib.sha256(data).hexdigest()
        result = FileResult(path, source, Outcome.ADDED, pages=page_total)
        if checked is not None and (checked.source, checked.content_hash) == (source, content_hash):
            known, complete = checked.state.known, checked.state.complete  # checked before reading
        else:
            known, complete = self.store.version_state(source, content_hash, self.chunking)
        if complete:
            result.outcome, result.chunks = Outcome.UNCHANGED, self.store.count(source)
            return result
        located: list[tuple[int, str]] = []  # (page, text) of every chunk, in order
        vectors: list[np.ndarray] = []  # of located[: len(vectors)]
        ocr_pages, unread_pages = [], []
        group = self.settings.embedding_batch_size * 4
        try:
            for pages in self.pdf_pool.pages(path, content_hash, page_total, self.settings.ocr):
                for page in pages:
                    located += [(page.number, text) for text in self.chunker.split_text(page.text)] if page.text else []
                    ocr_pages += [page.number] if page.ocr else []
                    unread_pages += [page.number] if page.unread else []
                progress.on_pages(pages[-1].number, page_total)
                while len(located) - len(vectors) >= group:
                    vectors += list(self.embedder.encode([text for _, text in located[len(vectors) :][:group]]))
        except LoadError as exc:
            return FileResult(path, source, Outcome.FAILED, pages=page_total, error=str(exc))
        except Exception as exc:
            log.exception("ingest of %s failed", path)
            return FileResult(path, source, Outcome.FAILED, pages=page_total, error=f"could not store it: {exc}")
        if not located:  # no text at all: the inline reader says why, in its words
            return self._ingest_inline(path, source, progress, {path: checked} if checked else {})
        result.ocr_pages, result.unread_pages = len(ocr_pages), tuple(unread_pages)
        chunks = [
            Chunk(
                id=chunk_id(source, content_hash, index),
                text=text,
                source=source,
                title=title,
                page=page,
                index=index,
                count=len(located),
                content_hash=content_hash,
                doc_pages=page_total,
                doc_bytes=len(data),
            )
            for index, (page, text) in enumerate(located)
        ]
        try:
            self._embed_and_store(chunks, progress, embedded={c.id: v for c, v in zip(chunks, vectors, strict=False)})
        except Exception as exc:
            log.exception("ingest of %s failed", path)
            self._discard_partial(source, content_hash, replaced=known)
            result.outcome, result.error = Outcome.FAILED, f"could not store it: {exc}"
            return result
        result.outcome = Outcome.REPLACED if known else Outcome.ADDED
        result.chunks = len(chunks)
        return result

    def _discard_partial(self, source: str, content_hash: str, *, replaced: bool) -> None:
        try:
            if replaced:
                self.store.discard_version(source, content_hash, self.chunking)
            else:
                self.store.delete(source)
        except Exception:  # the store may be the thing that failed; a rerun cleans up
            log.warning("could not remove partial chunks of %s", source)
