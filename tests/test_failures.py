"""What happens when things go wrong: servers that are down, restart or race, ingests that die.

Every test uses the real embedding model and a real Milvus (embedded Lite, or Milvus
Lite's gRPC server on a free loopback port, started and stopped by its process id).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_contract import TOPICS, ServerProcess, free_port, lite_server, make_document, vectors_for

from rag.config import Settings
from rag.doctor import diagnose
from rag.pipeline import Ingestor
from rag.records import Outcome
from rag.retrieval import Retriever
from rag.store import DocumentStore, StoreUnavailableError
from rag.uploads import UploadError, stage_upload

ROOT = Path(__file__).resolve().parents[1]

VOCABULARY = """
river mountain harbour engine copper bridge winter lantern orchard granite valley signal market library meadow
compass thunder garden silver canal forest island village tower station museum glacier desert harvest factory
railway ferry cathedral bakery festival theatre archive observatory the a of and in on with from under over near
beside across through after before during between builds carries measures records repairs paints studies crosses
protects follows reaches opens old new quiet busy narrow ancient modern northern southern eastern western bright
heavy careful
"""
WORDS = VOCABULARY.split()


def document_text(seed: int, paragraphs: int) -> str:
    """Deterministic prose-like text (real words, so token counts are predictable)."""
    rng = random.Random(seed)
    out = []
    for p in range(paragraphs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "." for _ in range(6)
        ]
        out.append(f"Section {seed}.{p}. " + " ".join(sentences))
    return "\n\n".join(out)


def per_source(store: DocumentStore) -> dict[str, dict]:
    """For each source: chunk rows, distinct hashes, distinct chunk indexes, recorded chunk_count."""
    rows = store.milvus.rows(["source", "doc_hash", "chunk_index", "chunk_count"])
    found: dict[str, dict] = defaultdict(lambda: {"rows": 0, "hashes": set(), "indexes": set(), "counts": set()})
    for r in rows:
        entry = found[r["source"]]
        entry["rows"] += 1
        entry["hashes"].add(r["doc_hash"])
        entry["indexes"].add(r["chunk_index"])
        entry["counts"].add(r["chunk_count"])
    return dict(found)


def assert_each_document_once(store: DocumentStore, sources: set[str]) -> None:
    found = per_source(store)
    assert set(found) == sources
    for source, entry in found.items():
        (count,) = entry["counts"]
        assert len(entry["hashes"]) == 1, f"{source}: several versions {entry['hashes']}"
        assert entry["rows"] == count == len(entry["indexes"]), f"{source}: {entry['rows']} rows, chunk_count {count}"
        assert entry["indexes"] == set(range(count))
    assert sorted(d.source for d in store.list_documents()) == sorted(sources)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env |= {"RAG_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1", **extra}
    return env


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A Milvus Lite gRPC server of this test's own (tests below restart and race it)."""
    process = lite_server(tmp_path / "served" / "milvus.db").start()
    yield process
    process.stop()


def open_store(settings: Settings, embedder) -> DocumentStore:
    return DocumentStore(settings, embedder).open()


def release_embedded(settings: Settings) -> None:
    """Close this process's in-process Milvus Lite server for the settings' file, releasing its lock.

    ``MilvusClient.close()`` leaves it running (and the file locked) until the process exits.
    """
    if settings.is_local_store:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(settings.resolved_milvus_uri)


# Unreachable servers -------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port with nothing listening (it was free a moment ago)."""
    return free_port()


def test_unreachable_server_is_a_clear_error_within_10_s(tmp_path: Path, embedder):
    uri = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(data_dir=tmp_path / "data", milvus_uri=uri)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        open_store(settings, embedder)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f} s"
    message = str(caught.value)
    assert uri in message and "RAG_MILVUS_URI" in message
    print(f"unreachable server reported in {elapsed:.2f} s")


