"""The store contract on three back ends, and migration between them.

(a) embedded Milvus Lite on a temporary file, (b) Milvus Lite's own gRPC server
(``milvus-lite server``) and (c) a real Milvus 2.3 standalone server (the ``milvus``
package's ``milvus-server``; no BM25 before 2.5, so the store is dense-only there). Each
server runs once per session on a free loopback port and is stopped by its process id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_contract import (
    MILVUS23_BINARY,
    TOPICS,
    ServerProcess,
    StoreContract,
    lite_server,
    make_document,
    milvus23_server,
    remove_milvus23_files,
    unique_collection,
    vectors_for,
)

from rag.config import Settings
from rag.doctor import diagnose
from rag.migrate import main as migrate_main
from rag.migrate import migrate
from rag.retrieval import Retriever
from rag.store import DocumentStore


@pytest.fixture(scope="session")
def lite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded Milvus Lite file for the session; each test uses its own collection."""
    return tmp_path_factory.mktemp("embedded") / "milvus.db"


@pytest.fixture(scope="session")
def lite_grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = lite_server(tmp_path_factory.mktemp("lite-server") / "milvus.db").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus23(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not MILVUS23_BINARY.exists():
        pytest.skip(f"{MILVUS23_BINARY} is missing: pip install milvus==2.3.5 to run the Milvus 2.3 server tests")
    base = tmp_path_factory.mktemp("milvus23")
    server = milvus23_server(base).start(timeout_s=240)
    yield server
    server.stop(timeout_s=10)  # its graceful shutdown can take minutes; the data is thrown away anyway
    remove_milvus23_files(base)


class TestEmbeddedLite(StoreContract):
    supports_bm25 = True

    @pytest.fixture()
    def backend_uri(self, lite_file: Path) -> str:
        return str(lite_file)


@pytest.mark.server
class TestLiteGrpcServer(StoreContract):
    supports_bm25 = True

    @pytest.fixture()
    def backend_uri(self, lite_grpc_server: ServerProcess) -> str:
        return lite_grpc_server.uri


@pytest.mark.server
@pytest.mark.slow
class TestMilvus23Server(StoreContract):
    """Milvus before 2.5 has no BM25 function: the store must create a dense-only collection."""

    supports_bm25 = False

    @pytest.fixture()
    def backend_uri(self, milvus23: ServerProcess) -> str:
        return milvus23.uri

    def test_server_reports_a_version_before_2_5(self, open_store):
        store = open_store()
        assert store.server_version.lstrip("v").startswith("2.3")
        assert not store.server_supports_bm25
        assert any("2.5" in notice for notice in store.notices)


# Migration -----------------------------------------------------------------------------


def _fill(settings: Settings, embedder) -> dict[str, int]:
    store = DocumentStore(settings, embedder).open()
    try:
        for name, texts in TOPICS.items():
            chunks = make_document(f"docs/{name}.md", texts)
            store.write(chunks, vectors_for(embedder, chunks))
        return {d.source: d.chunks for d in store.list_documents()}
    finally:
        store.close()


def _rows(store: DocumentStore) -> dict[str, dict]:
    fields = ["id", "text", "vector", "source", "doc_hash", "chunk_index", "chunk_count", "page", "added_at"]
    rows = store.milvus.rows(fields)
    return {r["id"]: r for r in rows}


@pytest.mark.server
def test_migrate_lite_file_to_lite_server(tmp_path: Path, embedder, lite_grpc_server: ServerProcess):
    source = Settings(data_dir=tmp_path / "data", collection="docs")
    documents = _fill(source, embedder)
    target = Settings(data_dir=tmp_path / "data", milvus_uri=lite_grpc_server.uri, collection=unique_collection())
    report = migrate(source, target, batch_size=4)  # several batches
    assert report.complete, report.summary()
    assert report.copied == report.source_chunks == sum(documents.values())
    assert report.documents == len(documents)

    before = DocumentStore(source, embedder).open()
    after = DocumentStore(target, embedder).open()
    try:
        assert {d.source: d.chunks for d in after.list_documents()} == documents
        old, new = _rows(before), _rows(after)
        assert old.keys() == new.keys()
        for chunk_id, row in old.items():
            copied = new[chunk_id]
            assert copied["vector"] == pytest.approx(row["vector"], abs=1e-6)  # not re-embedded
            assert {k: copied[k] for k in row if k != "vector"} == {k: row[k] for k in row if k != "vector"}
        assert after.hybrid_available  # the Lite server makes the BM25 field again from the text
        retrieval = Retriever(target, embedder, after).retrieve("When did the volcano erupt?")
        assert retrieval.found and retrieval.hits[0].source == "docs/volcano.md"
        assert diagnose(target).exit_code == 0
    finally:
        before.close()
        after.close()
    # Running it again is harmless: the copy is an upsert.
    assert migrate(source, target).target_chunks == report.target_chunks


@pytest.mark.server
def test_migrate_command_line(tmp_path: Path, embedder, lite_grpc_server: ServerProcess, capsys, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_COLLECTION", "docs")
    documents = _fill(Settings(), embedder)
    name = unique_collection()
    status = migrate_main(["--to", lite_grpc_server.uri, "--to-collection", name])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert f"copied {sum(documents.values())} of {sum(documents.values())} chunks" in out.out
    missing = migrate_main(["--to", lite_grpc_server.uri, "--collection", "nothing_here"])
    assert missing == 2
    assert "no collection 'nothing_here'" in capsys.readouterr().err


@pytest.mark.server
@pytest.mark.slow
def test_migrate_to_milvus23_is_dense_only(tmp_path: Path, embedder, milvus23: ServerProcess):
    source = Settings(data_dir=tmp_path / "data", collection="docs")
    documents = _fill(source, embedder)
    target = Settings(data_dir=tmp_path / "data", milvus_uri=milvus23.uri, collection=unique_collection())
    report = migrate(source, target)
    assert report.complete and report.documents == len(documents)
    store = DocumentStore(target, embedder).open()
    try:
        assert not store.hybrid_available
        hits = Retriever(target, embedder, store).retrieve("Sicilian Defence opening").hits
        assert hits and hits[0].source == "docs/chess.md"
        store.milvus.drop()
    finally:
        store.close()
