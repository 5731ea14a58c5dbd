"""Ingest end to end through the library: real files, real model, real Milvus Lite store."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter
from store_contract import rows_of

from rag.config import Settings
from rag.embedding import Embedder
from rag.loading import normalise_text
from rag.pipeline import Ingestor, Progress, collect_files, delete_document
from rag.records import FileResult, Outcome
from rag.store import DocumentStore

WHALES = (
    "Blue whales are the largest animals known to have lived. They feed almost only on krill, "
    "filtering tons of it each day through baleen plates. Their calls travel hundreds of kilometres. "
)
RUST = (
    "The Rust borrow checker enforces that a value has either one mutable reference or many shared "
    "references. Lifetimes describe how long a reference stays valid. "
)
BREAD = "Sourdough rises because wild yeast and lactic acid bacteria ferment the flour and water. "


def assert_one_complete_version(store: DocumentStore, source: str, chunks: int) -> list[dict]:
    """Exactly ``chunks`` rows for the source: one version, no stale chunk and no duplicate."""
    rows = rows_of(store, source)
    assert len(rows) == chunks
    assert sorted(r["chunk_index"] for r in rows) == list(range(chunks))
    assert len({r["doc_hash"] for r in rows}) == 1
    assert {r["chunk_count"] for r in rows} == {chunks}
    return rows


def by_name(results: list[FileResult]) -> dict[str, FileResult]:
    return {result.path.name: result for result in results}


# The document life cycle ----------------------------------------------------------------


def test_add_unchanged_replace_delete_and_list(tmp_path: Path, ingestor: Ingestor, store: DocumentStore) -> None:
    path = tmp_path / "notes.txt"
    path.write_text(WHALES * 6 + "\n\n" + RUST * 6)
    source = str(path.resolve())

    added = ingestor.ingest([path])
    first = assert_one_complete_version(store, source, added.files[0].chunks)
    again = ingestor.ingest([path])

    assert [(f.outcome, f.pages) for f in added.files] == [(Outcome.ADDED, 1)]
    assert added.files[0].chunks >= 3
    assert [(f.outcome, f.chunks) for f in again.files] == [(Outcome.UNCHANGED, added.files[0].chunks)]
    assert again.chunks_written == 0
    assert rows_of(store, source) == first  # nothing rewritten, not even the timestamp

    path.write_text(BREAD * 3)  # a new version with fewer chunks
    shorter = ingestor.ingest([path])
    assert [(f.outcome, f.chunks) for f in shorter.files] == [(Outcome.REPLACED, 1)]
    assert_one_complete_version(store, source, 1)

    path.write_text(RUST * 12 + "\n\n" + WHALES * 12)  # and one with more
    longer = ingestor.ingest([path])
    assert longer.files[0].outcome is Outcome.REPLACED
    rows = assert_one_complete_version(store, source, longer.files[0].chunks)
    assert len({r["id"] for r in rows}) == len(rows)

    [listed] = store.list_documents()
    assert (listed.source, listed.title, listed.pages, listed.chunks) == (
        source,
        "notes.txt",
        1,
        longer.files[0].chunks,
    )
    assert listed.size_bytes == path.stat().st_size

    assert store.delete(source) == longer.files[0].chunks
    assert store.count() == 0
    assert store.list_documents() == []


def test_pages_are_counted_and_cited(
    tmp_path: Path, make_pdf, embedder: Embedder, ingestor: Ingestor, store: DocumentStore
) -> None:
    path = make_pdf(tmp_path / "three.pdf", [WHALES * 3, "", RUST * 3, BREAD * 2])

    report = ingestor.ingest([path])

    [result] = report.files
    assert (result.outcome, result.pages) == (Outcome.ADDED, 4)
    [listed] = store.list_documents()
    assert (listed.pages, listed.chunks) == (4, result.chunks)
    for question, page in [("What do blue whales eat?", 1), ("What does the borrow checker enforce?", 3)]:
        hits = store.search(question, embedder.embed_query(question), k=1)
        assert [(hit.title, hit.page) for hit in hits] == [("three.pdf", page)]


def _has_near_copy(sentence: str, page_texts: list[str], page_number: int) -> bool:
    """True when another page holds a sentence that shares most of this one's words."""
    words = set(sentence.lower().split())
    for number, text in enumerate(page_texts, 1):
        if number == page_number:
            continue
        for other in re.split(r"(?<=[.!?])\s+", text):
            if len(words & set(other.lower().split())) >= 0.5 * len(words):
                return True
    return False


