"""The store's behaviour as one abstract test class, run against several Milvus back ends.

Like langchain-milvus's ``test_vectorstores``, ``StoreContract`` holds the tests and a
subclass per back end says only how to reach it (``backend_uri``) and what it can do
(``supports_bm25``). The process helpers below start and stop the servers that the back
ends need: Milvus Lite's own gRPC server and the Milvus 2.3 server of the ``milvus``
package, each on a free loopback port and stopped by its process id.

    class TestMyServer(StoreContract):
        supports_bm25 = True

        @pytest.fixture()
        def backend_uri(self, my_server) -> str:
            return my_server.uri
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from rag.chunking import chunk_id
from rag.config import Settings
from rag.embedding import Embedder
from rag.milvus import MilvusCollection
from rag.records import Chunk
from rag.store import DocumentStore, EmbeddingModelMismatchError

# Servers -------------------------------------------------------------------------------

MILVUS23_BINARY = Path(sys.executable).with_name("milvus-server")
MILVUS23_COMPONENTS = (
    "rootCoord",
    "proxy",
    "queryCoord",
    "queryNode",
    "indexCoord",
    "indexNode",
    "dataCoord",
    "dataNode",
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerProcess:
    """A Milvus server child process on ``127.0.0.1:port``, in its own process group."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.version = ""

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start it and wait until it answers a version request."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command, stdout=log_file, stderr=subprocess.STDOUT, cwd=self.cwd, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if port_open(self.port):
                try:
                    collection = MilvusCollection(Settings(milvus_uri=self.uri, connect_timeout_s=5)).connect()
                    self.version = collection.server_version
                    collection.close()
                    return self
                except Exception:
                    pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the process group the server leads; SIGKILL whatever is left after ``timeout_s``."""
        if self.process is None:
            return
        group = self.process.pid
        self._signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._group_alive(group):
            time.sleep(0.2)
        if self._group_alive(group):
            self._signal_group(group, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def restart(self, timeout_s: float = 60.0) -> ServerProcess:
        self.stop()
        return self.start(timeout_s)

    @staticmethod
    def _signal_group(group: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)

    def _group_alive(self, group: int) -> bool:
        if self.process is not None:
            self.process.poll()  # reap the leader, so that a zombie does not count
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def lite_server(data_dir: Path, port: int | None = None) -> ServerProcess:
    """``milvus-lite server`` serving ``data_dir`` on loopback (not started yet)."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "milvus_lite", "server",
        "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return ServerProcess("milvus-lite server", command, port, data_dir.parent / f"{data_dir.name}.log")


def milvus23_server(base_dir: Path, port: int | None = None) -> ServerProcess:
    """The Milvus 2.3 standalone server of the ``milvus`` package (``milvus-server``), not started yet.

    Clients use ``127.0.0.1:port``; every component advertises 127.0.0.1. Milvus 2.3's
    components still listen on all interfaces (it has no listen-address setting), and the
    binary keeps its pid file in /run/milvus, so one such server runs per machine at a time.
    """
    port = port or free_port()
    command = [str(MILVUS23_BINARY), "--data", str(base_dir), "--proxy-port", str(port)]
    for component in MILVUS23_COMPONENTS:
        command += ["--extra-config", f"{component}.ip=127.0.0.1"]
    return ServerProcess("milvus-server 2.3", command, port, base_dir / "server.log", cwd=base_dir)


def remove_milvus23_files(base_dir: Path) -> None:
    """The server unpacks its 500 MB binary into the data folder on every start."""
    shutil.rmtree(base_dir / "bin", ignore_errors=True)
    shutil.rmtree(base_dir / "lib", ignore_errors=True)


# Documents -----------------------------------------------------------------------------

TOPICS = {
    "volcano": [
        "Mount Zenda is a stratovolcano whose last eruption buried the valley under grey ash.",
        "Lava from the volcano cooled into basalt columns along the northern coast.",
        "Seismologists watch the magma chamber beneath the crater for signs of unrest.",
        "The eruption of 1902 sent pyroclastic flows down the southern slope of the volcano.",
        "Volcanic soil around the mountain is fertile, so farmers grow coffee on its flanks.",
    ],
    "baking": [
        "Sourdough bread rises because wild yeast and lactobacilli ferment the flour.",
        "Bake the loaf in a hot oven with steam so the crust stays thin and crisp.",
        "Knead the dough until it is smooth, then let it proof overnight in the fridge.",
        "A croissant is laminated: butter is folded into the dough many times.",
    ],
    "chess": [
        "The Sicilian Defence answers 1.e4 with c5 and leads to sharp, unbalanced chess positions.",
        "Castling moves the king two squares towards a rook and tucks it behind pawns.",
        "In the endgame, an active king is worth more than a passive rook.",
    ],
}