def test_silent_server_times_out_with_a_clear_error(tmp_path: Path, embedder):
    """A port that accepts connections but never speaks gRPC (a hung server, a wrong service)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = Settings(data_dir=tmp_path / "data", milvus_uri=uri, connect_timeout_s=3)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            open_store(settings, embedder)
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert uri in str(caught.value)
    print(f"silent server reported in {elapsed:.2f} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["-m", "ingest", "--uri", "{uri}", "{file}"], ["-m", "rag", "ask", "--uri", "{uri}", "What is a volcano?"]],
    ids=["ingest", "ask"],
)
def test_command_line_with_unreachable_server_exits_2_quickly(tmp_path: Path, command: list[str]):
    uri = f"http://127.0.0.1:{closed_port()}"
    file = tmp_path / "note.md"
    file.write_text("Mount Zenda erupted in 1902.")
    args = [sys.executable, *(part.format(uri=uri, file=file) for part in command)]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=cli_env(tmp_path), timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach Milvus at " + uri), last
    assert "Traceback" not in done.stderr.split("error: cannot reach")[-1]
    assert elapsed < 15, f"took {elapsed:.1f} s"
    print(f"{command[1]} exited 2 in {elapsed:.1f} s")


# Server restarts -----------------------------------------------------------------------


def test_reconnection_is_decided_by_error_codes_not_message_text(tmp_path: Path):
    """pymilvus reports a lost server as CONNECT_FAILED (2) or a gRPC UNAVAILABLE; other codes are not
    retried whatever their text says, and a released collection (101) is loaded, not reconnected."""
    import grpc

    from rag.milvus import MilvusException, is_connection_error, is_not_loaded

    assert is_connection_error(MilvusException(2, "Fail connecting to server"))
    assert not is_connection_error(MilvusException(1, "server unavailable: connect timeout, closed channel"))
    assert not is_connection_error(MilvusException(6, "cannot parse expression"))
    assert is_not_loaded(MilvusException(101, "collection released")) and not is_not_loaded(MilvusException(100))

    class Unavailable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    assert is_connection_error(Unavailable())
    assert not is_connection_error(ValueError("unavailable"))


@pytest.mark.server
def test_a_stopped_server_raises_code_2_and_is_reported_unavailable(tmp_path: Path, server: ServerProcess):
    """Fault injection with a real server: what pymilvus raises once it is gone is what the store retries on."""
    from rag.milvus import MilvusCollection, is_connection_error

    collection = MilvusCollection(Settings(data_dir=tmp_path / "data", milvus_uri=server.uri)).connect()
    assert collection.exists() is False
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="cannot reach Milvus") as caught:
            collection.exists()  # fails, reconnects once, fails again: a clear error
        assert time.monotonic() - started < 10
        assert is_connection_error(caught.value.__cause__), repr(caught.value.__cause__)
        server.start()
        assert collection.exists() is False  # the next call reconnects
    finally:
        collection.close()


@pytest.mark.server
def test_restarted_server_is_reconnected_on_the_next_request(tmp_path: Path, embedder, server: ServerProcess):
    settings = Settings(data_dir=tmp_path / "data", milvus_uri=server.uri, collection="docs")
    store = open_store(settings, embedder)
    try:
        chunks = make_document("volcano.md", TOPICS["volcano"])
        store.write(chunks, vectors_for(embedder, chunks))
        port = server.port
        server.restart()
        assert server.port == port
        # The old gRPC channel is dead; the store reconnects once and the data survived.
        assert store.count() == len(chunks)
        hits = store.search("eruption", embedder.embed_query("eruption"), k=1, mode="hybrid")
        assert hits and hits[0].source == "volcano.md"
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.count()
        assert time.monotonic() - started < 10
        server.start()
        assert store.version_state("volcano.md", chunks[0].content_hash) == (True, True)
    finally:
        store.close()


# Killed ingest -------------------------------------------------------------------------

KILL_SETTINGS = {"RAG_CHUNK_SIZE": "64", "RAG_CHUNK_OVERLAP": "8", "RAG_EMBEDDING_BATCH_SIZE": "4"}
PROGRESS = re.compile(r"chunks:[^\r\n]*?(\d+)/(\d+)")


def kill_mid_ingest(args: list[str], env: dict[str, str], at_least: int = 32) -> tuple[int, int]:
    """Run an ingest and SIGKILL it once its chunk progress passes ``at_least`` (before the end).

    Progress is reported after each group of chunks is handed to the store writer, so by
    then earlier groups are stored and later ones are not.
    """
    process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT, env=env)
    seen = ""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            data = os.read(process.stderr.fileno(), 4096)  # type: ignore[union-attr]
            if not data:
                break
            seen += data.decode(errors="replace")
            for done, total in PROGRESS.findall(seen[-400:]):
                if at_least <= int(done) < int(total):
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    return int(done), int(total)
        raise AssertionError(f"the ingest ended before it could be killed:\n{seen[-3000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded", "server"])
def test_ingest_killed_mid_file_then_rerun_leaves_each_document_once(tmp_path: Path, embedder, backend: str, request):
    uri = request.getfixturevalue("server").uri if backend == "server" else str(tmp_path / "data" / "milvus.db")
    small, big = tmp_path / "docs" / "small.txt", tmp_path / "docs" / "big.txt"
    small.parent.mkdir()
    small.write_text(document_text(1, 2))
    big.write_text(document_text(2, 3))  # version 1 of big.txt: a few chunks
    env = cli_env(tmp_path, RAG_MILVUS_URI=uri, RAG_COLLECTION="docs", **KILL_SETTINGS)
    settings = Settings(**{k[4:].lower(): v for k, v in env.items() if k.startswith("RAG_")})
    first = Ingestor(settings, embedder, store := open_store(settings, embedder)).ingest([small, big])
    assert not first.failed
    sources = {r.source for r in first.files}
    store.close()
    release_embedded(settings)  # let the ingest process open the Lite file

    big.write_text(document_text(3, 60))  # version 2: hundreds of chunks
    args = [sys.executable, "-m", "ingest", str(small), str(big)]
    done, total = kill_mid_ingest(args, env)

    store = open_store(settings, embedder)
    try:
        torn = per_source(store)[str(big.resolve())]
        assert len(torn["hashes"]) == 2, "the old version stays until the new one is complete"
        report = diagnose(settings)
        assert report.exit_code == 1 and report.torn == [str(big.resolve())], report.problems
        print(f"{backend}: killed at {done}/{total} chunks; {torn['rows']} rows of two versions were left")

        rerun = Ingestor(settings, embedder, store).ingest([small, big])
        outcomes = {Path(r.source).name: r.outcome for r in rerun.files}
        assert outcomes == {"small.txt": Outcome.UNCHANGED, "big.txt": Outcome.REPLACED}
        assert_each_document_once(store, sources)
        assert per_source(store)[str(big.resolve())]["rows"] == total
        assert diagnose(settings).exit_code == 0
    finally:
        store.close()


# Concurrent ingests --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.server
def test_two_ingests_over_overlapping_files_leave_no_duplicates(tmp_path: Path, embedder, server: ServerProcess):
    folder = tmp_path / "docs"
    folder.mkdir()
    files = []
    for n, name in enumerate("abcd"):
        path = folder / f"{name}.md"
        path.write_text(document_text(10 + n, 8))
        files.append(path)
    a, b, c, d = (str(f) for f in files)
    env = cli_env(tmp_path, RAG_MILVUS_URI=server.uri, RAG_COLLECTION="docs", **KILL_SETTINGS)
    runs = [[a, b, c], [c, b, d]]  # both reach b and c at about the same time
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ingest", "--json", *paths],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for paths in runs
    ]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err[-2000:]
    settings = Settings(data_dir=tmp_path / "data", milvus_uri=server.uri, collection="docs")
    store = open_store(settings, embedder)
    try:
        assert_each_document_once(store, {str(f.resolve()) for f in files})
        assert diagnose(settings).exit_code == 0
    finally:
        store.close()


# Odd upload names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/evil.md",
        "..\\..\\windows\\system.md",
        "notes/../../../$(rm -rf ~); `id` | tee.md",
        "Résumé – final (v2) ☃ \t\n.md",
        "a" * 300 + ".md",
    ],
)
def test_odd_upload_names_stay_inside_the_upload_folder_and_ingest(tmp_path: Path, embedder, name: str):
    settings = Settings(data_dir=tmp_path / "data", collection="docs")
    uploads = settings.uploads_dir
    staged = stage_upload(name, b"Mount Zenda erupted in 1902 and buried the valley.", uploads, max_bytes=10_000)
    assert "/" not in staged.name and "\\" not in staged.name and ".." not in staged.name
    assert len(staged.name) <= 150 and staged.name.endswith(".md")
    assert staged.staging.parent == uploads.resolve() and staged.target.parent == uploads.resolve()
    store = open_store(settings, embedder)
    try:
        result = Ingestor(settings, embedder, store).ingest_file(staged.staging, source=staged.name)
        assert result.outcome is Outcome.ADDED, result.error
        final = staged.commit()
        assert final.parent == uploads.resolve() and final.exists()
        assert [d.source for d in store.list_documents()] == [staged.name]
        assert store.count(staged.name) == 1
    finally:
        store.close()
    assert {p.name for p in tmp_path.iterdir()} == {"data"}, "nothing written outside the data folder"


@pytest.mark.parametrize("name", ["..", "../", "....", "/", "  ", "../../"])
def test_upload_names_with_nothing_left_are_refused(tmp_path: Path, name: str):
    with pytest.raises(UploadError):
        stage_upload(name, b"text", tmp_path / "uploads", max_bytes=10_000)


# Parallel retrieval --------------------------------------------------------------------

QUESTIONS = [
    "When did the volcano erupt?",
    "What is under the crater?",
    "How does sourdough rise?",
    "How should bread be baked?",
    "What is the Sicilian Defence?",
    "How does castling work?",
    "Why is volcanic soil fertile?",
    "What is a laminated dough?",
    "What matters in a chess endgame?",
    "Where did the lava cool?",
] * 2


@pytest.mark.parametrize("backend", ["embedded", pytest.param("server", marks=pytest.mark.server)])
def test_twenty_parallel_retrievals_complete_without_error(tmp_path: Path, embedder, backend: str, request):
    uri = request.getfixturevalue("server").uri if backend == "server" else ""
    settings = Settings(data_dir=tmp_path / "data", milvus_uri=uri, collection="docs")
    store = open_store(settings, embedder)
    try:
        for name, texts in TOPICS.items():
            chunks = make_document(f"{name}.md", texts)
            store.write(chunks, vectors_for(embedder, chunks))
        retriever = Retriever(settings, embedder, store)
        expected = {q: [h.ids for h in retriever.retrieve(q).closest] for q in set(QUESTIONS)}
        barrier = threading.Barrier(len(QUESTIONS))

        def ask(question: str) -> list[list[str]]:
            barrier.wait(timeout=60)  # all twenty start together
            return [h.ids for h in retriever.retrieve(question).closest]

        with ThreadPoolExecutor(max_workers=len(QUESTIONS)) as pool:
            answers = list(pool.map(ask, QUESTIONS))
        assert answers == [expected[q] for q in QUESTIONS]
    finally:
        store.close()


def test_encode_and_count_tokens_take_turns(embedder, monkeypatch):
    """The fast tokenizer's truncation setting is process-wide state: a ``count_tokens`` call (an
    ingest) during an ``encode`` in another thread (a question) changed that question's vector.
    So the embedder runs one of them at a time."""
    events: list[str] = []
    real_encode = embedder.model.encode

    def slow_encode(*args, **kwargs):
        events.append("encode started")
        time.sleep(0.3)
        events.append("encode ended")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(embedder.model, "encode", slow_encode)
    # ``encode`` itself: ``embed_query`` may answer a question asked before from the recent vectors
    question = threading.Thread(target=embedder.encode, args=(["When did the volcano erupt?"],))
    question.start()
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events, "the encode never reached the model"
    embedder.count_tokens("Mount Zenda is a stratovolcano.")
    events.append("counted")
    question.join()
    assert events == ["encode started", "encode ended", "counted"]