@pytest.mark.slow
def test_a_known_sentence_of_multi_column_pdf_maps_to_its_page(
    pdfs: Path, embedder: Embedder, ingestor: Ingestor, store: DocumentStore
) -> None:
    path = pdfs / "multi-column.pdf"
    reader = PdfReader(path)
    page_number = 5
    page_texts = [normalise_text(page.extract_text() or "", join_lines=True) for page in reader.pages]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", page_texts[page_number - 1]) if 15 <= len(s.split()) <= 40]
    # A sentence with no near copy on another page (papers repeat captions in their text).
    sentence = next(s for s in sentences if not _has_near_copy(s, page_texts, page_number))

    report = ingestor.ingest([path])
    hits = store.search(sentence, embedder.embed_query(sentence), k=3)

    [result] = report.files
    assert (result.outcome, result.pages) == (Outcome.ADDED, len(reader.pages))
    assert hits[0].page == page_number, sentence
    assert hits[0].title == "multi-column.pdf"
    words = sentence.split()
    assert " ".join(words[:6]) in hits[0].text or " ".join(words[-6:]) in hits[0].text  # the chunk holds it
    [listed] = store.list_documents()
    assert (listed.pages, listed.chunks) == (13, result.chunks)
    assert_one_complete_version(store, result.source, result.chunks)
    assert {row["page"] for row in store.chunks_of(result.source, range(result.chunks))} == set(range(1, 14))


# Bad input: a message per file, the batch goes on, nothing lost -------------------------


