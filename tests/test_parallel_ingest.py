"""Many small files in batches, big PDFs read by worker processes: the same stored result as
one file at a time, on real Milvus Lite with the bundled model."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pytest

from rag.config import Settings
from rag.parallel_reading import CRASH_PAGE_VARIABLE, PdfReaderPool, pdf_page_total
from rag.pipeline import Ingestor
from rag.records import IngestReport, Outcome
from rag.store import DocumentStore

ROW_FIELDS = ["id", "source", "text", "page", "chunk_index", "chunk_count", "doc_hash", "doc_pages", "chunking"]
TOPICS = ["whales", "volcanoes", "bread", "rust", "tides", "glaciers", "bees", "comets", "coral", "ferns"]


def note(topic: str, n: int, version: int = 1) -> str:
    """A small document of a few chunks (at 48-token chunks), distinct per topic and version."""
    return " ".join(
        f"Note {i} of version {version} on {topic}: the {topic} survey counted {n * 7 + i} samples near station {i}."
        for i in range(n)
    )


def stored_rows(store: DocumentStore) -> list[tuple]:
    """Every stored row but its vector, in a stable order (ids included)."""
    rows = store.milvus.rows(ROW_FIELDS)
    return sorted(tuple(r[f] for f in ROW_FIELDS) for r in rows)


def outcomes(report) -> list[tuple[str, str, int, str | None]]:
    return [(Path(r.source).name, r.outcome.value, r.chunks, r.error) for r in report.files]


class Calls:
    """Counts calls of real methods (the calls still run)."""

    def __init__(self, target: object, names: list[str]) -> None:
        self.counts = dict.fromkeys(names, 0)
        for name in names:
            method = getattr(target, name)

            def counted(*args, _name=name, _method=method, **kwargs):
                self.counts[_name] += 1
                return _method(*args, **kwargs)

            setattr(target, name, counted)


@pytest.fixture()
def small(settings: Settings) -> Settings:
    return settings.model_copy(update={"chunk_size": 48, "chunk_overlap": 6, "embedding_batch_size": 4})


def test_a_batch_of_small_files_stores_what_one_file_at_a_time_does(tmp_path: Path, small: Settings, embedder) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    files = []
    for n, topic in enumerate(TOPICS):
        files.append(folder / f"{n:02d}-{topic}.txt")
        files[-1].write_text(note(topic, 3 + n % 4))
    (folder / "03-rust.txt").write_text(note("rust", 3))
    files.insert(5, folder / "05b-blank.md")
    files[5].write_text("   \n\n  ")  # fails on its own: only whitespace

    results, rows = {}, {}
    for mode in ("batched", "one at a time"):
        settings = small.model_copy(update={"collection": "batched" if mode == "batched" else "single"})
        store = DocumentStore(settings, embedder).open()
        try:
            ingestor = Ingestor(settings, embedder, store)
            ingestor.ingest([files[0], files[3]])  # stored before: one stays unchanged, one is replaced
            files[3].write_text(note("rust", 5, version=2))
            calls = Calls(store, ["version_state", "version_states", "remove_stale", "remove_stale_many"])
            if mode == "batched":
                report = ingestor.ingest([folder])
            else:
                report = IngestReport(files=[ingestor.ingest_file(f) for f in sorted(files)])
            results[mode], rows[mode] = outcomes(report), stored_rows(store)
            if mode == "batched":  # one version check and one stale delete for the whole folder
                assert calls.counts == {
                    "version_state": 0,
                    "version_states": 1,
                    "remove_stale": 0,
                    "remove_stale_many": 1,
                }
            else:
                # one version check per file, made on its bytes before reading it
                assert (calls.counts["version_state"], calls.counts["version_states"]) == (0, len(files))
            files[3].write_text(note("rust", 3))
        finally:
            store.close()

    assert results["batched"] == results["one at a time"]
    by_name = {name: (outcome, chunks, error) for name, outcome, chunks, error in results["batched"]}
    assert by_name["00-whales.txt"][0] == "unchanged" and by_name["00-whales.txt"][1] >= 2
    assert by_name["03-rust.txt"][0] == "replaced"
    assert by_name["05b-blank.md"] == ("failed", 0, "the file holds only whitespace")
    assert sum(outcome == "added" for outcome, _, _ in by_name.values()) == len(TOPICS) - 2
    assert rows["batched"] == rows["one at a time"]
    assert len(rows["batched"]) == sum(chunks for _, chunks, _ in by_name.values())
    new_rust = hashlib.sha256(note("rust", 5, version=2).encode()).hexdigest()
    assert {r[6] for r in rows["batched"] if r[1].endswith("03-rust.txt")} == {new_rust}  # the old version is gone


class FailingWrites(DocumentStore):
    """A real store whose writes fail from the ``fail_at``-th on (the server went away mid-batch)."""

    writes = 0
    fail_at: int | None = None

    def upsert(self, chunks, vectors, *, added_at=None, chunking="") -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes >= self.fail_at:
            raise ConnectionError("server went away")
        super().upsert(chunks, vectors, added_at=added_at, chunking=chunking)


def test_a_batch_whose_write_fails_leaves_no_new_chunk_and_the_old_versions_whole(
    tmp_path: Path, small: Settings, embedder
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for topic in TOPICS[:6]:
        (folder / f"{topic}.txt").write_text(note(topic, 4))
    small = small.model_copy(update={"embedding_batch_size": 2})  # groups of 8 chunks
    store = FailingWrites(small, embedder).open()
    try:
        ingestor = Ingestor(small, embedder, store)
        ingestor.ingest([folder / "bread.txt"])
        before = stored_rows(store)
        (folder / "bread.txt").write_text(note("bread", 6, version=2))
        store.writes, store.fail_at = 0, 2  # the batch's first group is written, the second fails

        report = ingestor.ingest([folder])

        assert store.writes >= 2
        assert {r.outcome for r in report.files} == {Outcome.FAILED}
        assert {r.error for r in report.files} == {"could not store it: server went away"}
        assert {r.chunks for r in report.files} == {0}
        assert stored_rows(store) == before  # nothing new stays, the old bread.txt whole
        store.fail_at = None
        rerun = ingestor.ingest([folder])
        assert sorted(r.outcome.value for r in rerun.files) == ["added"] * 5 + ["replaced"]
    finally:
        store.close()


def test_parallel_pdf_reading_stores_what_serial_reading_does(
    pdfs: Path, tmp_path: Path, settings: Settings, embedder
) -> None:
    pdf = pdfs / "multi-column.pdf"  # 13 pages, every one with text
    assert pdf_page_total(pdf.read_bytes()) == 13
    text = tmp_path / "before.txt"
    text.write_text(note("tides", 3))
    streamed = settings.model_copy(update={"embedding_batch_size": 2})  # groups of 8 chunks embed while reading
    results, rows = {}, {}
    for mode in ("parallel", "serial"):
        run = streamed.model_copy(update={"collection": mode})
        store = DocumentStore(run, embedder).open()
        try:
            ingestor = Ingestor(run, embedder, store, parallel_min_pages=2 if mode == "parallel" else 0)
            ingestor.pdf_pool = PdfReaderPool(workers=2, pages_per_task=3)
            calls = Calls(ingestor.pdf_pool, ["pages"]).counts
            report = ingestor.ingest([text, pdf])
            assert calls["pages"] == (1 if mode == "parallel" else 0)
            results[mode], rows[mode] = outcomes(report), stored_rows(store)
            again = ingestor.ingest([pdf]).files[0]
            assert (again.outcome, again.chunks, again.pages) == (Outcome.UNCHANGED, report.files[1].chunks, 13)
            assert calls["pages"] == (1 if mode == "parallel" else 0)  # unchanged: not read again
        finally:
            store.close()

    assert results["parallel"] == results["serial"]
    [(_, outcome, chunks, error)] = [r for r in results["parallel"] if r[0] == "multi-column.pdf"]
    assert (outcome, error) == ("added", None) and chunks > 16  # more than two groups: streamed
    assert rows["parallel"] == rows["serial"]
    pdf_rows = [r for r in rows["parallel"] if r[1].endswith("multi-column.pdf")]
    assert len(pdf_rows) == chunks and {r[5] for r in pdf_rows} == {chunks}  # every row knows the count
    assert {r[3] for r in pdf_rows} == set(range(1, 14))  # every page cited, numbered as in the file
    by_index = sorted(pdf_rows, key=lambda r: r[4])
    assert [r[3] for r in by_index] == sorted(r[3] for r in by_index)  # chunks follow the pages in order


def test_a_crashed_reader_fails_that_pdf_only(
    pdfs: Path, tmp_path: Path, settings: Settings, embedder, make_pdf, monkeypatch
) -> None:
    monkeypatch.setenv(CRASH_PAGE_VARIABLE, "10")  # a worker reading page 10 exits at once
    crashing = pdfs / "multi-column.pdf"
    after = make_pdf(tmp_path / "after.pdf", [note(topic, 2) for topic in TOPICS[:6]])  # 6 pages: never page 10
    before = tmp_path / "before.txt"
    before.write_text(note("coral", 3))
    store = DocumentStore(settings, embedder).open()
    try:
        ingestor = Ingestor(settings, embedder, store, parallel_min_pages=4)
        ingestor.pdf_pool = PdfReaderPool(workers=1, pages_per_task=4)

        report = ingestor.ingest([before, crashing, after])

        results = {Path(r.source).name: r for r in report.files}
        failed = results["multi-column.pdf"]
        assert failed.outcome is Outcome.FAILED and failed.chunks == 0
        assert failed.error.startswith("a PDF reader process crashed while reading this file")
        assert store.count(failed.source) == 0  # nothing half-written
        assert results["before.txt"].outcome is Outcome.ADDED
        assert (results["after.pdf"].outcome, results["after.pdf"].pages) == (Outcome.ADDED, 6)  # a new pool
        assert store.count() == results["before.txt"].chunks + results["after.pdf"].chunks
        assert [Path(r.source).name for r in report.files] == ["before.txt", "multi-column.pdf", "after.pdf"]

        monkeypatch.delenv(CRASH_PAGE_VARIABLE)
        retried = ingestor.ingest([crashing]).files[0]
        assert retried.outcome is Outcome.ADDED and retried.chunks > 0
    finally:
        store.close()


def test_reader_processes_and_page_threshold_are_settings(
    pdfs: Path, monkeypatch: pytest.MonkeyPatch, embedder
) -> None:
    """``RAG_PDF_WORKERS`` and ``RAG_PARALLEL_MIN_PAGES`` reach the ingestor; defaults are as before."""
    from rag.parallel_reading import default_workers

    pdf = pdfs / "multi-column.pdf"  # 13 pages
    default = Ingestor(Settings(), embedder, None)  # type: ignore[arg-type]  # never touches the store here
    assert (default.pdf_pool.workers, default.parallel_min_pages) == (default_workers(), 64)
    assert default._big_pdf(pdf) is None  # 13 pages: read inline

    for threshold, parallel in (("13", True), ("14", False), ("0", False)):
        monkeypatch.setenv("RAG_PDF_WORKERS", "3")
        monkeypatch.setenv("RAG_PARALLEL_MIN_PAGES", threshold)
        ingestor = Ingestor(Settings(), embedder, None)  # type: ignore[arg-type]
        assert (ingestor.pdf_pool.workers, ingestor.parallel_min_pages) == (3, int(threshold))
        assert (ingestor._big_pdf(pdf) is not None) is parallel, threshold

    overridden = Ingestor(Settings(), embedder, None, pdf_workers=1, parallel_min_pages=2)  # type: ignore[arg-type]
    assert (overridden.pdf_pool.workers, overridden.parallel_min_pages) == (1, 2)
    monkeypatch.setenv("RAG_PDF_WORKERS", "-1")
    with pytest.raises(ValueError, match="pdf_workers"):
        Settings()


def test_a_big_pdf_upload_without_text_fails_as_the_inline_reader_says(
    tmp_path: Path, settings: Settings, embedder, make_pdf
) -> None:
    """An upload goes the big-PDF way too; with no text at all it falls back to the inline reader
    (once: no loop back into the pool) and fails in its words, with nothing stored or kept."""
    blank = make_pdf(tmp_path / "blank.pdf", [""] * 6).read_bytes()
    store = DocumentStore(settings, embedder).open()
    errors = {}
    try:
        for threshold in (4, 0):  # the reader pool, then inline only
            ingestor = Ingestor(settings, embedder, store, parallel_min_pages=threshold)
            ingestor.pdf_pool = PdfReaderPool(workers=1, pages_per_task=4)
            calls = Calls(ingestor.pdf_pool, ["pages", "close"]).counts

            result = ingestor.ingest_upload("blank.pdf", blank)

            assert (calls["pages"], calls["close"] >= 1) == ((1, True) if threshold else (0, False))
            assert multiprocessing.active_children() == []  # the upload's reader processes are gone
            assert (result.outcome, result.chunks) == (Outcome.FAILED, 0)
            errors[threshold] = result.error
            assert store.count() == 0
            assert list(settings.uploads_dir.iterdir()) == []  # the staging file is removed
    finally:
        store.close()
    assert errors[4] == errors[0] and errors[4].startswith("no text could be extracted from any of its 6 pages")
