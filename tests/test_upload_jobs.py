"""Background upload jobs (``rag.upload_jobs``) on a real Milvus Lite store with the bundled embedder.

The jobs ingest real files: PDFs from tests/data/pdfs and small text files written here.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from hashlib import sha256
from pathlib import Path

import pytest

from rag.config import Settings
from rag.loading import source_key
from rag.parallel_reading import CRASH_PAGE_VARIABLE, PAGES_PER_TASK, PdfReaderPool
from rag.pipeline import Ingestor
from rag.services import Services
from rag.store import DocumentStore
from rag.upload_jobs import JobState, UploadJob, UploadJobs
from rag.uploads import UNWRITTEN, stage_upload

WAIT_S = 300
BIG_PAGES = 64  # RAG_PARALLEL_MIN_PAGES's default: a PDF this long is read by the reader pool
ROW_FIELDS = ["title", "text", "page", "chunk_index", "chunk_count", "doc_hash", "doc_pages", "chunking"]


@pytest.fixture()
def services(settings: Settings, embedder):
    """The test collection's services, sharing the session's loaded embedder."""
    made = Services(settings)
    made.__dict__["embedder"] = embedder
    made.store()
    yield made
    made._store.close()


@pytest.fixture()
def jobs(settings: Settings):
    started = UploadJobs.start(settings.data_dir / "uploads")
    yield started
    started.close()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_jobs_complete_in_order_with_their_outcomes(
    services: Services, jobs: UploadJobs, pdfs: Path, make_pdf, tmp_path: Path
):
    uploads = services.settings.uploads_dir
    three_pages = make_pdf(tmp_path / "three.pdf", ["Milvus stores vectors.", "Page two.", "Page three."])
    submitted = [
        jobs.submit(services, "multi-column-2p.pdf", (pdfs / "multi-column-2p.pdf").read_bytes()),
        jobs.submit(services, "notes.md", b"# Notes\n\nMilvus Lite keeps the vectors in one local folder.\n"),
        jobs.submit(services, "three.pdf", three_pages.read_bytes()),
    ]
    assert all(job.state is JobState.QUEUED or job.active for job in submitted), "submit returns before ingest"
    assert jobs.active(services.settings.collection) >= 1
    assert jobs.wait_idle(WAIT_S)

    assert [j.state for j in submitted] == [JobState.DONE] * 3, [j.describe() for j in submitted]
    assert [j.collection for j in submitted] == [services.settings.collection] * 3
    finished = [j.finished_at for j in submitted]
    assert finished == sorted(finished), "the jobs finish in the order they were submitted"
    assert submitted[0].describe().startswith("added (2 pages, ")
    assert submitted[1].describe() == "added (1 page, 1 chunk)"
    assert submitted[2].describe().startswith("added (3 pages, ")
    assert submitted[0].pages == (2, 2) and submitted[2].pages == (3, 3), "pages read are reported"
    assert submitted[0].chunks[0] == submitted[0].chunks[1] > 0, "chunks embedded are reported"
    assert jobs.active() == 0
    names = ["multi-column-2p.pdf", "notes.md", "three.pdf"]
    assert sorted(d.source for d in services.store().list_documents()) == names
    assert files_in(uploads) == names, "committed, no staging files"

    again = jobs.submit(services, "notes.md", b"# Notes\n\nMilvus Lite keeps the vectors in one local folder.\n")
    assert jobs.wait_idle(WAIT_S)
    assert again.describe() == "unchanged (1 page, 1 chunk)"


def test_a_failing_file_fails_with_its_reason_and_the_next_still_runs(services: Services, jobs: UploadJobs):
    uploads = services.settings.uploads_dir
    broken = jobs.submit(services, "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    good = jobs.submit(services, "good.txt", b"Dense retrieval needs a vector store.")
    assert jobs.wait_idle(WAIT_S)

    assert broken.state is JobState.FAILED
    assert broken.error is not None and "the PDF is corrupt or truncated" in broken.error
    assert broken.describe().startswith("failed — the PDF is corrupt or truncated")
    assert good.state is JobState.DONE, good.describe()
    assert [d.source for d in services.store().list_documents()] == ["good.txt"]
    assert files_in(uploads) == ["good.txt"], "the failed upload's staging file is removed"


def test_refused_uploads_fail_at_once_and_stage_nothing(services: Services, jobs: UploadJobs, monkeypatch):
    monkeypatch.setattr(services.settings, "max_file_mb", 1)
    wrong_type = jobs.submit(services, "program.exe", b"MZ")
    too_big = jobs.submit(services, "big.txt", b"x" * 1_100_000)
    first = jobs.submit(services, "same.txt", b"The first version of the file.")
    second = jobs.submit(services, "same.txt", b"A second version, sent while the first is queued.")

    assert wrong_type.state is JobState.FAILED and wrong_type.error == "unsupported file type '.exe'"
    assert too_big.state is JobState.FAILED and "over the 1 MB limit" in (too_big.error or "")
    assert second.state is JobState.FAILED and "still being added" in (second.error or "")
    assert jobs.wait_idle(WAIT_S)
    assert first.state is JobState.DONE, first.describe()
    assert files_in(services.settings.uploads_dir) == ["same.txt"]
    assert (services.settings.uploads_dir / "same.txt").read_bytes() == b"The first version of the file."

    assert len(jobs.jobs(services.settings.collection)) == 4
    jobs.forget_finished(services.settings.collection)
    assert jobs.jobs() == []


def test_leftover_staging_files_are_removed_at_start_and_reported(tmp_path: Path, caplog):
    root = tmp_path / "uploads"
    (root / "other").mkdir(parents=True)
    (root / ".report.part.pdf").write_bytes(b"%PDF-1.4 half")
    (root / "other" / ".notes.part.md").write_text("half")
    kept = [root / "report.pdf", root / ".hidden.md", root / "other" / "a.part.txt"]
    for path in kept:
        path.write_text("kept")

    with caplog.at_level(logging.WARNING, logger="rag.upload_jobs"):
        jobs = UploadJobs.start(root)
    try:
        assert [(r.collection, r.name, r.kept) for r in jobs.recovered] == [
            ("documents", "report.pdf", False),
            ("other", "notes.md", False),
        ]
        assert not (root / ".report.part.pdf").exists() and not (root / "other" / ".notes.part.md").exists()
        assert all(path.read_text() == "kept" for path in kept), "only staging files are touched"
        notice = jobs.cleanup_notice()
        assert notice is not None and "2 uploads" in notice and "report.pdf" in notice and "notes.md" in notice
        assert "removed 2 staged uploads" in caplog.text and "other/notes.md" in caplog.text
    finally:
        jobs.close()

    again = UploadJobs.start(root)
    try:
        assert again.recovered == [] and again.cleanup_notice() is None
    finally:
        again.close()


def test_leftovers_are_settled_against_the_store(services: Services, caplog):
    """A crash after the store held the whole new version keeps it (the copy is committed); a crash
    mid-write removes the new version's chunks and adds the upload again, the older version
    answering until the new one is stored; a half-written upload (never staged) is removed."""
    settings = services.settings
    ingestor = services.ingestor()
    old, new = b"Old text about Milvus Lite folders.", b"New text about vector stores and their indexes."
    assert ingestor.ingest_upload("doc.txt", old).outcome.value == "added"
    # doc.txt v2: every chunk upserted, but the old version was not removed yet (the crash).
    staged_doc = stage_upload("doc.txt", new, settings.uploads_dir, max_bytes=10**6)
    document = ingestor.load_file(staged_doc.staging, source="doc.txt")
    chunks = ingestor.chunker.split_document(document)
    services.store().upsert(chunks, services.embedder.encode([c.text for c in chunks]), chunking=ingestor.chunking)
    assert services.store().count("doc.txt") == 2
    # done.txt: stored completely, the crash came before its copy was committed.
    staged_done = stage_upload(
        "done.txt", b"A finished upload about embeddings.", settings.uploads_dir, max_bytes=10**6
    )
    assert ingestor.ingest_file(staged_done.staging, source="done.txt").outcome.value == "added"
    # half.txt: the crash came while its bytes were written, before it was staged.
    (settings.uploads_dir / f".half.part.txt{UNWRITTEN}").write_bytes(b"A half wr")

    with caplog.at_level(logging.WARNING, logger="rag.upload_jobs"):
        jobs = UploadJobs.start(settings.data_dir / "uploads", lambda c: services if c == settings.collection else None)
    try:
        assert sorted((r.name, r.kept, r.resumed) for r in jobs.recovered) == [
            ("doc.txt", False, True),
            ("done.txt", True, False),
        ]
        notice = jobs.cleanup_notice() or ""
        assert "(doc.txt)" in notice and "being added again" in notice and "(done.txt)" in notice, notice
        assert "queued again 1 staged upload" in caplog.text and "kept (stored completely) 1" in caplog.text
        assert jobs.wait_idle(120)
        [job] = jobs.jobs()
        assert (job.name, job.state, job.result.outcome.value) == ("doc.txt", JobState.DONE, "replaced"), job
        assert files_in(settings.uploads_dir) == ["doc.txt", "done.txt"], "no staging or half-written file is left"
        assert (settings.uploads_dir / "doc.txt").read_bytes() == new
        store = services.store()
        assert store.count("doc.txt") == 1 and store.version_state("doc.txt", sha256(new).hexdigest())[1]
        assert store.count("done.txt") == 1
    finally:
        jobs.close()


def test_an_upload_queued_again_that_stops_the_app_again_is_removed(services: Services, caplog):
    """No restart loop: an upload the last start queued again, and that did not finish either (it
    brought the app down, say), is removed at the next start, its partial chunks too."""
    settings = services.settings
    staged = stage_upload(
        "heavy.txt", b"A file that stops the app while it is added.", settings.uploads_dir, max_bytes=10**6
    )
    staged.resumed_mark.touch()  # the previous start queued it again
    with caplog.at_level(logging.WARNING, logger="rag.upload_jobs"):
        jobs = UploadJobs.start(settings.data_dir / "uploads", lambda c: services if c == settings.collection else None)
    try:
        assert [(r.name, r.kept, r.resumed) for r in jobs.recovered] == [("heavy.txt", False, False)]
        assert jobs.jobs() == [] and files_in(settings.uploads_dir) == []
        assert "stopped the app again" in caplog.text
        assert "Upload them again" in (jobs.cleanup_notice() or "")
    finally:
        jobs.close()


def test_job_states_in_words():
    job = UploadJob("a.pdf", "docs")
    assert job.describe() == "queued" and job.active
    job.state, job.pages = JobState.READING, (3, 10)
    assert job.describe() == "reading page 3 of 10"
    job.state, job.chunks = JobState.EMBEDDING, (5, 20)
    assert job.describe() == "embedding 5/20 chunks"
    job.state, job.error = JobState.FAILED, "the PDF is corrupt"
    assert job.describe() == "failed — the PDF is corrupt" and not job.active


def test_a_job_that_raises_fails_with_the_reason_and_the_worker_goes_on(
    services: Services, jobs: UploadJobs, monkeypatch: pytest.MonkeyPatch
):
    real_ingestor = Services.ingestor
    calls: list[str] = []

    def store_goes_away_once(self: Services):
        calls.append(self.settings.collection)
        if len(calls) == 1:
            raise RuntimeError("the store went away")
        return real_ingestor(self)

    monkeypatch.setattr(Services, "ingestor", store_goes_away_once)
    first = jobs.submit(services, "first.txt", b"The first file, whose ingest raises.")
    second = jobs.submit(services, "second.txt", b"The second file, ingested as usual.")
    assert jobs.wait_idle(WAIT_S)
    assert first.state is JobState.FAILED and first.error == "the store went away"
    assert second.state is JobState.DONE, second.describe()
    assert files_in(services.settings.uploads_dir) == ["second.txt"], "the failed job's staging file is removed"


def ledger_pages(version: int) -> list[str]:
    """Distinct text on each of BIG_PAGES pages; every seventh page is long enough for two chunks."""
    topics = ["whales", "volcanoes", "bread", "tides", "glaciers", "bees", "comets"]
    return [
        " ".join(
            f"Ledger {version}, page {n}, entry {i}: station {n} logged {n * 13 + i} samples of {topics[n % 7]}."
            for i in range(20 if n % 7 == 0 else 4)
        )
        for n in range(1, BIG_PAGES + 1)
    ]


def stored(store: DocumentStore) -> list[tuple]:
    """Every stored row's source and chunk fields (no id, no vector), in chunk order."""
    rows = store.milvus.rows(["source", *ROW_FIELDS])
    return sorted((tuple(r[f] for f in ["source", *ROW_FIELDS]) for r in rows), key=lambda r: (r[0], r[4]))


