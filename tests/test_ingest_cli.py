"""The ingest command: exit codes, per-file lines, --json, --list, --delete, --reset.

Subprocess runs load the model each time (seconds), so a few cover the real command end
to end; the other branches call ``main(argv)``, which is what ``python -m ingest`` runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.cli import main
from rag.config import Settings, bundled_embedding_model
from rag.embedding import Embedder
from rag.pipeline import Ingestor
from rag.records import Outcome
from rag.services import Services
from rag.store import DocumentStore

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "cli_docs"
WHALES = "Blue whales feed on krill. Their calls carry across whole ocean basins. " * 8
RUST = "Rust's borrow checker rejects aliasing of mutable references at compile time. " * 8


def workspace(root: Path, make_pdf) -> Path:
    """docs/ (a folder with a sub-folder, a PDF and a file type the walk skips), notes/*.md, bad files."""
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text(WHALES)
    (root / "docs" / "sub" / "b.md").write_text("# Rust\n\n" + RUST)
    (root / "docs" / "tool.exe").write_bytes(b"MZ")  # not a supported type: skipped inside folders
    make_pdf(root / "docs" / "paper.pdf", [WHALES, "", RUST])
    (root / "notes").mkdir()
    (root / "notes" / "one.md").write_text("One note about sourdough bread and wild yeast.")
    (root / "notes" / "two.md").write_text("Two notes about volcanoes and basalt.")
    (root / "notes" / "three.txt").write_text("not matched by the glob")
    (root / "bad.doc").write_bytes(b"\xd0\xcf\x11\xe0")  # legacy Word: not supported
    return root


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def outcome_lines(stderr: str) -> dict[str, str]:
    """Per-file lines by source; the progress bars around them use carriage returns and cursor codes."""
    pieces = re.split(r"[\r\n]", ANSI.sub("", stderr))
    found = (re.match(r"[+~=!] (?:added|replaced|unchanged|failed) +(\S+?):? ", piece) for piece in pieces)
    return {match[1]: match.string for match in found if match}


def run_command(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": python_path, "RAG_DATA_DIR": str(cwd / "state"), "RAG_COLLECTION": COLLECTION}
        | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "give PATHs to ingest, or --list, --delete SOURCE or --reset"), (("--list", "--delete", "x"), "not allowed")],
)
def test_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = run_command(*args, cwd=tmp_path)

    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "state").exists()  # nothing was opened


@pytest.mark.slow
def test_the_command_end_to_end(tmp_path: Path, make_pdf, embedder) -> None:
    root = workspace(tmp_path, make_pdf)

    ingest = run_command("docs", "notes/*.md", "bad.doc", "missing.txt", cwd=root)

    assert ingest.returncode == 1, ingest.stderr
    lines = outcome_lines(ingest.stderr)
    assert set(lines) == {
        "docs/a.txt",
        "docs/paper.pdf",
        "docs/sub/b.md",
        "notes/one.md",
        "notes/two.md",
        "bad.doc",
        "missing.txt",
    }
    assert re.fullmatch(r"\+ added +docs/paper\.pdf \(3 pages, \d+ chunks?\)", lines["docs/paper.pdf"])
    assert re.fullmatch(r"\+ added +notes/one\.md \(1 pages?, 1 chunks?\)", lines["notes/one.md"])
    assert lines["bad.doc"].startswith("! failed     bad.doc: unsupported file type '.doc'; supported: ")
    assert lines["missing.txt"] == "! failed     missing.txt: no such file, folder or match"
    assert re.fullmatch(
        r"7 files: 5 added, 0 replaced, 0 unchanged, 2 failed \(\d+ chunks, [\d.]+ s\)\n", ingest.stdout
    )

    listing = run_command("--list", cwd=root)

    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in listing.stdout.splitlines()[1:-1]}
    assert rows.keys() == {"docs/a.txt", "docs/paper.pdf", "docs/sub/b.md", "notes/one.md", "notes/two.md"}
    assert rows["docs/paper.pdf"][0] == "3" and rows["notes/one.md"] == ["1", "1"]
    total = sum(int(chunks) for _, chunks in rows.values())
    assert listing.stdout.splitlines()[-1] == f"5 documents, {total} chunks"

    reset = run_command("--json", "--reset", "--yes", "docs/sub", "notes/*.md", cwd=root)

    assert reset.returncode == 0, reset.stderr
    report = json.loads(reset.stdout)
    assert set(report) == {"files", "summary", "chunks_written", "seconds"}
    assert report["summary"] == {"added": 3, "replaced": 0, "unchanged": 0, "failed": 0}
    assert [(f["source"], f["outcome"], f["error"]) for f in report["files"]] == [
        ("docs/sub/b.md", "added", None),
        ("notes/one.md", "added", None),
        ("notes/two.md", "added", None),
    ]
    assert set(report["files"][0]) == {
        "path",
        "source",
        "outcome",
        "chunks",
        "pages",
        "error",
        "ocr_pages",
        "unread_pages",
    }
    assert report["chunks_written"] == sum(f["chunks"] for f in report["files"])
    settings = Settings(data_dir=root / "state", collection=COLLECTION)
    store = DocumentStore(settings, embedder).open()  # the commands have exited: the file is free
    assert sorted(d.source for d in store.list_documents()) == ["docs/sub/b.md", "notes/one.md", "notes/two.md"]
    store.close()


# The same command in this process: every other branch ----------------------------------


@pytest.fixture()
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedder: Embedder):
    """Run ``python -m ingest ARGS`` as a function call in ``tmp_path``; returns (status, stdout, stderr).

    The command's ``Services`` get the session's loaded model when their settings name the same one.
    """
    for name in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(name)

    def shared_model(services: Services) -> Embedder:
        same = services.settings.embedding_model_name == embedder.model_name
        return embedder if same else Embedder(services.settings).load()

    monkeypatch.setattr(Services, "embedder", property(shared_model))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAG_COLLECTION", COLLECTION)

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_json_reingest_reports_replaced_and_unchanged(tmp_path: Path, command) -> None:
    (tmp_path / "a.txt").write_text(WHALES)
    (tmp_path / "b.txt").write_text(RUST)
    assert command("a.txt", "b.txt")[0] == 0

    (tmp_path / "a.txt").write_text(RUST + WHALES)
    status, out, _ = command("--json", ".")

    assert status == 0
    report = json.loads(out)  # progress bars and per-file lines stay off stdout
    assert [(f["source"], f["outcome"]) for f in report["files"]] == [("a.txt", "replaced"), ("b.txt", "unchanged")]
    assert report["chunks_written"] == report["files"][0]["chunks"]


def test_list_json_and_empty_list(tmp_path: Path, command) -> None:
    assert command("--list")[:2] == (0, f"no documents in '{COLLECTION}' at {tmp_path / 'state' / 'milvus.db'}\n")
    (tmp_path / "a.txt").write_text(WHALES)
    command("a.txt")

    status, out, _ = command("--list", "--json")

    assert status == 0
    [document] = json.loads(out)
    keys = {"source", "title", "content_hash", "pages", "chunks", "size_bytes", "added_at", "chunking"}
    assert set(document) == keys
    assert (document["source"], document["pages"], document["chunks"]) == ("a.txt", 1, 1)
    assert document["content_hash"] == hashlib.sha256(WHALES.encode()).hexdigest()  # the file's own hash
    assert document["chunking"]  # and the chunking its version was made with


def test_delete_by_name_refuses_an_ambiguous_one(tmp_path: Path, command) -> None:
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.txt").write_text(WHALES)
    command("x", "y")

    status, out, _ = command("--delete", "same.txt")

    assert status == 1
    assert out == "! same.txt: ambiguous: x/same.txt, y/same.txt\n"
    status, out, _ = command("--delete", "x/same.txt")
    assert (status, re.sub(r"chunks?", "chunk", out)) == (0, "- deleted x/same.txt (1 chunk)\n")
    status, out, _ = command("--json", "--delete", "same.txt", "--delete", "nothing.txt")
    assert status == 1
    assert json.loads(out) == [
        {"source": "y/same.txt", "deleted_chunks": 1, "upload_removed": False, "error": None},
        {
            "source": "nothing.txt",
            "deleted_chunks": 0,
            "upload_removed": False,
            "error": "no stored document by that name",
        },
    ]
    assert command("--list", "--json")[1].strip() == "[]"
    assert (tmp_path / "x" / "same.txt").exists()  # a file ingested from elsewhere is never removed


def test_delete_removes_the_uploaded_copy_too(tmp_path: Path, command, embedder: Embedder) -> None:
    settings = Settings()  # the command's own settings: RAG_DATA_DIR and RAG_COLLECTION of this test
    store = DocumentStore(settings, embedder).open()
    try:
        uploaded = Ingestor(settings, embedder, store).ingest_upload("Whale notes.txt", WHALES.encode())
    finally:
        store.close()
    copy = settings.uploads_dir / "Whale notes.txt"
    assert uploaded.outcome is Outcome.ADDED and uploaded.path == copy.resolve()
    assert copy.read_text() == WHALES

    status, out, _ = command("--delete", "Whale notes.txt")

    assert (status, re.sub(r"chunks?", "chunk", out)) == (
        0,
        "- deleted Whale notes.txt (1 chunk, and its uploaded copy)\n",
    )
    assert not copy.exists()
    assert list(settings.uploads_dir.iterdir()) == []  # no staging file left either
    assert command("--list", "--json")[1].strip() == "[]"


def test_reset_without_yes_is_refused_when_not_interactive(tmp_path: Path, command) -> None:
    (tmp_path / "a.txt").write_text(WHALES)
    command("a.txt")

    status, _, err = command("--reset")

    assert status == 2
    assert "--reset needs --yes when not run interactively" in err
    assert "error: reset cancelled" in err
    assert json.loads(command("--list", "--json")[1])[0]["source"] == "a.txt"


def test_a_chunk_size_the_model_cannot_read_fails_before_reset(
    tmp_path: Path, command, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text(WHALES)
    command("a.txt")
    monkeypatch.setenv("RAG_CHUNK_SIZE", "512")

    status, out, err = command("--json", "--reset", "--yes", "a.txt")

    assert status == 2
    expected = "chunk_size 512 is larger than the embedding model's window of 256 tokens; set RAG_CHUNK_SIZE to 256"
    assert expected in json.loads(out)["error"]
    assert expected in err
    monkeypatch.delenv("RAG_CHUNK_SIZE")
    assert len(json.loads(command("--list", "--json")[1])) == 1  # nothing was dropped


def link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (no space, no time), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def test_another_embedding_model_is_refused_until_reset(
    tmp_path: Path, command, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text(WHALES)
    command("a.txt")
    # A copy of the model in another folder is another model as far as names go.
    shutil.copytree(bundled_embedding_model(), tmp_path / "minilm-copy", copy_function=link_or_copy)
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", str(tmp_path / "minilm-copy"))

    status, _, err = command("--list")

    assert status == 2
    assert "was indexed with embedding model 'sentence-transformers/all-MiniLM-L6-v2'" in err
    assert "re-index: `python -m ingest --reset --yes PATHS`" in err

    status, out, err = command("--reset", "--yes", "a.txt")  # the advice works

    assert status == 0, err
    assert f"collection '{COLLECTION}' emptied" in out
    assert re.search(r"^\+ added +a\.txt \(1 pages?, 1 chunks?\)$", ANSI.sub("", err).replace("\r", "\n"), re.M)
    assert json.loads(command("--list", "--json")[1])[0]["source"] == "a.txt"