def make_document(
    source: str,
    texts: Sequence[str],
    version: str = "v1",
    *,
    content_hash: str | None = None,
    page: int | None = None,
) -> list[Chunk]:
    """Chunks of one document version, as the chunker would make them: two chunks a page, or
    all on ``page``; the content hash follows source and version unless given."""
    content_hash = content_hash or hashlib.sha256(f"{source}:{version}:{len(texts)}".encode()).hexdigest()
    return [
        Chunk(
            id=chunk_id(source, content_hash, index),
            text=text,
            source=source,
            title=Path(source).name,
            page=index // 2 + 1 if page is None else page,
            index=index,
            count=len(texts),
            content_hash=content_hash,
            doc_pages=(len(texts) + 1) // 2 if page is None else 1,
            doc_bytes=sum(len(t) for t in texts),
        )
        for index, text in enumerate(texts)
    ]


def rows_of(store: DocumentStore, source: str) -> list[dict]:
    """The stored rows of one source: id, version, position and when they were added."""
    fields = ["id", "doc_hash", "chunk_index", "chunk_count", "added_at"]
    return store.rows_of(source, fields)


def vectors_for(embedder: Embedder, chunks: Sequence[Chunk]) -> np.ndarray:
    return embedder.encode([c.text for c in chunks])


def unique_collection() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def collection_metadata(store: DocumentStore) -> dict[str, str]:
    """The model metadata recorded with the collection (properties, or the schema description)."""
    return store.milvus.metadata()


# The contract --------------------------------------------------------------------------