@pytest.fixture()
def pool_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The page totals of the files the reader pool is asked for (the real pool still reads them)."""
    reads: list[int] = []
    real_pages = PdfReaderPool.pages

    def pages(self, path, content_hash, page_total, *args, **kwargs):
        reads.append(page_total)
        return real_pages(self, path, content_hash, page_total, *args, **kwargs)

    monkeypatch.setattr(PdfReaderPool, "pages", pages)
    return reads


def described_states(jobs: UploadJobs, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Every state a job goes through, in words, as the page would show it (job id, words)."""
    seen: list[tuple[int, str]] = []
    real_set = jobs._set

    def recording(job: UploadJob, **changes: object) -> None:
        real_set(job, **changes)
        seen.append((job.id, job.describe()))

    monkeypatch.setattr(jobs, "_set", recording)
    return seen


@pytest.mark.slow
def test_a_big_pdf_upload_is_read_by_the_reader_pool_as_the_command_line_reads_it(
    services: Services, jobs: UploadJobs, make_pdf, tmp_path: Path, pool_reads, monkeypatch
):
    settings = services.settings
    assert settings.parallel_min_pages == BIG_PAGES
    monkeypatch.setattr(settings, "embedding_batch_size", 2)  # groups of 8 chunks: embedded while pages arrive
    pdf = make_pdf(tmp_path / "ledger.pdf", ledger_pages(1))
    seen = described_states(jobs, monkeypatch)
    children = multiprocessing.active_children()

    job = jobs.submit(services, "ledger.pdf", pdf.read_bytes())
    assert jobs.wait_idle(WAIT_S)

    assert job.state is JobState.DONE, job.describe()
    assert pool_reads == [BIG_PAGES], "the upload went to the reader pool"
    assert multiprocessing.active_children() == children, "its reader processes ended with it"
    result = job.result
    assert result is not None and (result.outcome.value, result.pages) == ("added", BIG_PAGES)
    assert BIG_PAGES < result.chunks < 2 * BIG_PAGES
    words = [w for i, w in seen if i == job.id]
    reading = [w for w in words if w.startswith("reading page")]
    embedding = [w for w in words if w.startswith("embedding")]
    step = PAGES_PER_TASK
    assert reading == [f"reading page {n} of {BIG_PAGES}" for n in range(step, BIG_PAGES + 1, step)]
    assert words.index(embedding[0]) > words.index(reading[-1]), "pages first, then chunks: " + str(words)
    assert words[-1] == f"added ({BIG_PAGES} pages, {result.chunks} chunks)"
    assert set(words) == {"reading", *reading, *embedding, words[-1]}, words
    counts = [tuple(map(int, re.findall(r"\d+", w))) for w in embedding]
    assert {total for _, total in counts} == {result.chunks}, "the chunk total is known from the start"
    done = [d for d, _ in counts]
    assert done == sorted(done) and done[-1] == result.chunks and done[0] > 0
    assert files_in(settings.uploads_dir) == ["ledger.pdf"], "committed, no staging file"
    assert (settings.uploads_dir / "ledger.pdf").read_bytes() == pdf.read_bytes()

    uploaded = stored(services.store())
    cli_settings = settings.model_copy(update={"collection": "cli_docs"})
    cli_store = DocumentStore(cli_settings, services.embedder).open()
    try:
        report = Ingestor(cli_settings, services.embedder, cli_store).ingest([pdf])
        by_cli = stored(cli_store)
    finally:
        cli_store.close()
    [cli_result] = report.files
    assert (cli_result.outcome, cli_result.pages, cli_result.chunks) == (result.outcome, BIG_PAGES, result.chunks)
    assert pool_reads == [BIG_PAGES, BIG_PAGES]
    assert {r[0] for r in uploaded} == {"ledger.pdf"} and {r[0] for r in by_cli} == {source_key(pdf)}
    assert [r[1:] for r in uploaded] == [r[1:] for r in by_cli], "the same chunks on the same pages"
    assert {r[1] for r in uploaded} == {"ledger.pdf"}, "titled by the upload's name, not its staging file"
    assert [r[3] for r in uploaded] == sorted(r[3] for r in uploaded) and {r[3] for r in uploaded} == set(
        range(1, BIG_PAGES + 1)
    ), "every page cited, in order"
    assert len(uploaded) == result.chunks and {r[5] for r in uploaded} == {result.chunks}


