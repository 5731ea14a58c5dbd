"""Stored conversations: the SQLite history (real files in a tmp folder), its faults, and the CLI.

The library tests build answers by hand and run in milliseconds; the CLI tests run
``python -m rag ask`` and ``chats`` with the real bundled models on a small ingested file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.cli import main as ingest_main
from rag.answering import Answer, Evidence, KeySentence, SentenceCheck, Source
from rag.cli import main as rag_main
from rag.config import Settings
from rag.conversations import (
    FILE_NAME,
    SCHEMA_VERSION,
    ConversationNotFound,
    ConversationStore,
    ConversationStoreError,
    deleted_sources,
    title_for,
    to_markdown,
    used_settings,
)
from rag.services import Services

ROOT = Path(__file__).resolve().parents[1]
DATASHEET = (
    "SolarMax M385 monocrystalline module datasheet. The maximum module efficiency is 21.0 %. "
    "The module weighs 19.5 kg and carries a product warranty of 12 years."
)

PASSAGE = "The module's maximum efficiency is 21.0 %. It weighs 18 kg."


def make_answer(question: str = "What is the module's efficiency?", query: str | None = None) -> Answer:
    sources = [
        Source(1, "/docs/datasheet.pdf", "datasheet.pdf", 2, 0.81, PASSAGE, cited=True),
        Source(2, "/docs/notes.md", "notes.md", None, 0.42, "Unrelated notes.", cited=False),
    ]
    sentences = [
        SentenceCheck(
            "Its efficiency is 21.0 % [1].",
            True,
            0.9,
            [1],
            evidence=[Evidence(1, "/docs/datasheet.pdf", 2, "The module's maximum efficiency is 21.0 %.")],
        ),
        SentenceCheck("It costs $5 [1].", False, 0.3, [1], reason="$5 is not in source [1]", missing=["$5"]),
    ]
    key = KeySentence("The module's maximum efficiency is 21.0 %.", "/docs/datasheet.pdf", 2, 1, 0.77)
    text = " ".join(s.text for s in sentences)
    return Answer(text, False, sources, sentences, question, query or question, key)


@pytest.fixture()
def chats(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "data" / FILE_NAME)


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# The library ----------------------------------------------------------------------------


def test_an_exchange_round_trips_with_query_marks_sources_and_settings(chats: ConversationStore):
    answer = make_answer("and its weight?", query="What is the module's efficiency? and its weight?")
    used = used_settings(Settings(), top_k=6, threshold=0.3, mode="dense")
    cid = chats.record(None, answer, settings=used, collection="papers")

    [conversation] = chats.list()
    assert (conversation.id, conversation.turns, conversation.collection) == (cid, 1, "papers")
    assert conversation.title == "and its weight?"
    [exchange] = chats.get(cid).exchanges
    assert exchange.question == "and its weight?"
    assert exchange.query == "What is the module's efficiency? and its weight?", "the rewritten search query"
    assert exchange.response == answer.to_dict(), "the ask --json shape, grounding marks included"
    assert exchange.response["sentences"][1]["reason"] == "$5 is not in source [1]"
    assert [(s["source"], s["page"], s["cited"]) for s in exchange.sources] == [
        ("/docs/datasheet.pdf", 2, True),
        ("/docs/notes.md", None, False),
    ]
    assert exchange.settings["top_k"] == 6 and exchange.settings["threshold"] == 0.3
    assert exchange.settings["mode"] == "dense" and exchange.settings["llm_model"]
    assert exchange.asked <= exchange.answered and exchange.answered.endswith("+00:00")
    assert exchange.to_answer() == answer, "a stored answer renders as it did when it was asked"
    with sqlite3.connect(chats.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1


def test_continue_list_newest_first_rename_and_delete(chats: ConversationStore):
    first = chats.record(None, make_answer("What is the efficiency?"), settings={}, collection="documents")
    time.sleep(0.01)
    second = chats.record(None, make_answer("Who makes the module?"), settings={}, collection="documents")
    assert first != second
    assert [c.id for c in chats.list()] == [second, first]

    time.sleep(0.01)
    assert chats.record(first, make_answer("and its weight?"), settings={}, collection="documents") == first
    listed = chats.list()
    assert [(c.id, c.turns) for c in listed] == [(first, 2), (second, 1)], "continuing moves it to the top"
    assert chats.latest().id == first
    assert chats.history(first) == ["What is the efficiency?", "and its weight?"]

    chats.rename(first, "  Solar   module ")
    assert chats.get(first).title == "Solar module"
    with pytest.raises(ValueError, match="cannot be empty"):
        chats.rename(first, "   ")
    assert chats.get(first).title == "Solar module"

    assert chats.delete(first) == 2
    assert [c.id for c in chats.list()] == [second]
    assert rows(chats.path, "exchanges") == 1, "its exchanges went with it"
    for call in (lambda: chats.get(first), lambda: chats.delete(first), lambda: chats.rename(first, "x")):
        with pytest.raises(ConversationNotFound, match=f"No conversation '{first}'"):
            call()
    with pytest.raises(ConversationNotFound, match="not saved"):
        chats.record(first, make_answer(), settings={}, collection="documents")
    assert rows(chats.path, "exchanges") == 1


def test_titles_are_one_line_and_cut_at_a_word():
    assert title_for("  What is\nthe efficiency? ") == "What is the efficiency?"
    long = "word " * 30
    title = title_for(long)
    assert title.endswith("…") and len(title) <= 61 and "  " not in title


def test_a_failed_write_stores_nothing(chats: ConversationStore, monkeypatch: pytest.MonkeyPatch):
    """The conversation row and its first exchange are one transaction."""
    chats.check()
    answer = make_answer()
    monkeypatch.setattr(answer, "to_dict", lambda: {"bad": object()})  # not JSON: fails after the conversation row
    with pytest.raises(TypeError):
        chats.record(None, answer, settings={}, collection="documents")
    assert rows(chats.path, "conversations") == 0
    assert rows(chats.path, "exchanges") == 0


def test_a_corrupt_file_is_named_and_left_as_it_was(chats: ConversationStore):
    chats.path.parent.mkdir(parents=True)
    garbage = b"this is not a database\x00" * 200
    chats.path.write_bytes(garbage)
    for call in (chats.check, chats.list, lambda: chats.record(None, make_answer(), settings={}, collection="d")):
        with pytest.raises(ConversationStoreError) as caught:
            call()
        assert str(chats.path) in str(caught.value)
        assert "not a readable SQLite database" in str(caught.value)
        assert "move the file away" in str(caught.value)
    assert chats.path.read_bytes() == garbage, "a corrupt history is never overwritten"


def test_a_locked_file_is_reported_in_about_a_second_and_stores_nothing(chats: ConversationStore):
    cid = chats.record(None, make_answer(), settings={}, collection="documents")
    holder = sqlite3.connect(chats.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(ConversationStoreError, match="locked by another program"):
            chats.record(cid, make_answer("and its weight?"), settings={}, collection="documents")
        assert 0.5 < time.monotonic() - started < 10, "waits for the lock briefly, then says so"
        with pytest.raises(ConversationStoreError, match="locked"):
            ConversationStore(chats.path).list()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert chats.get(cid).turns == 1, "nothing half-stored while it was locked"
    assert chats.record(cid, make_answer("and its weight?"), settings={}, collection="documents") == cid
    assert chats.get(cid).turns == 2, "it works again once the lock is gone"


def test_a_newer_schema_is_refused(chats: ConversationStore):
    chats.check()
    with sqlite3.connect(chats.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConversationStoreError, match="newer version of this app"):
        ConversationStore(chats.path).list()


def test_markdown_export_has_citations_with_file_and_page(chats: ConversationStore):
    cid = chats.record(None, make_answer(), settings={}, collection="papers")
    chats.record(cid, make_answer("and its weight?"), settings={}, collection="papers")
    conversation = chats.get(cid)

    text = to_markdown(conversation)
    assert text.startswith("# What is the module's efficiency?\n")
    assert "Collection: papers" in text
    assert text.count("## ") == 2 and "## and its weight?" in text
    assert "Its efficiency is 21.0 % [1]. It costs $5 [1]." in text
    assert "- [1] datasheet.pdf, page 2\n" in text
    assert "notes.md" not in text, "only the cited sources are listed"
    assert "> — datasheet.pdf, page 2" in text
    assert "(deleted)" not in text

    gone = deleted_sources(conversation, ["/docs/notes.md"])
    assert gone == {"/docs/datasheet.pdf"}
    assert deleted_sources(conversation, ["/docs/datasheet.pdf", "/docs/notes.md"]) == set()
    assert "- [1] datasheet.pdf, page 2 (deleted)" in to_markdown(conversation, gone)


# The command line, with the real models on a real store -----------------------------------


@pytest.fixture()
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedder, generator):
    """``python -m ingest`` / ``python -m rag`` as calls in ``tmp_path``, sharing the session's models."""
    for name in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(Services, "embedder", property(lambda services: embedder))
    monkeypatch.setattr(Services, "generator", property(lambda services: generator))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAG_COLLECTION", "chat_docs")
    monkeypatch.setenv("RAG_MAX_NEW_TOKENS", "24")

    def run(main, *args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    (tmp_path / "solarmax.txt").write_text(DATASHEET)
    assert run(ingest_main, "solarmax.txt")[0] == 0
    return run


def ask_json(command, *args: str) -> dict:
    status, out, err = command(rag_main, "ask", "--json", *args)
    assert status == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_ask_stores_each_exchange_and_c_continues_the_latest(command, tmp_path: Path):
    first = ask_json(command, "What is the maximum efficiency of the SolarMax M385 module?")
    assert first["saved"] is True and "warning" not in first
    assert first["refused"] is False and first["sources"][0]["source"] == "solarmax.txt"
    cid = first["conversation"]

    follow = ask_json(command, "-c", "and its weight?")
    assert follow["conversation"] == cid and follow["saved"] is True

    other = ask_json(command, "Who designed the warranty terms of the module?")
    assert other["conversation"] not in (cid, None), "an ask without -c starts a new conversation"

    status, out, err = command(rag_main, "ask", "--cid", cid, "How long is its warranty?")
    assert status == 0, err
    assert f"Conversation {cid} (continue it with" in out
    assert "Sources:" in out and "solarmax.txt" in out

    status, out, _ = command(rag_main, "chats", "--json")
    listed = json.loads(out)
    assert [(c["id"], c["turns"]) for c in listed] == [(cid, 3), (other["conversation"], 1)]
    assert set(listed[0]) == {"id", "title", "created", "updated", "collection", "turns"}
    assert listed[0]["title"] == "What is the maximum efficiency of the SolarMax M385 module?"
    assert listed[0]["collection"] == "chat_docs"

    status, out, _ = command(rag_main, "chats", "show", cid, "--json")
    shown = json.loads(out)
    questions = [e["question"] for e in shown["exchanges"]]
    assert questions == [
        "What is the maximum efficiency of the SolarMax M385 module?",
        "and its weight?",
        "How long is its warranty?",
    ]
    # The follow-up was searched with the stored history: the query the pipeline actually used.
    assert (
        shown["exchanges"][1]["query"] == "What is the maximum efficiency of the SolarMax M385 module? and its weight?"
    )
    assert shown["exchanges"][0]["query"] == questions[0]
    assert shown["exchanges"][1]["response"]["answer"] == follow["answer"]
    assert shown["exchanges"][1]["response"]["sentences"] == follow["sentences"]
    assert shown["exchanges"][0]["settings"]["top_k"] == 4 and shown["exchanges"][0]["settings"]["mode"] == "hybrid"

    status, out, _ = command(rag_main, "chats", "show", cid)
    assert status == 0 and out.startswith("# What is the maximum efficiency")
    assert "## and its weight?" in out and "solarmax.txt" in out

    status, out, _ = command(rag_main, "chats")
    assert status == 0 and out.splitlines()[1].startswith(f"{cid}      3  ")

    status, out, _ = command(rag_main, "chats", "delete", cid)
    assert status == 0 and out == f"Deleted conversation {cid} (3 exchanges).\n"
    status, out, _ = command(rag_main, "chats", "--json")
    assert [c["id"] for c in json.loads(out)] == [other["conversation"]]
    status, out, err = command(rag_main, "ask", "--json", "--cid", cid, "and its weight?")
    assert status == 2 and json.loads(out) == {"error": f"No conversation '{cid}'; `python -m rag chats` lists them."}
    assert "error: No conversation" in err


@pytest.mark.slow
def test_a_corrupt_or_locked_history_still_answers_and_says_it_was_not_saved(command, tmp_path: Path):
    history = tmp_path / "state" / FILE_NAME
    garbage = b"garbage, not SQLite " * 100
    history.write_bytes(garbage)

    result = ask_json(command, "What is the maximum efficiency of the SolarMax M385 module?")
    assert result["refused"] is False and result["answer"]
    assert result["saved"] is False and result["conversation"] is None
    assert "not a readable SQLite database" in result["warning"] and "not saved" in result["warning"]
    status, out, err = command(rag_main, "ask", "-c", "How much does the SolarMax M385 module weigh?")
    assert status == 0 and "\nSources:" in out and "Conversation " not in out
    assert err.startswith(f"warning: The conversation history {history} is not a readable SQLite database")
    assert history.read_bytes() == garbage, "the corrupt file is left for the user to look at"
    status, out, err = command(rag_main, "chats")
    assert status == 2 and "not a readable SQLite database" in err and "move the file away" in err

    history.unlink()
    cid = ask_json(command, "What is the maximum efficiency of the SolarMax M385 module?")["conversation"]
    holder = sqlite3.connect(history, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the file
    try:
        locked = ask_json(command, "-c", "and its weight?")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked["answer"] and locked["saved"] is False
    assert "locked by another program" in locked["warning"] and "not saved" in locked["warning"]
    status, out, _ = command(rag_main, "chats", "--json")
    assert [(c["id"], c["turns"]) for c in json.loads(out)] == [(cid, 1)], "nothing stored while it was locked"


@pytest.mark.slow
def test_chats_as_a_real_command(tmp_path: Path):
    """``python -m rag chats`` in its own process: no models load, the listing is JSON on stdout."""
    chats = ConversationStore(tmp_path / "state" / FILE_NAME)
    cid = chats.record(None, make_answer(), settings={}, collection="documents")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"RAG_DATA_DIR": str(tmp_path / "state")}
    env["PYTHONPATH"] = str(ROOT)
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 120}
    done = subprocess.run([sys.executable, "-m", "rag", "chats", "--json"], **run)
    assert done.returncode == 0, done.stderr
    assert [(c["id"], c["turns"]) for c in json.loads(done.stdout)] == [(cid, 1)]
    done = subprocess.run([sys.executable, "-m", "rag", "chats", "show", "nope"], **run)
    assert done.returncode == 2 and "No conversation 'nope'" in done.stderr