def test_bad_files_fail_one_by_one_and_the_batch_goes_on(
    tmp_path: Path, make_pdf, ingestor: Ingestor, store: DocumentStore
) -> None:
    keeper = tmp_path / "keeper.txt"
    keeper.write_text(WHALES * 4)
    kept = ingestor.ingest([keeper]).files[0]
    before = store.count()

    good_pdf = make_pdf(tmp_path / "good.pdf", [RUST * 3, BREAD])
    pdf_bytes = good_pdf.read_bytes()
    locked = tmp_path / "locked.pdf"
    writer = PdfWriter(clone_from=io.BytesIO(pdf_bytes))
    writer.encrypt(user_password="s3cret")
    writer.write(locked)
    (tmp_path / "truncated.pdf").write_bytes(pdf_bytes[: len(pdf_bytes) // 2])
    (tmp_path / "empty.txt").write_bytes(b"")
    make_pdf(tmp_path / "scan.pdf", ["", ""])
    (tmp_path / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (tmp_path / "letter.doc").write_bytes(b"\xd0\xcf\x11\xe0 legacy Word")
    (tmp_path / "tool.exe").write_bytes(b"MZ\x90\x00")
    names = ["locked.pdf", "truncated.pdf", "empty.txt", "scan.pdf", "binary.txt", "letter.doc", "tool.exe"]

    report = ingestor.ingest([tmp_path / name for name in names[:4]] + [good_pdf] + [tmp_path / n for n in names[4:]])

    results = by_name(report.files)
    expected = {
        "locked.pdf": "the PDF is encrypted with a password; remove the password and ingest it again",
        "truncated.pdf": "the PDF is corrupt or truncated and could not be read",
        "empty.txt": "the file is empty (0 bytes)",
        "scan.pdf": "no text could be extracted from any of its 2 pages, OCR included: they look blank",
        "binary.txt": "the file looks binary (it contains NUL bytes), not text",
        "letter.doc": "unsupported file type '.doc'; supported:",
        "tool.exe": "unsupported file type '.exe'; supported:",
    }
    for name, message in expected.items():
        assert results[name].outcome is Outcome.FAILED, name
        assert results[name].error.startswith(message), (name, results[name].error)
        assert results[name].chunks == 0
        assert rows_of(store, results[name].source) == []
    assert results["good.pdf"].outcome is Outcome.ADDED
    assert [f.path.name for f in report.files] == [*names[:4], "good.pdf", *names[4:]]  # order kept
    assert report.failed
    assert report.count(Outcome.FAILED) == 7
    assert store.count() == before + results["good.pdf"].chunks
    assert_one_complete_version(store, kept.source, kept.chunks)


def test_real_problem_pdfs(pdfs: Path, tmp_path: Path, ingestor: Ingestor, store: DocumentStore) -> None:
    keeper = tmp_path / "keeper.txt"
    keeper.write_text(BREAD * 5)
    kept = ingestor.ingest([keeper]).files[0]
    data = (pdfs / "multi-column-2p.pdf").read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) // 3])
    writer = PdfWriter(clone_from=pdfs / "multi-column-2p.pdf")
    writer.encrypt(user_password="s3cret")
    writer.write(tmp_path / "locked.pdf")
    before = store.count()

    report = ingestor.ingest(
        [pdfs / "loremipsum-flat.pdf", tmp_path / "cut.pdf", pdfs / "copy-protected.pdf", tmp_path / "locked.pdf"]
    )

    results = by_name(report.files)
    flat = results["loremipsum-flat.pdf"]  # a flattened page with no text layer: read by OCR
    assert flat.outcome is Outcome.ADDED and flat.ocr_pages == flat.pages >= 1, flat.error
    assert "corrupt or truncated" in results["cut.pdf"].error
    assert "encrypted with a password" in results["locked.pdf"].error
    protected = results["copy-protected.pdf"]
    assert (protected.outcome, protected.error) == (Outcome.ADDED, None)  # empty user password: opens normally
    assert protected.chunks > 0
    assert store.count() == before + protected.chunks + flat.chunks
    assert_one_complete_version(store, kept.source, kept.chunks)


def test_a_new_version_that_cannot_be_read_keeps_the_old_one(
    tmp_path: Path, ingestor: Ingestor, store: DocumentStore
) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(RUST * 5)
    old = ingestor.ingest([path]).files[0]
    old_hash = hashlib.sha256(path.read_bytes()).hexdigest()

    path.write_bytes(b"")
    failed = ingestor.ingest([path]).files[0]

    assert (failed.outcome, failed.error) == (Outcome.FAILED, "the file is empty (0 bytes)")
    assert_one_complete_version(store, old.source, old.chunks)
    assert store.version_state(old.source, old_hash) == (True, True)


class FlakyStore(DocumentStore):
    """A real store whose writes can be made to fail after a number of successful ones."""

    writes_left: int | None = None

    def upsert(self, chunks, vectors, *, added_at=None, chunking="") -> None:
        if self.writes_left is not None:
            if self.writes_left == 0:
                raise ConnectionError("server went away")
            self.writes_left -= 1
        super().upsert(chunks, vectors, added_at=added_at, chunking=chunking)


def test_a_write_that_fails_halfway_leaves_the_old_version_whole(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    small = settings.model_copy(update={"chunk_size": 32, "chunk_overlap": 4, "embedding_batch_size": 1})
    store = FlakyStore(small, embedder).open()
    try:
        ingestor = Ingestor(small, embedder, store)
        path = tmp_path / "doc.txt"
        path.write_text(WHALES * 2)
        old = ingestor.ingest([path]).files[0]
        path.write_text(" ".join(f"Rule {i}: the borrow checker rejects aliased mutation." for i in range(12)))
        store.writes_left = 1  # groups of 4 chunks: the first is written, the second fails

        failed = ingestor.ingest([path]).files[0]

        assert failed.outcome is Outcome.FAILED
        assert failed.error == "could not store it: server went away"
        old_rows = assert_one_complete_version(store, old.source, old.chunks)
        assert store.version_state(old.source, old_rows[0]["doc_hash"]) == (True, True)

        store.writes_left = None
        retried = ingestor.ingest([path]).files[0]
        assert retried.outcome is Outcome.REPLACED and retried.chunks > 4  # two groups or more
        assert_one_complete_version(store, retried.source, retried.chunks)
    finally:
        store.close()


def test_other_chunk_settings_rechunk_the_same_file_and_replace_it(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(" ".join(f"Rule {i}: the borrow checker rejects aliased mutation of values." for i in range(30)))
    content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    coarse = settings.model_copy(update={"chunk_size": 96, "chunk_overlap": 8, "embedding_batch_size": 1})
    fine = settings.model_copy(update={"chunk_size": 40, "chunk_overlap": 4, "embedding_batch_size": 1})
    store = FlakyStore(coarse, embedder).open()
    try:
        first = Ingestor(coarse, embedder, store).ingest([path]).files[0]
        assert first.outcome is Outcome.ADDED
        assert Ingestor(coarse, embedder, store).ingest([path]).files[0].outcome is Outcome.UNCHANGED

        rechunker = Ingestor(fine, embedder, store)
        store.writes_left = 1  # the new chunking fails half-way: the old one must stay whole
        failed = rechunker.ingest([path]).files[0]
        assert failed.outcome is Outcome.FAILED
        assert_one_complete_version(store, first.source, first.chunks)
        store.writes_left = None

        replaced = rechunker.ingest([path]).files[0]

        assert replaced.outcome is Outcome.REPLACED
        assert replaced.chunks > first.chunks + 4  # smaller chunks: more of them
        rows = assert_one_complete_version(store, first.source, replaced.chunks)
        assert {r["doc_hash"] for r in rows} == {content_hash}  # the file's own hash stays visible
        [listed] = store.list_documents()
        assert (listed.content_hash, listed.chunks) == (content_hash, replaced.chunks)
        assert listed.chunking == rechunker.chunking != Ingestor(coarse, embedder, store).chunking
        assert rechunker.ingest([path]).files[0].outcome is Outcome.UNCHANGED
        back = Ingestor(coarse, embedder, store).ingest([path]).files[0]
        assert (back.outcome, back.chunks) == (Outcome.REPLACED, first.chunks)
    finally:
        store.close()


def test_uploads_are_kept_only_once_they_ingested(settings: Settings, ingestor: Ingestor, store: DocumentStore) -> None:
    good = ingestor.ingest_upload("../../Whales.txt", (WHALES * 3).encode())
    copy = settings.uploads_dir / "Whales.txt"
    assert (good.outcome, good.source, good.path) == (Outcome.ADDED, "Whales.txt", copy.resolve())
    assert copy.read_text() == WHALES * 3

    bad = ingestor.ingest_upload("Whales.txt", b"")  # a failed upload never replaces the good copy
    assert bad.outcome is Outcome.FAILED
    assert copy.read_text() == WHALES * 3
    assert sorted(p.name for p in settings.uploads_dir.iterdir()) == ["Whales.txt"]  # no staging file left
    refused = ingestor.ingest_upload("tool.exe", b"MZ")
    assert (refused.outcome, refused.error) == (Outcome.FAILED, "unsupported file type '.exe'")

    deletion = delete_document(settings, store, "Whales.txt")
    assert (deletion.chunks, deletion.upload_removed) == (good.chunks, True)
    assert not copy.exists() and store.list_documents() == []


def test_a_model_failure_halfway_leaves_the_old_version_whole(
    tmp_path: Path, make_pdf, settings: Settings, embedder: Embedder, store: DocumentStore, monkeypatch
) -> None:
    small = settings.model_copy(update={"chunk_size": 48, "chunk_overlap": 8, "embedding_batch_size": 1})
    ingestor = Ingestor(small, embedder, store)
    path = make_pdf(tmp_path / "doc.pdf", [WHALES, RUST])
    old = ingestor.ingest([path]).files[0]
    make_pdf(path, [" ".join(f"Fact {n}.{i}: krill swarms feed blue whales." for i in range(9)) for n in range(4)])
    encode = embedder.encode
    calls = iter(range(100))

    def failing(texts, batch_size=None):
        if next(calls) == 1:  # the second group of 4 chunks: the first one is written already
            raise RuntimeError("out of memory")
        return encode(texts, batch_size)

    monkeypatch.setattr(embedder, "encode", failing)

    [result] = ingestor.ingest([path]).files

    assert (result.outcome, result.error) == (Outcome.FAILED, "could not store it: out of memory")
    assert_one_complete_version(store, old.source, old.chunks)


# Collecting files -----------------------------------------------------------------------


def test_folders_globs_and_missing_paths(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "deep" / "deeper").mkdir(parents=True)
    for name in ["a.txt", "b.md", "deep/c.pdf", "deep/deeper/d.txt", "deep/skip.exe", ".hidden.txt"]:
        (docs / name).write_text("x")
    (tmp_path / "notes").mkdir()
    for name in ["one.md", "two.md", "three.txt"]:
        (tmp_path / "notes" / name).write_text("x")

    files, missing = collect_files(
        [docs, f"{tmp_path}/notes/*.md", docs / "a.txt", tmp_path / "nope.txt", f"{tmp_path}/*.none"]
    )

    relative = [f.relative_to(tmp_path).as_posix() for f in files]
    assert relative == [
        "docs/a.txt",
        "docs/b.md",
        "docs/deep/c.pdf",
        "docs/deep/deeper/d.txt",
        "notes/one.md",
        "notes/two.md",
    ]
    assert [(m.source, m.outcome, m.error) for m in missing] == [
        (str(tmp_path / "nope.txt"), Outcome.FAILED, "no such file, folder or match"),
        (f"{tmp_path}/*.none", Outcome.FAILED, "no such file, folder or match"),
    ]


def test_missing_paths_are_reported_and_the_rest_is_ingested(
    tmp_path: Path, ingestor: Ingestor, store: DocumentStore
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(BREAD)
    seen: list[str] = []
    chunk_calls: list[tuple[int, int]] = []
    progress = Progress(
        on_files=lambda total: seen.append(f"files {total}"),
        on_file_start=lambda path: seen.append(f"start {path.name}"),
        on_chunks=lambda done, total: chunk_calls.append((done, total)),
        on_file_done=lambda result: seen.append(f"done {result.source.rsplit('/', 1)[-1]} {result.outcome}"),
    )

    report = ingestor.ingest([tmp_path / "docs", tmp_path / "gone.pdf"], progress=progress)

    assert seen == ["files 2", "done gone.pdf failed", "start a.md", "done a.md added"]
    assert chunk_calls == [(1, 1)]
    assert report.summary().startswith("2 files: 1 added, 0 replaced, 0 unchanged, 1 failed (1 chunks,")
    assert report.to_dict()["summary"] == {"added": 1, "replaced": 0, "unchanged": 0, "failed": 1}
    assert store.count() == 1


def test_uploaded_files_are_stored_under_the_name_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ingestor: Ingestor, store: DocumentStore
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uploads").mkdir()
    Path("uploads/3f2a-report.txt").write_text(WHALES)

    report = ingestor.ingest([Path("uploads/3f2a-report.txt")], sources={Path("uploads/3f2a-report.txt"): "report.txt"})

    assert [(f.source, f.outcome) for f in report.files] == [("report.txt", Outcome.ADDED)]
    assert [d.source for d in store.list_documents()] == ["report.txt"]


# The version check comes before reading --------------------------------------------------


@pytest.mark.slow  # the scan is OCR'd once, a few seconds a page on two cores
def test_an_unchanged_scan_is_not_read_again(
    tmp_path: Path, ingestor: Ingestor, store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanned PDF under the parallel-reading threshold is hashed and found stored before any
    reading: a second ingest (folder or upload path) never reaches the OCR engine."""
    from rag import ocr

    scan = tmp_path / "court-order-scan.pdf"
    scan.write_bytes((Path(__file__).resolve().parent / "data" / "ocr" / "court-order-scan.pdf").read_bytes())
    first = ingestor.ingest([scan]).files[0]
    assert (first.outcome, first.pages, first.ocr_pages) == (Outcome.ADDED, 2, 2), first.error
    assert first.chunks >= 1

    calls: list[int] = []

    def engine_that_must_not_run(image: object) -> str:
        calls.append(1)
        raise RuntimeError("the OCR engine ran for a file whose version is stored")

    monkeypatch.setattr(ocr, "recognise", engine_that_must_not_run)
    again = ingestor.ingest([scan]).files[0]
    upload = ingestor.ingest_file(scan, source=first.source)
    for result in (again, upload):
        assert (result.outcome, result.chunks, result.pages, result.error) == (
            Outcome.UNCHANGED,
            first.chunks,
            2,
            None,
        )
    assert calls == []
    assert_one_complete_version(store, first.source, first.chunks)

    # From the other side: changed bytes are read again, and reading reaches the engine.
    scan.write_bytes(scan.read_bytes() + b"\n% another version\n")
    try:
        changed = ingestor.ingest([scan]).files[0]
    except RuntimeError:
        changed = None
    assert calls, "a changed file was not read"
    assert changed is None or changed.outcome is not Outcome.UNCHANGED
    assert_one_complete_version(store, first.source, first.chunks)  # the old version stays whole