@pytest.mark.slow
def test_a_reader_crash_fails_that_upload_and_leaves_the_store_and_uploads_as_before(
    services: Services, jobs: UploadJobs, make_pdf, tmp_path: Path, pool_reads, monkeypatch
):
    uploads = services.settings.uploads_dir
    monkeypatch.setattr(services.settings, "pdf_workers", 1)  # ranges read one after another: 1-32 come back
    old = make_pdf(tmp_path / "old.pdf", ledger_pages(1)[:2]).read_bytes()  # a short earlier version: read inline
    first = jobs.submit(services, "ledger.pdf", old)
    assert jobs.wait_idle(WAIT_S) and first.state is JobState.DONE, first.describe()
    assert pool_reads == []
    before = stored(services.store())
    assert len(before) >= 2 and files_in(uploads) == ["ledger.pdf"]
    seen = described_states(jobs, monkeypatch)
    children = multiprocessing.active_children()
    monkeypatch.setenv(CRASH_PAGE_VARIABLE, "40")  # the worker reading pages 33-40 exits at once

    crashed = jobs.submit(services, "ledger.pdf", make_pdf(tmp_path / "new.pdf", ledger_pages(2)).read_bytes())
    assert jobs.wait_idle(WAIT_S)

    assert pool_reads == [BIG_PAGES]
    assert crashed.state is JobState.FAILED, crashed.describe()
    assert (crashed.error or "").startswith("a PDF reader process crashed while reading this file"), crashed.error
    assert crashed.describe() == f"failed — {crashed.error}"
    assert crashed.result is not None and crashed.result.chunks == 0
    assert crashed.pages == (32, BIG_PAGES), "pages read until the crash were shown"
    assert f"reading page 32 of {BIG_PAGES}" in [w for i, w in seen if i == crashed.id]
    assert stored(services.store()) == before, "nothing of the new version stored, the old one whole"
    assert files_in(uploads) == ["ledger.pdf"] and (uploads / "ledger.pdf").read_bytes() == old
    assert multiprocessing.active_children() == children
