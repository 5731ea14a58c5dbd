"""Collections: separate documents and embedding models, the ingest command's list and delete,
the app's picker, and a collection deleted while a question on it runs.

Real Milvus Lite, the real bundled embedding model; the app runs headlessly with ``AppTest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_pages.shared import upload_jobs
from ingest.cli import main
from rag.collections import (
    CollectionError,
    check_name,
    collection_names,
    delete_collection,
    find_collection,
    list_collections,
)
from rag.config import Settings
from rag.local_server import LocalServer
from rag.milvus import MilvusCollection
from rag.pipeline import Ingestor
from rag.records import Outcome
from rag.services import Services
from rag.store import CollectionGoneError, DocumentStore, EmbeddingModelMismatchError

WHALES = "Blue whales feed on krill. Their calls carry across whole ocean basins. " * 4
RUST = "Rust's borrow checker rejects aliasing of mutable references at compile time. " * 4
BREAD = "Sourdough bread rises with wild yeast and lactic acid bacteria. " * 4


def fill(settings: Settings, embedder, name: str, files: dict[str, str], uploads: dict[str, str]) -> None:
    """Ingest ``files`` (written under the data folder) and ``uploads`` into collection ``name``."""
    target = settings.model_copy(update={"collection": name})
    store = DocumentStore(target, embedder).open()
    try:
        ingestor = Ingestor(target, embedder, store)
        folder = settings.data_dir.parent / f"files_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
            assert ingestor.ingest_file(folder / file_name).outcome is Outcome.ADDED
        for file_name, text in uploads.items():
            assert ingestor.ingest_upload(file_name, text.encode()).outcome is Outcome.ADDED
    finally:
        store.close()


def documents_of(settings: Settings, embedder, name: str) -> list[str]:
    store = DocumentStore(settings.model_copy(update={"collection": name}), embedder).open()
    try:
        return sorted(Path(d.source).name for d in store.list_documents())
    finally:
        store.close()


def test_collection_names_follow_milvus_rules() -> None:
    assert check_name(" contracts_2024 ") == "contracts_2024"
    assert check_name("_x") == "_x"
    for bad in ("", "2024", "my docs", "a-b", "a.b", "x" * 256, "../up"):
        with pytest.raises(CollectionError, match="letters, digits and underscores"):
            check_name(bad)
    assert check_name("x" * 255) == "x" * 255


def test_two_collections_keep_separate_documents_and_uploads(settings: Settings, embedder) -> None:
    fill(settings, embedder, "alpha", {"whales.txt": WHALES}, {"notes.txt": BREAD})
    fill(settings, embedder, "beta", {"rust.txt": RUST}, {"notes.txt": RUST})  # same upload name, other text

    assert documents_of(settings, embedder, "alpha") == ["notes.txt", "whales.txt"]
    assert documents_of(settings, embedder, "beta") == ["notes.txt", "rust.txt"]
    alpha_uploads = settings.model_copy(update={"collection": "alpha"}).uploads_dir
    beta_uploads = settings.model_copy(update={"collection": "beta"}).uploads_dir
    assert alpha_uploads != beta_uploads
    assert (alpha_uploads / "notes.txt").read_text() == BREAD
    assert (beta_uploads / "notes.txt").read_text() == RUST

    # A search in one collection never finds the other's documents.
    store = DocumentStore(settings.model_copy(update={"collection": "beta"}), embedder).open()
    try:
        query = "What do blue whales eat?"
        hits = store.search(query, embedder.encode([query])[0], k=10, mode="hybrid")
        assert hits and {Path(h.source).name for h in hits} <= {"notes.txt", "rust.txt"}
    finally:
        store.close()

    listed = {c.name: c for c in list_collections(settings)}
    assert sorted(listed) == ["alpha", "beta"]
    assert (listed["alpha"].documents, listed["beta"].documents) == (2, 2)
    assert listed["alpha"].chunks >= 2 and listed["beta"].chunks >= 2
    assert listed["alpha"].embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert listed["alpha"].dimension == 384


class OtherModel:
    """Only what a collection records of its model: a name and a vector size."""

    model_name = "example/other-embedder"
    dimension = 8


def test_each_collection_records_its_own_embedding_model(settings: Settings, embedder) -> None:
    fill(settings, embedder, "mini", {"whales.txt": WHALES}, {})
    other = DocumentStore(settings.model_copy(update={"collection": "other"}), OtherModel()).open()
    other.close()

    listed = {c.name: (c.embedding_model, c.dimension) for c in list_collections(settings)}
    assert listed == {
        "mini": ("sentence-transformers/all-MiniLM-L6-v2", 384),
        "other": ("example/other-embedder", 8),
    }
    # The configured model opens its own collection and refuses the other one, saying why.
    DocumentStore(settings.model_copy(update={"collection": "mini"}), embedder).open().close()
    with pytest.raises(EmbeddingModelMismatchError, match="example/other-embedder"):
        DocumentStore(settings.model_copy(update={"collection": "other"}), embedder).open()


def run_cli(capsys, settings: Settings, *args: str) -> tuple[int, str, str]:
    """``python -m ingest ARGS`` on the test's data folder (``main`` is what the command runs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_DATA_DIR", str(settings.data_dir))
        code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lists_collections_and_deletes_only_with_yes(settings: Settings, embedder, capsys) -> None:
    fill(settings, embedder, "alpha", {"whales.txt": WHALES}, {"notes.txt": BREAD})
    fill(settings, embedder, "beta", {"rust.txt": RUST}, {"notes.txt": RUST, "more.md": "# More\n\n" + WHALES})
    foreign = MilvusCollection(settings.model_copy(update={"collection": "someone_else"})).connect()
    foreign.create_quick(dimension=4)  # another app's collection on the same Milvus
    foreign.close()
    beta_uploads = settings.model_copy(update={"collection": "beta"}).uploads_dir

    code, out, _ = run_cli(capsys, settings, "--list-collections", "--json")
    assert code == 0
    listed = {c["name"]: c for c in json.loads(out)}
    assert sorted(listed) == ["alpha", "beta"]  # the foreign collection is not this app's
    assert (listed["alpha"]["documents"], listed["beta"]["documents"]) == (2, 3)
    assert listed["beta"]["chunks"] >= 3

    code, out, _ = run_cli(capsys, settings, "--list-collections")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["collection", "documents", "chunks"]
    assert lines[2].split()[:3] == ["beta", "3", str(listed["beta"]["chunks"])]

    # Without --yes: a clear refusal, and nothing is deleted.
    code, out, err = run_cli(capsys, settings, "--delete-collection", "beta")
    assert code == 2 and out == ""
    assert "refusing to delete collection 'beta' (3 documents" in err and "without --yes" in err
    assert "nothing was deleted" in err
    assert find_collection(settings, "beta").documents == 3
    assert sorted(p.name for p in beta_uploads.iterdir()) == ["more.md", "notes.txt"]

    # Unknown, misspelt and foreign collections are refused with the reason.
    code, _, err = run_cli(capsys, settings, "--delete-collection", "gamma", "--yes")
    assert code == 2 and "no collection named 'gamma' (collections: alpha, beta)" in err
    code, _, err = run_cli(capsys, settings, "--delete-collection", "be ta", "--yes")
    assert code == 2 and "cannot name a collection" in err
    code, _, err = run_cli(capsys, settings, "--delete-collection", "someone_else", "--yes")
    assert code == 2 and "not made by this app" in err
    assert "someone_else" in MilvusCollection(settings).connect().collection_names()

    # With --yes: the collection and its uploaded copies go; the other collection keeps its own.
    code, out, _ = run_cli(capsys, settings, "--delete-collection", "beta", "--yes", "--json")
    assert code == 0
    assert json.loads(out) == {"name": "beta", "documents": 3, "chunks": listed["beta"]["chunks"], "uploads_removed": 2}
    assert collection_names(settings) == ["alpha"]
    assert not beta_uploads.exists()
    assert (settings.model_copy(update={"collection": "alpha"}).uploads_dir / "notes.txt").read_text() == BREAD
    assert documents_of(settings, embedder, "alpha") == ["notes.txt", "whales.txt"]