# The chat page, headless (AppTest): several browser sessions on one data folder ----------------

import test_app  # noqa: E402
from test_app import CHAT, Harness, shown_text  # noqa: E402

# its fixtures: an app on its own data folder and collection, no LLM
app, app_env, no_generation = test_app.app, test_app.app_env, test_app.no_generation

UNRELATED = "How long should sourdough bread rise before baking?"


def session(app: Harness, **query: str) -> Harness:
    """Another browser session (a new tab, or a reload) on the same app, opened at ``?query``."""
    from streamlit.testing.v1 import AppTest

    other = Harness(AppTest.from_file(str(ROOT / "app.py"), default_timeout=600), app.data_dir)
    other.at.query_params.update(query)
    other.page(CHAT)
    return other


def sidebar_titles(harness: Harness) -> list[str]:
    return [b.label for b in harness.at.sidebar.button if b.key and b.key.startswith("open-")]


def turns(harness: Harness) -> list[tuple[str, str]]:
    return [(m.name, shown_text(m.html[0].value)) for m in harness.at.chat_message]


def test_chat_page_stores_reopens_and_keeps_tabs_apart(app: Harness, no_generation: list[str]):
    app.upload(("solar.md", DATASHEET.encode()))
    app.ask(UNRELATED)  # refused without the LLM: still an exchange
    chats = ConversationStore(app.data_dir / FILE_NAME)
    [stored] = chats.list()
    assert app.at.query_params["c"] == [stored.id] or app.at.query_params["c"] == stored.id
    app.page(CHAT)
    assert sidebar_titles(app) == [UNRELATED]

    app.ask("and for rye?")  # a follow-up: searched with the stored question before it
    [exchange_1, exchange_2] = chats.get(stored.id).exchanges
    assert exchange_2.query == f"{UNRELATED} and for rye?"
    assert exchange_2.collection == "app_test" and exchange_2.settings["max_new_tokens"] == 48

    # A reload (a new session at ?c=ID) shows the conversation and continues it with its history.
    reloaded = session(app, c=stored.id)
    assert turns(reloaded)[::2] == [("user", UNRELATED), ("user", "and for rye?")]
    assert [m.name for m in reloaded.at.chat_message] == ["user", "assistant"] * 2
    reloaded.ask("and spelt?")
    assert chats.get(stored.id).exchanges[-1].query == "and for rye? and spelt?"

    # A second tab starts its own conversation; neither tab sees the other's questions.
    other = session(app)
    assert other.at.chat_message == [] or len(other.at.chat_message) == 0
    other.ask("What colour is a polar bear's skin?")
    assert len(chats.list()) == 2
    assert [t for t in turns(other) if t[0] == "user"] == [("user", "What colour is a polar bear's skin?")]
    app.page(CHAT)
    assert [t for t in turns(app) if t[0] == "user"] == [("user", UNRELATED), ("user", "and for rye?")]
    assert sidebar_titles(app) == ["What colour is a polar bear's skin?", UNRELATED], "newest first"

    # Open the other conversation from the sidebar, rename it, export it, delete it (after a confirmation).
    app.at.sidebar.button(key=f"open-{chats.list()[0].id}").click()
    app.run()
    assert [t for t in turns(app) if t[0] == "user"] == [("user", "What colour is a polar bear's skin?")]
    [export] = app.at.sidebar.download_button  # its file is checked in the browser test
    assert export.label == "Export as Markdown"
    [title] = [t for t in app.at.sidebar.text_input if t.label == "Title"]
    title.set_value("Bears")
    [save] = [b for b in app.at.sidebar.button if b.label == "Save title"]
    save.click()
    app.run()
    assert sidebar_titles(app) == ["Bears", UNRELATED]
    [delete] = [b for b in app.at.sidebar.button if b.label == "Delete conversation"]
    delete.click()
    app.run()
    assert sidebar_titles(app) == [UNRELATED]
    assert len(app.at.chat_message) == 0 and "c" not in app.at.query_params, "a new conversation after deleting"
    assert [c.id for c in chats.list()] == [stored.id]
    assert no_generation == []
    assert exchange_1.refused