class StoreContract:
    """Behaviour every Milvus back end must show. Subclasses provide ``backend_uri``."""

    supports_bm25: ClassVar[bool] = True

    @pytest.fixture()
    def backend_uri(self) -> str:
        """Where the store lives: a Milvus Lite path or a server URI."""
        raise NotImplementedError

    @pytest.fixture()
    def open_store(
        self, backend_uri: str, embedder: Embedder, tmp_path: Path
    ) -> Iterator[Callable[..., DocumentStore]]:
        """Open a store on a new collection (or on ``collection``); all are dropped afterwards."""
        opened: list[DocumentStore] = []

        def open_(collection: str | None = None, *, with_embedder: Embedder | None = None) -> DocumentStore:
            settings = Settings(
                data_dir=tmp_path / "data", milvus_uri=backend_uri, collection=collection or unique_collection()
            )
            store = DocumentStore(settings, with_embedder or embedder)
            opened.append(store)
            return store.open()

        yield open_
        for store in opened:
            try:
                if store.milvus.connected:
                    store.milvus.drop_if_exists()
            finally:
                store.close()

    def write(self, store: DocumentStore, embedder: Embedder, chunks: list[Chunk]) -> list[Chunk]:
        store.write(chunks, vectors_for(embedder, chunks))
        return chunks

    def write_topics(self, store: DocumentStore, embedder: Embedder, folder: str = "") -> None:
        for name, texts in TOPICS.items():
            self.write(store, embedder, make_document(f"{folder}{name}.md", texts))

    # Collection ------------------------------------------------------------------------

    def test_creates_collection_with_model_metadata(self, open_store, embedder):
        store = open_store()
        assert store.milvus.exists()
        meta = collection_metadata(store)
        assert meta["rag.embedding_model"] == embedder.model_name
        assert meta["rag.dimension"] == str(embedder.dimension)
        fields = store.milvus.fields()
        assert int(fields["vector"]["params"]["dim"]) == embedder.dimension
        index = store.index_description
        assert index["index_type"] == store.settings.index_type
        assert index["metric_type"] == store.settings.metric
        assert store.hybrid_available is self.supports_bm25
        if not self.supports_bm25:
            assert any("dense" in notice for notice in store.notices), store.notices
        assert store.count() == 0
        assert store.list_documents() == []

    def test_reopen_keeps_collection_and_capabilities(self, open_store, embedder):
        store = open_store()
        self.write(store, embedder, make_document("notes/volcano.md", TOPICS["volcano"]))
        again = open_store(store.name)
        assert again.hybrid_available is store.hybrid_available
        assert [d.source for d in again.list_documents()] == ["notes/volcano.md"]

    def test_model_mismatch_is_an_error(self, open_store, embedder):
        store = open_store()
        other = copy.copy(embedder)
        other.model_name = "someone/other-model"
        with pytest.raises(EmbeddingModelMismatchError) as caught:
            open_store(store.name, with_embedder=other)
        message = str(caught.value)
        assert embedder.model_name in message and "someone/other-model" in message
        assert "--reset" in message

    # Writing ---------------------------------------------------------------------------

    def test_write_then_version_state(self, open_store, embedder):
        store = open_store()
        chunks = self.write(store, embedder, make_document("doc.md", TOPICS["volcano"]))
        digest = chunks[0].content_hash
        assert store.version_state("doc.md", digest) == (True, True)
        assert store.version_state("doc.md", "0" * 64) == (True, False)
        assert store.version_state("other.md", digest) == (False, False)
        assert store.count("doc.md") == len(chunks)

    def test_writing_the_same_version_again_is_an_upsert(self, open_store, embedder):
        store = open_store()
        chunks = make_document("doc.md", TOPICS["baking"])
        for _ in range(2):
            self.write(store, embedder, chunks)
        assert store.count() == len(chunks)
        assert [d.chunks for d in store.list_documents()] == [len(chunks)]

    def test_partly_written_version_is_not_complete(self, open_store, embedder):
        store = open_store()
        chunks = make_document("doc.md", TOPICS["volcano"])
        self.write(store, embedder, chunks[:2])
        assert store.version_state("doc.md", chunks[0].content_hash) == (True, False)
        self.write(store, embedder, chunks)
        assert store.version_state("doc.md", chunks[0].content_hash) == (True, True)

    def test_replace_leaves_no_stale_chunks(self, open_store, embedder):
        store = open_store()
        old = self.write(store, embedder, make_document("doc.md", TOPICS["volcano"], "v1"))
        new = self.write(store, embedder, make_document("doc.md", TOPICS["chess"], "v2"))
        rows = store.rows_of("doc.md", ["doc_hash", "chunk_index"])
        assert len(rows) == len(new) < len(old)
        assert {r["doc_hash"] for r in rows} == {new[0].content_hash}
        assert sorted(r["chunk_index"] for r in rows) == list(range(len(new)))
        assert store.version_state("doc.md", old[0].content_hash) == (True, False)
        assert store.version_state("doc.md", new[0].content_hash) == (True, True)

    def test_delete(self, open_store, embedder):
        store = open_store()
        chunks = self.write(store, embedder, make_document("a.md", TOPICS["volcano"]))
        kept = self.write(store, embedder, make_document("b.md", TOPICS["chess"]))
        assert store.delete("a.md") == len(chunks)
        assert store.delete("a.md") == 0
        assert store.version_state("a.md", chunks[0].content_hash) == (False, False)
        assert store.count() == len(kept)
        assert store.find_sources("b.md") == ["b.md"]

    def test_list_documents_counts(self, open_store, embedder):
        store = open_store()
        self.write_topics(store, embedder, "docs/")
        documents = {d.source: d for d in store.list_documents()}
        assert set(documents) == {f"docs/{name}.md" for name in TOPICS}
        for name, texts in TOPICS.items():
            document = documents[f"docs/{name}.md"]
            assert document.chunks == len(texts)
            assert document.pages == (len(texts) + 1) // 2
            assert document.title == f"{name}.md"
        assert store.count() == sum(len(t) for t in TOPICS.values())
        assert [r["chunk_index"] for r in store.chunks_of("docs/volcano.md", [3, 1])] == [1, 3]

    # Searching -------------------------------------------------------------------------

    def test_dense_search_with_source_filter(self, open_store, embedder):
        store = open_store()
        self.write_topics(store, embedder)
        question = "When did the volcano erupt?"
        vector = embedder.embed_query(question)
        hits = store.search(question, vector, k=3, mode="dense")
        assert [h.source for h in hits] == ["volcano.md"] * 3
        assert 0.3 < hits[0].score <= 1.0001
        assert hits[0].score >= hits[-1].score
        filtered = store.search(question, vector, k=3, mode="dense", sources=["chess.md", "baking.md"])
        assert filtered and {h.source for h in filtered} <= {"chess.md", "baking.md"}
        assert all(h.score < hits[-1].score for h in filtered)
        hit = hits[0]
        assert hit.page is not None and hit.ids and hit.title == "volcano.md"

    def test_hybrid_search_or_its_dense_fallback(self, open_store, embedder):
        store = open_store()
        self.write_topics(store, embedder)
        question = "Sicilian Defence"
        vector = embedder.embed_query(question)
        hybrid = store.search(question, vector, k=2, mode="hybrid")
        assert hybrid and hybrid[0].source == "chess.md"
        assert "Sicilian" in hybrid[0].text
        keyword = store.search(question, vector, k=1, mode="bm25")
        assert keyword and "Sicilian" in keyword[0].text
        if not store.hybrid_available:  # both fell back to dense search
            dense = store.search(question, vector, k=2, mode="dense")
            assert [h.ids for h in hybrid] == [h.ids for h in dense]
        only_baking = store.search(question, vector, k=2, mode="hybrid", sources=["baking.md"])
        assert {h.source for h in only_baking} <= {"baking.md"}

    def test_search_on_empty_collection(self, open_store, embedder):
        store = open_store()
        assert store.search("anything", embedder.embed_query("anything"), k=4, mode="hybrid") == []

    # Diagnosis -------------------------------------------------------------------------

    def test_doctor_reads_the_collection_and_finds_a_torn_document(self, open_store, embedder):
        from rag.doctor import diagnose

        store = open_store()
        self.write(store, embedder, make_document("whole.md", TOPICS["chess"]))
        healthy = diagnose(store.settings)
        assert healthy.exit_code == 0, healthy.problems
        assert healthy.server_bm25 is self.supports_bm25 and healthy.hybrid is self.supports_bm25
        assert any(
            i.startswith(f"vector: {store.settings.index_type} {store.settings.metric}") for i in healthy.indexes
        )
        assert (healthy.documents, healthy.chunks) == (1, len(TOPICS["chess"]))
        self.write(store, embedder, make_document("part.md", TOPICS["volcano"])[:2])
        torn = diagnose(store.settings)
        assert torn.exit_code == 1 and torn.torn == ["part.md"]