def test_deleting_the_default_collection_keeps_other_collections_uploads(tmp_path: Path, embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data")  # the default collection keeps uploads/ itself
    fill(settings, embedder, "documents", {}, {"notes.txt": BREAD})
    fill(settings, embedder, "alpha", {}, {"notes.txt": RUST})
    deletion = delete_collection(settings, "documents")
    assert (deletion.documents, deletion.uploads_removed) == (1, 1)
    assert not (tmp_path / "data" / "uploads" / "notes.txt").exists()
    assert (tmp_path / "data" / "uploads" / "alpha" / "notes.txt").read_text() == RUST
    assert collection_names(settings) == ["alpha"]


def test_a_collection_deleted_while_a_question_runs_fails_it_cleanly(settings: Settings, embedder) -> None:
    """The deletion lands after the question started, just before its search reaches Milvus (fault
    injection at the store's search): the question fails with a message, and the collection stays gone."""
    fill(settings, embedder, "doomed", {"whales.txt": WHALES}, {})
    base = Services(settings)
    base.__dict__["embedder"] = embedder
    services = base.with_collection("doomed")
    assert services.embedder is embedder  # collections share the loaded model
    retriever = services.retriever()
    real_search = retriever.store.search
    deleted = []

    def delete_then_search(*args, **kwargs):
        deleted.append(delete_collection(settings, "doomed"))  # from its own connection, as another tab would
        return real_search(*args, **kwargs)

    retriever.store.search = delete_then_search
    with pytest.raises(CollectionGoneError, match="the collection 'doomed' no longer exists: it was deleted"):
        retriever.retrieve("What do blue whales eat?")
    assert deleted and deleted[0].documents == 1
    retriever.store.search = real_search
    with pytest.raises(CollectionGoneError):  # a later question too, without bringing the collection back
        retriever.retrieve("What do blue whales eat?")
    assert "doomed" not in collection_names(settings)


def test_a_collection_deleted_while_the_model_writes_fails_the_question(
    settings: Settings, embedder, generator
) -> None:
    """The deletion lands after the search, while the answer streams: the answer is not checked and shown
    as if its passages still existed; the question fails with the same message."""
    fill(settings, embedder, "doomed_late", {"whales.txt": WHALES}, {})
    base = Services(settings)
    base.__dict__["embedder"] = embedder
    base.__dict__["generator"] = generator
    services = base.with_collection("doomed_late")
    pipeline = services.answer_pipeline()
    stream = pipeline.stream("What do blue whales eat?", max_new_tokens=8)
    assert not stream.refused and stream.sources  # the search found the passages before the deletion
    pieces = iter(stream)
    assert next(pieces)
    assert delete_collection(settings, "doomed_late").documents == 1
    for _ in pieces:
        pass
    with pytest.raises(CollectionGoneError, match="the collection 'doomed_late' no longer exists: it was deleted"):
        stream.answer()


# The app: the picker, and a question whose collection is deleted mid-way ----------------------


@pytest.fixture()
def app_env() -> dict[str, str]:
    """The default collection; short answers."""
    return {"RAG_MAX_NEW_TOKENS": "16"}


def run(runnable) -> AppTest:
    """Run the app (or a widget's change) and check it raised nothing."""
    at = runnable.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    [found] = [b for b in at.button if b.label == label]
    return found


@pytest.mark.usefixtures("real_generator")  # the session's loaded LLM, not a fresh load
def test_app_picker_creates_switches_and_deletes_with_confirmation(app: AppTest) -> None:
    at = run(app)
    [picker] = at.selectbox
    assert picker.label == "Collection" and picker.value == "documents" and picker.options == ["documents"]

    # A bad name is refused with the reason; a good one is created and picked.
    at.text_input[0].input("my docs")
    at = run(button(at, "Create collection").click())
    assert any("cannot name a collection" in e.value for e in at.error)
    at.text_input[0].input("contracts")
    at = run(button(at, "Create collection").click())
    assert at.selectbox[0].value == "contracts" and at.selectbox[0].options == ["contracts", "documents"]
    assert at.query_params["collection"] == "contracts"

    # Documents page on the picked collection: upload, then switch back: the default one is empty.
    at.switch_page("app_pages/documents.py")
    at = run(at)
    assert any("Collection: **contracts**" in c.value for c in at.caption)
    at.file_uploader[0].set_value([("terms.txt", b"The contract ends after twelve months.", "text/plain")])
    at = run(button(at, "Add to library").click())
    assert upload_jobs().wait_idle(600)  # uploads are ingested in the background (rag.upload_jobs)
    at = run(at)
    assert [m.value for m in at.success] == ["**terms\\.txt**: added (1 page, 1 chunk)"]
    assert sorted(at.dataframe[0].value["name"]) == ["terms.txt"]
    at = run(at.selectbox[0].select("documents"))
    assert at.query_params["collection"] == "documents"
    assert not at.dataframe and any("The library is empty" in i.value for i in at.info)
    at = run(at.selectbox[0].select("contracts"))
    assert sorted(at.dataframe[0].value["name"]) == ["terms.txt"]

    # Deleting asks first; Cancel keeps it, Delete removes it and its upload and picks the default.
    at = run(button(at, "Remove collection contracts").click())
    [warning] = [w.value for w in at.warning if "cannot be undone" in w.value]
    assert "**contracts** with its 1 document (1 chunk)" in warning
    at = run(button(at, "Cancel").click())
    assert "contracts" in at.selectbox[0].options
    at = run(button(at, "Remove collection contracts").click())
    at = run(button(at, "Yes, delete it").click())
    assert at.selectbox[0].value == "documents" and at.selectbox[0].options == ["documents"]
    assert not (Path("data") / "uploads" / "contracts").exists()
    assert not at.error


@pytest.mark.usefixtures("real_generator")  # the session's loaded LLM, not a fresh load
def test_app_question_fails_cleanly_when_its_collection_is_deleted(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another tab (here: the library, from its own connection) deletes the collection while the
    question is on its way to the store: the chat page says so instead of showing a traceback."""
    at = run(app)
    at.text_input[0].input("research")
    at = run(button(at, "Create collection").click())
    at.switch_page("app_pages/documents.py")
    at = run(at)
    at.file_uploader[0].set_value([("whales.txt", WHALES.encode(), "text/plain")])
    at = run(button(at, "Add to library").click())
    assert upload_jobs().wait_idle(600)  # uploads are ingested in the background (rag.upload_jobs)
    at.switch_page("app_pages/chat.py")
    at = run(at)
    assert at.selectbox[0].value == "research"

    real_search = DocumentStore.search

    def delete_then_search(self, *args, **kwargs):
        if self.name == "research":
            delete_collection(self.settings, "research")
        return real_search(self, *args, **kwargs)

    monkeypatch.setattr(DocumentStore, "search", delete_then_search)
    at.chat_input[0].set_value("What do blue whales eat?")
    at = run(at)
    errors = [e.value for e in at.error]
    assert any("Could not answer" in e and "no longer exists" in e for e in errors), errors
    monkeypatch.setattr(DocumentStore, "search", real_search)

    # The next run notices the collection is gone and falls back to the default, saying so.
    at = run(at)
    assert at.selectbox[0].value == "documents"
    assert any("no longer exists" in w.value for w in at.warning)
    assert "research" not in collection_names(Settings(data_dir=Path("data")))


@pytest.mark.usefixtures("real_generator")  # the session's loaded LLM, not a fresh load
def test_app_a_collection_of_another_model_does_not_block_the_others(app: AppTest) -> None:
    """The configured collection was indexed with another embedding model: its pages say so, and the
    picker still creates and opens collections made with the configured model."""
    LocalServer(Path("data") / "milvus.db").start()  # the app finds it and shares it (the fixture stops it)
    DocumentStore(Settings(data_dir=Path("data")), OtherModel()).open().close()
    at = run(app)
    errors = [e.value for e in at.error]
    assert any("example/other-embedder" in e for e in errors), errors
    assert at.selectbox[0].value == "documents"
    at.text_input[0].input("fresh")
    at = run(button(at, "Create collection").click())
    assert at.selectbox[0].value == "fresh" and at.selectbox[0].options == ["documents", "fresh"]
    assert not at.error
    assert {c.name: c.embedding_model for c in list_collections(Settings(data_dir=Path("data")))} == {
        "documents": "example/other-embedder",
        "fresh": "sentence-transformers/all-MiniLM-L6-v2",
    }
