"""``python -m ingest --shard K/N``: deterministic shares of a corpus, ingested in parallel.

The share of a file is fixed by the SHA-1 of its stored name, the same in every process; the
end-to-end test runs two real ``--shard`` processes at once against the real Milvus 2.3
server (the ``milvus`` package's ``milvus-server``, as in test_store_backends.py) and compares
the collection they make with one made by a single run: same ids, rows and vectors, no
duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from store_contract import (
    MILVUS23_BINARY,
    TOPICS,
    ServerProcess,
    milvus23_server,
    remove_milvus23_files,
    unique_collection,
)

from ingest.cli import main
from rag.config import Settings
from rag.milvus import MilvusCollection
from rag.sharding import Shard, parse_shard, shard_index, shard_paths

ROOT = Path(__file__).resolve().parents[1]
PDFS = Path(__file__).resolve().parent / "data" / "pdfs"
NAMES = [f"docs/{i:03d}-{word}.txt" for i, word in enumerate(["alpha", "beta", "gamma", "delta"] * 50)]


# Shares -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shard"), [("1/1", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 3 / 3 ", Shard(3, 3))])
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(parse_shard(text)) == f"{shard.k}/{shard.n}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/3", "K in 0/3 must be between 1 and 3: workers count from 1"),
        ("4/3", "K in 4/3 must be between 1 and 3"),
        ("1/0", "N in 1/0 is the number of workers: at least 1"),
        ("2", "expected K/N, such as 2/4 (worker 2 of 4), not '2'"),
        ("a/b", "expected K/N"),
        ("-1/2", "expected K/N"),
        ("1/2/3", "expected K/N"),
    ],
)
def test_bad_shards_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(text)


def test_shares_are_disjoint_cover_everything_and_are_balanced() -> None:
    for n in (1, 2, 3, 4, 7):
        owners = [[k for k in range(1, n + 1) if Shard(k, n).owns(name)] for name in NAMES]
        assert all(len(o) == 1 for o in owners)  # every file in exactly one share
        sizes = Counter(o[0] for o in owners)
        expected = len(NAMES) / n
        assert len(sizes) == n
        assert all(0.6 * expected <= size <= 1.4 * expected for size in sizes.values()), sizes


def test_shares_are_the_same_in_every_process() -> None:
    """Python's own ``hash()`` of a string changes with each process's seed; the shard must not."""
    assert shard_index("docs/000-alpha.txt", 4) == 1  # fixed by SHA-1: any change of formula shows here
    mine = [shard_index(name, 5) for name in NAMES]
    code = (
        "import json, sys; from rag.sharding import shard_index; "
        "print(json.dumps([shard_index(n, 5) for n in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(NAMES),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert json.loads(done.stdout) == mine


def test_shard_paths_splits_folders_and_globs_and_keeps_misses(tmp_path: Path, monkeypatch) -> None:
    corpus = make_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    shares = [shard_paths(["corpus", "corpus/*.md", "missing/*.txt"], Shard(k, 3)) for k in (1, 2, 3)]
    files = [[p for p in share if isinstance(p, Path)] for share in shares]
    assert all(share[-1] == "missing/*.txt" for share in shares)  # each worker reports the miss
    every = sorted(p for share in files for p in share)
    assert every == sorted(p.resolve() for p in corpus.rglob("*") if p.is_file())  # all once, none twice
    assert all(0 < len(share) < len(every) for share in files)


# Parallel workers on one Milvus server -------------------------------------------------------


def make_corpus(root: Path) -> Path:
    """Real files: per topic a long text, a Markdown file and a note per sentence; two PDFs from tests/data."""
    corpus = root / "corpus"
    (corpus / "md").mkdir(parents=True)
    (corpus / "notes").mkdir()
    for topic, sentences in TOPICS.items():
        (corpus / f"{topic}.txt").write_text("\n\n".join(sentences * 3))
        (corpus / "md" / f"{topic}.md").write_text(f"# {topic.title()}\n\n" + " ".join(reversed(sentences)))
        for i, sentence in enumerate(sentences):
            (corpus / "notes" / f"{topic}-{i}.txt").write_text(sentence)
    for name in ("loremipsum-flat.pdf", "multi-column-2p.pdf"):
        shutil.copy(PDFS / name, corpus / name)
    return corpus


def ingest_command(*args: str, cwd: Path, uri: str, collection: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env = clean | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "RAG_DATA_DIR": str(cwd / "state"),
        "RAG_MILVUS_URI": uri,
        "RAG_COLLECTION": collection,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "--json", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr  # 1: the missing path failed, in every run
    return json.loads(stdout)


def collection_rows(uri: str, name: str) -> list[dict]:
    collection = MilvusCollection(Settings(milvus_uri=uri), name).connect()
    try:
        fields = ["id", "source", "title", "page", "chunk_index", "chunk_count", "doc_hash", "text", "vector"]
        return collection.rows(fields)
    finally:
        collection.close()


@pytest.fixture(scope="module")
def milvus23(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not MILVUS23_BINARY.exists():
        pytest.skip(f"{MILVUS23_BINARY} is missing: pip install milvus==2.3.5 to run the Milvus 2.3 server tests")
    base = tmp_path_factory.mktemp("milvus23-shards")
    server = milvus23_server(base).start(timeout_s=240)
    yield server
    server.stop(timeout_s=10)
    remove_milvus23_files(base)


@pytest.mark.slow
@pytest.mark.server
def test_two_shards_at_once_make_the_same_collection_as_one_run(milvus23: ServerProcess, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    count = sum(1 for p in corpus.rglob("*") if p.is_file())
    paths = ("corpus", "missing.txt")
    sharded, single = unique_collection(), unique_collection()
    workers = [
        ingest_command("--shard", f"{k}/2", *paths, cwd=tmp_path, uri=milvus23.uri, collection=sharded) for k in (1, 2)
    ]  # both start on a collection that does not exist yet: they race to create it
    reports = [finish(w) for w in workers]
    one = finish(ingest_command(*paths, cwd=tmp_path, uri=milvus23.uri, collection=single))

    def added(report: dict) -> set[str]:
        return {f["source"] for f in report["files"] if f["outcome"] == "added"}

    shares = [added(r) for r in reports]
    assert shares[0] and shares[1] and not shares[0] & shares[1]  # both worked, on different files
    assert shares[0] | shares[1] == added(one) and len(added(one)) == count > 12
    for report in (*reports, one):
        assert [f["source"] for f in report["files"] if f["outcome"] == "failed"] == ["missing.txt"]

    rows, expected = collection_rows(milvus23.uri, sharded), collection_rows(milvus23.uri, single)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(expected) > count  # no duplicates, same count
    by_id = {r["id"]: r for r in rows}
    assert by_id.keys() == {r["id"] for r in expected}  # same ids
    for want in expected:
        got = by_id[want["id"]]
        assert {k: v for k, v in got.items() if k != "vector"} == {k: v for k, v in want.items() if k != "vector"}
        np.testing.assert_allclose(got["vector"], want["vector"], atol=1e-5)
    assert sum(f["chunks"] for report in reports for f in report["files"]) == len(rows)


def test_the_command_refuses_bad_shards_before_opening_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for argv, message in [
        (["--shard", "3/2", "docs"], "argument --shard: K in 3/2 must be between 1 and 2"),
        (["--shard", "x", "docs"], "argument --shard: expected K/N"),
        (["--shard", "1/2", "--list"], "--shard K/N needs PATHs to ingest"),
        (["--shard", "1/2", "--reset", "--yes", "docs"], "no --reset (reset once, before starting the workers)"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no store, no state