def test_sources_of_deleted_documents_are_marked(app: Harness, no_generation: list[str]):
    app.upload(("solar.md", DATASHEET.encode()), ("keep.md", b"Sourdough notes: the dough rises overnight."))
    app.ask("What is the boiling point of mercury?")  # refused: its closest passages are still its sources
    assert app.messages("error") == []
    chats = ConversationStore(app.data_dir / FILE_NAME)
    [conversation] = chats.list()
    sources = [s["title"] for s in chats.get(conversation.id).exchanges[0].sources]
    assert sorted(sources) == ["keep.md", "solar.md"]
    passages = shown_text(app.at.chat_message[1].html[-1].value)
    assert "(deleted)" not in passages

    services = Services(Settings(data_dir=app.data_dir, collection="app_test"))
    from rag.pipeline import delete_document

    delete_document(services.settings, services.store(), "solar.md")
    reloaded = session(app, c=conversation.id)
    passages = shown_text(reloaded.at.chat_message[1].html[-1].value)
    assert "solar.md (deleted)" in passages
    assert "keep.md (deleted)" not in passages
    assert [b.label for b in reloaded.at.sidebar.download_button] == ["Export as Markdown"]


def test_a_corrupt_or_locked_history_still_answers_in_the_page(app: Harness, no_generation: list[str]):
    app.upload(("solar.md", DATASHEET.encode()))
    history = app.data_dir / FILE_NAME
    garbage = b"garbage, not SQLite " * 100
    history.write_bytes(garbage)
    app.ask(UNRELATED)
    [_, assistant] = app.at.chat_message
    assert "do not contain an answer" in shown_text(assistant.html[0].value)
    [warning] = app.messages("warning")
    assert "not a readable SQLite database" in warning and "not saved" in warning
    assert history.read_bytes() == garbage
    assert app.messages("error") == []

    history.unlink()
    app.page(CHAT)
    app.ask("and for rye?")
    chats = ConversationStore(history)
    [conversation] = chats.list()
    holder = sqlite3.connect(history, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        app.ask("and spelt?")
        warnings = app.messages("warning")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert any("locked by another program" in w and "not saved" in w for w in warnings), warnings
    assert [m.name for m in app.at.chat_message][-2:] == ["user", "assistant"]
    assert chats.get(conversation.id).turns == 1


def test_opening_a_conversation_picks_the_collection_it_was_asked_in(app: Harness, no_generation: list[str]):
    app.page(CHAT)
    [name] = [t for t in app.at.sidebar.text_input if t.label == "Name"]
    name.set_value("papers")
    [create] = [b for b in app.at.sidebar.button if b.label == "Create collection"]
    create.click()
    app.run()
    [picker] = [s for s in app.at.sidebar.selectbox if s.label == "Collection"]
    assert picker.value == "papers"
    chats = ConversationStore(app.data_dir / FILE_NAME)
    cid = chats.record(None, make_answer(), settings={}, collection="papers")
    picker.set_value("app_test")
    app.run()

    app.at.sidebar.button(key=f"open-{cid}").click()
    app.run()
    [picker] = [s for s in app.at.sidebar.selectbox if s.label == "Collection"]
    assert picker.value == "papers", "a conversation continues in the collection it was asked in"
    assert app.at.query_params["collection"] in ("papers", ["papers"])
    assert [t for t in turns(app) if t[0] == "user"] == [("user", "What is the module's efficiency?")]
    passages = shown_text(app.at.chat_message[1].html[-1].value)
    assert "[1] datasheet.pdf (deleted), page 2" in passages, "its documents are not in the new collection"
