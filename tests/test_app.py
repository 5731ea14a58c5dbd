"""The Streamlit pages, run headlessly with ``AppTest``: uploads, outcomes, chat, deletion.

Each test gets its own data folder and collection. The app serves its Milvus Lite folder
with a local server child process; every server a test starts is stopped at its end.
The embedding model and the LLM are the real bundled ones, loaded once per session.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.answering import REFUSAL

DOCUMENTS = "app_pages/documents.py"
CHAT = "app_pages/chat.py"
EVIL = "Milvus keeps vectors. <script>alert(1)</script> ![x](http://evil/x.png) [click](http://evil/) **loud**"


class Harness:
    """One app session on a fresh data folder."""

    def __init__(self, at: AppTest, data_dir: Path) -> None:
        self.at = at
        self.data_dir = data_dir
        self.uploads = data_dir / "uploads" / "app_test"  # a collection other than the default has its own

    def run(self) -> AppTest:
        self.at.run()
        assert not self.at.exception, [e.value for e in self.at.exception]
        return self.at

    def page(self, path: str) -> AppTest:
        self.at.switch_page(path)
        return self.run()

    def upload(self, *files: tuple[str, bytes]) -> AppTest:
        """Put files in the uploader and press "Add to library"."""
        self.page(DOCUMENTS)
        self.at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
        [add] = [b for b in self.at.button if b.label == "Add to library"]
        add.click()
        self.run()
        return self.finish_uploads()

    def finish_uploads(self) -> AppTest:
        """Wait for the background upload jobs (``rag.upload_jobs``), then run the page again to show them
        (in a browser the page's fragment refreshes itself; AppTest runs no timers)."""
        from app_pages.shared import upload_jobs

        assert upload_jobs().wait_idle(600), "the upload jobs did not finish"
        return self.run()

    def ask(self, question: str) -> AppTest:
        if len(self.at.chat_input) == 0:
            self.page(CHAT)
        self.at.chat_input[0].set_value(question)
        return self.run()

    def messages(self, kind: str) -> list[str]:
        return [e.value for e in getattr(self.at, kind)]

    def stored_names(self) -> list[str]:
        if not self.at.dataframe:
            return []
        return sorted(self.at.dataframe[0].value["name"])

    def metric(self, label: str) -> str:
        return next(m.value for m in self.at.metric if m.label == label)

    def markdown(self) -> str:
        return "\n".join(m.value for m in self.at.markdown)

    def uploaded_files(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir()) if self.uploads.exists() else []


@pytest.fixture()
def app_env() -> dict[str, str]:
    """A collection other than the default (it has its own uploads folder) and short answers."""
    return {"RAG_COLLECTION": "app_test", "RAG_MAX_NEW_TOKENS": "48"}


@pytest.fixture()
def app(app: AppTest, tmp_path: Path) -> Harness:
    """The shared ``app`` of conftest.py, driven through the Harness."""
    return Harness(app, tmp_path / "data")


@pytest.fixture()
def no_generation(monkeypatch: pytest.MonkeyPatch):
    """Fail the test if the LLM is asked to generate anything."""
    from rag.generation import TransformersGenerator

    calls: list[str] = []

    def refuse(self, *args, **kwargs):
        calls.append("generate")
        raise AssertionError("the LLM was called")

    monkeypatch.setattr(TransformersGenerator, "load", lambda self: None)
    monkeypatch.setattr(TransformersGenerator, "stream", refuse)
    monkeypatch.setattr(TransformersGenerator, "generate", refuse)
    return calls


def test_empty_store_chat_page_says_what_to_do(app: Harness):
    at = app.run()
    assert at.title[0].value == "Chat with your documents"
    [hint] = app.messages("info")
    assert "No documents yet" in hint and "Documents page" in hint and "python -m ingest" in hint
    [link] = at.get("page_link")
    assert link.value == "Go to Documents"
    assert link.proto.page == "documents"
    assert at.chat_input[0].disabled, "asking makes no sense before any document is added"

    at = app.page(DOCUMENTS)
    assert at.title[0].value == "Documents"
    assert app.metric("Documents") == "0"
    assert any("The library is empty" in m for m in app.messages("info"))


def test_upload_text_file_then_again_is_unchanged(app: Harness):
    app.upload(("notes.md", b"# Notes\n\nMilvus Lite keeps the vectors in one local folder.\n"))
    assert app.messages("success") == ["**notes\\.md**: added (1 page, 1 chunk)"]
    assert app.messages("error") == []
    assert app.stored_names() == ["notes.md"]
    assert app.metric("Documents") == "1"
    assert app.uploaded_files() == ["notes.md"]

    app.upload(("notes.md", b"# Notes\n\nMilvus Lite keeps the vectors in one local folder.\n"))
    assert app.messages("info")[0] == "**notes\\.md**: unchanged (1 page, 1 chunk)"
    assert app.stored_names() == ["notes.md"]


@pytest.mark.slow
def test_upload_real_pdf_and_text_file(app: Harness, pdfs: Path):
    pdf = (pdfs / "multi-column-2p.pdf").read_bytes()
    app.upload(("multi-column-2p.pdf", pdf), ("notes.txt", b"Dense retrieval needs a vector store."))
    successes = app.messages("success")
    assert len(successes) == 2, successes
    assert re.fullmatch(r"\*\*multi\\-column\\-2p\\\.pdf\*\*: added \(2 pages, \d+ chunks\)", successes[0])
    assert successes[1] == "**notes\\.txt**: added (1 page, 1 chunk)"
    assert app.stored_names() == ["multi-column-2p.pdf", "notes.txt"]
    assert app.metric("Pages") == "3"
    assert app.uploaded_files() == ["multi-column-2p.pdf", "notes.txt"]


def test_bad_uploads_fail_with_reasons_and_leave_nothing(app: Harness, tmp_path: Path, make_pdf):
    scan = make_pdf(tmp_path / "scan.pdf", ["", ""]).read_bytes()
    app.upload(
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog"),
        ("renamed.pdf", b"just some text, not a PDF"),
        ("scan.pdf", scan),
        ("empty.txt", b""),
        ("blank.md", b"  \n\n\t \n"),
        ("binary.txt", bytes(range(256)) * 4),
    )
    errors = app.messages("error")
    assert len(errors) == 6, errors
    expected = [
        "broken\\.pdf**: failed — the PDF is corrupt or truncated",
        "renamed\\.pdf**: failed — not a PDF file \\(no %PDF header\\)",
        "scan\\.pdf**: failed — no text could be extracted from any of its 2 pages",
        "empty\\.txt**: failed — the file is empty \\(0 bytes\\)",
        "blank\\.md**: failed — the file holds only whitespace",
        "binary\\.txt**: failed — the file looks binary",
    ]
    for message, start in zip(errors, expected, strict=True):
        assert start in message, (start, message)
    assert app.messages("success") == []
    assert app.stored_names() == []
    assert app.metric("Documents") == "0"
    assert app.uploaded_files() == [], "a failed upload must not stay on disk"


def test_upload_names_cannot_leave_the_uploads_folder(app: Harness, tmp_path: Path):
    app.upload(
        ("../../escape.txt", b"Tried to climb out of the folder."),
        ("..\\..\\windows.txt", b"Backslashes are folders too."),
        ("we$ird;|`name`  <x>.md", b"Shell characters in a name."),
        ("%%%.md", b"Nothing but unsafe characters."),
    )
    assert app.messages("error") == []
    assert len(app.messages("success")) == 4
    names = app.uploaded_files()
    assert names == sorted(app.stored_names())
    assert {"escape.txt", "windows.txt", "_.md"} <= set(names)
    for name in names:
        assert re.fullmatch(r"[\w.\- ()]+", name), name
    every_file = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*") if p.is_file())
    stray = [f for f in every_file if f.endswith((".txt", ".md"))]
    assert all(f.startswith("data/uploads/") for f in stray), stray


def test_upload_over_the_size_limit_is_refused(app: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RAG_MAX_FILE_MB", "1")
    big = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 26_000  # about 1.5 MB
    app.upload(("big.txt", big))
    [error] = app.messages("error")
    assert error == "**big\\.txt**: failed — the file is 1\\.5 MB, over the 1 MB limit"
    assert app.stored_names() == []
    assert app.uploaded_files() == []
    assert "Up to 1 MB each" in app.at.file_uploader[0].help


def test_delete_a_document(app: Harness):
    app.upload(("keep.txt", b"This document stays."), ("drop.txt", b"This document goes away."))
    assert app.stored_names() == ["drop.txt", "keep.txt"]
    at = app.at
    at.multiselect[0].set_value(["drop.txt"])
    [delete] = [b for b in at.button if b.label == "Delete"]
    delete.click()
    app.run()
    assert app.stored_names() == ["keep.txt"]
    assert app.metric("Documents") == "1"
    assert [t.value for t in at.toast] == ["Deleted 1 document (1 chunk)"]
    assert app.uploaded_files() == ["keep.txt"], "the uploaded copy of a deleted document is removed too"
    assert app.messages("success") == [], "old upload outcomes are cleared after a delete"


def test_unrelated_question_is_refused_without_the_llm(app: Harness, no_generation: list[str]):
    app.upload(("evil.md", EVIL.encode()))
    app.page(CHAT)
    assert not app.messages("info"), "the empty-store hint is gone once a document exists"
    app.ask("How long should sourdough bread rise before baking?")
    assert no_generation == []
    assert app.messages("error") == []
    [user, assistant] = app.at.chat_message
    assert shown_text(user.html[0].value) == "How long should sourdough bread rise before baking?"
    assert shown_text(assistant.html[0].value) == REFUSAL
    assert [e.label for e in app.at.expander] == ["Closest passages (none relevant enough)"]
    # Document text is shown literally: the HTML holds it as text, with no tag, link or image of its own.
    passages = assistant.html[1].value
    assert EVIL in shown_text(passages)
    assert tag_names(passages) <= {"div", "b", "mark"}, tag_names(passages)


@pytest.mark.slow
def test_chat_answers_with_sources_and_grounding(app: Harness, pdfs: Path, real_generator):
    app.upload(("multi-column-2p.pdf", (pdfs / "multi-column-2p.pdf").read_bytes()))
    question = "What is dense passage retrieval (DPR)?"
    at = app.ask(question)
    assert app.messages("error") == []
    [user, assistant] = at.chat_message
    assert user.name == "user" and assistant.name == "assistant"
    assert shown_text(user.html[0].value) == question
    blocks = [h.value for h in assistant.html]
    answers = [b for b in blocks if 'class="rag-answer"' in b]
    assert len(answers) == 1, blocks
    answer = shown_text(answers[0])
    assert answer.strip() and REFUSAL not in answer
    assert tag_names(answers[0]) <= {"div", "span", "mark", "sup"}, tag_names(answers[0])
    labels = [e.label for e in assistant.expander]
    sources_label = next(label for label in labels if label.startswith("Sources ("))
    count = int(re.search(r"\((\d+)\)", sources_label).group(1))
    passages = shown_text(blocks[-1])
    headings = re.findall(r"\[\d+\] multi-column-2p\.pdf, page [12] — relevance 0\.\d\d", passages)
    assert len(headings) == count >= 1, passages
    # Grounding: one summary line; unsupported sentences, if any, are marked inside the answer.
    grounding = [c.value for c in assistant.caption if "supported" in c.value]
    assert len(grounding) == 1, grounding
    marked = answers[0].count('class="rag-sentence rag-unsupported"')
    if marked:
        assert f"{marked} of " in grounding[0] and "marked in the answer" in grounding[0]
    else:
        assert "Every sentence is supported" in grounding[0]

    # The conversation survives a visit to the other page (it lives in the session).
    app.page(DOCUMENTS)
    at = app.page(CHAT)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert [h.value for h in at.chat_message[1].html] == blocks


def shown_text(fragment: str) -> str:
    """The text a browser shows for an HTML fragment (entities decoded, tags dropped)."""
    from html.parser import HTMLParser

    parts: list[str] = []
    parser = HTMLParser(convert_charrefs=True)
    parser.handle_data = parts.append
    parser.feed(fragment)
    parser.close()
    return "".join(parts)


def tag_names(fragment: str) -> set[str]:
    from html.parser import HTMLParser

    names: set[str] = set()
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: names.add(tag)
    parser.feed(fragment)
    parser.close()
    return names


@pytest.mark.slow
def test_a_failed_answer_is_an_error_message_with_its_reason(
    app: Harness, monkeypatch: pytest.MonkeyPatch, real_generator
):
    from app_pages.shared import escape

    def broken(*args, **kwargs):
        raise RuntimeError("the model at http://localhost:9/model_dir stopped")

    monkeypatch.setattr(real_generator, "stream", broken)  # the loaded model fails when asked to write
    app.upload(("milvus.md", b"Milvus Lite keeps the vectors in one local folder."))
    app.ask("Where does Milvus Lite keep the vectors?")
    [error] = app.messages("error")
    assert error == "Could not answer: " + escape("the model at http://localhost:9/model_dir stopped")
    assert not app.at.exception
