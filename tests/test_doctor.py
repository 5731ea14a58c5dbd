"""``python -m rag doctor`` on healthy and damaged stores (real model, real Milvus Lite)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_contract import TOPICS, free_port, make_document, vectors_for

from rag.cli import main as rag_main
from rag.config import Settings
from rag.doctor import diagnose, format_report, run_doctor
from rag.local_server import LocalServer
from rag.pipeline import Ingestor
from rag.store import DocumentStore


@pytest.fixture()
def doc_store(settings: Settings, embedder) -> Iterator[DocumentStore]:
    store = DocumentStore(settings, embedder).open()
    yield store
    store.close()


def write(store: DocumentStore, embedder, chunks) -> None:
    store.write(chunks, vectors_for(embedder, chunks))


def report_text(settings: Settings) -> tuple[int, str]:
    out = io.StringIO()
    status = run_doctor(settings, out=out)
    return status, out.getvalue()


def test_healthy_store(settings: Settings, embedder, doc_store: DocumentStore, tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "volcano.md").write_text("\n\n".join(TOPICS["volcano"]))
    (folder / "chess.txt").write_text("\n\n".join(TOPICS["chess"]))
    report = Ingestor(settings, embedder, doc_store).ingest([folder])
    assert not report.failed
    status, text = report_text(settings)
    assert status == 0, text
    assert f"Milvus Lite file {settings.resolved_milvus_uri}, opened in this process" in text
    assert f"URI:         {settings.resolved_milvus_uri}" in text
    assert "milvus_lite" in text and "built-in BM25: yes" in text
    for line in ("vector: FLOAT_VECTOR(dim=384)", "id: VARCHAR(max_length=64) [primary key]", "doc_hash: VARCHAR"):
        assert line in text
    assert "function keywords_bm25: BM25 ['keywords'] -> ['sparse']" in text
    assert "vector: HNSW COSINE" in text and "sparse: SPARSE_INVERTED_INDEX BM25" in text
    assert "search:      hybrid (dense + BM25)" in text
    assert "recorded 'sentence-transformers/all-MiniLM-L6-v2' (384 dims)" in text and ": matches" in text
    assert f"2 documents, {report.chunks_written} chunks" in text
    assert text.rstrip().endswith("No problems found.")


def test_torn_document_written_only_in_part(settings: Settings, embedder, doc_store: DocumentStore):
    write(doc_store, embedder, make_document("whole.md", TOPICS["chess"]))
    part = make_document("part.md", TOPICS["volcano"])  # 5 chunks
    write(doc_store, embedder, part[:2])  # as if the ingest died after two of them
    report = diagnose(settings)
    assert report.exit_code == 1
    assert report.torn == ["part.md"] and report.orphans == []
    assert report.documents == 2 and report.chunks == len(TOPICS["chess"]) + 2
    (problem,) = report.problems
    assert "torn document part.md: 2 of 5 chunks stored" in problem
    assert "python -m ingest" in problem
    assert "Problems (1):" in format_report(report)


def test_torn_document_with_two_versions(settings: Settings, embedder, doc_store: DocumentStore):
    old = make_document("report.md", TOPICS["volcano"], version="v1")
    write(doc_store, embedder, old)
    new = make_document("report.md", TOPICS["baking"], version="v2")
    doc_store.upsert(new[:3], vectors_for(embedder, new[:3]))  # the new version is half written
    report = diagnose(settings)
    assert report.exit_code == 1
    assert report.torn == ["report.md"]
    assert any("chunks of 2 versions" in p for p in report.problems)
    assert any("3 of 4 chunks" in p for p in report.problems)
    write(doc_store, embedder, new)  # the rerun finishes it and removes the old version
    assert diagnose(settings).exit_code == 0


def test_orphan_chunks(settings: Settings, embedder, doc_store: DocumentStore):
    write(doc_store, embedder, make_document("orphan.md", TOPICS["chess"]))
    doc_store.milvus.delete(source="orphan.md", first_chunks=True)  # fault injection: lose the first chunk
    report = diagnose(settings)
    assert report.exit_code == 1
    assert report.orphans == ["orphan.md"] and report.documents == 0
    assert "2 orphan chunks of orphan.md" in report.problems[0]


def test_model_mismatch(settings: Settings, embedder, doc_store: DocumentStore):
    write(doc_store, embedder, make_document("a.md", TOPICS["chess"]))
    other = settings.model_copy(update={"embedding_model": "someone/other-model"})
    status, text = report_text(other)
    assert status == 1
    assert "configured 'someone/other-model': MISMATCH" in text
    assert "embedding model mismatch" in text


def test_missing_collection_is_a_problem_and_not_created(settings: Settings):
    status, text = report_text(settings)
    assert status == 1
    assert f"there is no collection '{settings.collection}'" in text
    assert diagnose(settings).exists is False  # the doctor only reads


def test_unreachable_server(tmp_path: Path):
    uri = f"http://127.0.0.1:{free_port()}"
    status, text = report_text(Settings(data_dir=tmp_path, milvus_uri=uri))
    assert status == 2
    assert f"URI:         {uri}" in text and "UNREACHABLE: cannot reach Milvus" in text


def test_command_line_exit_codes(settings: Settings, embedder, doc_store: DocumentStore, capsys):
    write(doc_store, embedder, make_document("a.md", TOPICS["chess"]))
    args = ["doctor", "--uri", settings.resolved_milvus_uri, "--collection", settings.collection]
    assert rag_main(args) == 0
    assert "No problems found." in capsys.readouterr().out
    part = make_document("b.md", TOPICS["volcano"])
    write(doc_store, embedder, part[:1])
    assert rag_main(args) == 1
    assert "torn document b.md" in capsys.readouterr().out
    assert rag_main(["doctor", "--uri", f"http://127.0.0.1:{free_port()}"]) == 2


@pytest.mark.server
def test_reports_the_local_server_of_the_app(tmp_path: Path, embedder):
    settings = Settings(data_dir=tmp_path / "data", collection="docs")
    server = LocalServer(Path(settings.resolved_milvus_uri))
    uri = server.start()
    try:
        store = DocumentStore(settings, embedder).open()  # finds the endpoint, as ingest does
        assert store.uri == uri
        write(store, embedder, make_document("a.md", TOPICS["chess"]))
        store.close()
        status, text = report_text(settings)
        assert status == 0, text
        assert f"served by the app's local server at {uri} (pid {server.process.pid})" in text
        assert f"URI:         {uri}" in text
    finally:
        server.stop()
