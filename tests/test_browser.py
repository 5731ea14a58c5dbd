"""The app end to end in headless Chromium: upload a PDF, ask about it, read the sources, delete it.

The app runs as ``python -m rag app`` on a free port with its own data folder, exactly as a
person would start it. The tests save the screenshots shown in the README to
``docs/screenshots/``. Chromium comes from the Debian packages (``make test-setup``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from store_contract import free_port

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PDF_NAME = "multi-column-2p.pdf"
QUESTION = "What encoder does the dense passage retriever use?"
VIEWPORT = {"width": 1280, "height": 900}
STARTUP_S = 180
ANSWER_S = 420  # the bundled LLM on a busy CPU


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


class AppProcess:
    """``python -m rag app`` on a free port over ``data_dir``; stop() ends it and its Milvus server."""

    def __init__(self, data_dir: Path, log_path: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}  # only the test's settings
        self.env = dict(inherited, RAG_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **env)
        self.process: subprocess.Popen | None = None
        self.milvus_pid: int | None = None

    @property
    def endpoint(self) -> Path:
        return self.data_dir / "milvus.db.server.json"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def start(self) -> AppProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rag", "app", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, like a command started in a terminal
            )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"the app did not answer within {STARTUP_S} s:\n{self.log()}")
        self.milvus_pid = json.loads(self.endpoint.read_text())["pid"]
        return self

    def stop(self, how: str = "SIGTERM") -> None:
        """Stop it as a service manager would (SIGTERM) or as Ctrl-C in its terminal does ("Ctrl-C":
        SIGINT to the whole process group); then check nothing is left behind."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if how == "Ctrl-C":
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(getattr(signal, how))
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the app ignored SIGTERM:\n{self.log()}") from None
        leftover = self.milvus_pid is not None and pid_alive(self.milvus_pid)
        if leftover:
            os.kill(self.milvus_pid, signal.SIGKILL)
        assert not leftover, "the local Milvus server outlived the app"
        assert not self.endpoint.exists(), "the app left a stale endpoint file"


@contextmanager
def running_app(data_dir: Path, log_path: Path, **env: str) -> Iterator[AppProcess]:
    app = AppProcess(data_dir, log_path, **env)
    try:
        yield app.start()
    finally:
        app.stop()


@contextmanager
def chromium_page(base_url: str, failure_shot: Path):
    """A headless Chromium page, 1280 px wide, that fails on uncaught page errors (screenshot on failure)."""
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver (make test-setup)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, base_url=base_url)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            try:
                yield page
            except BaseException:
                page.screenshot(path=failure_shot, full_page=True)  # to see what went wrong
                raise
            assert not errors, errors
        finally:
            browser.close()


@contextmanager
def documents_page(tmp_path: Path, **env: str) -> Iterator[tuple[AppProcess, Any]]:
    """The app on ``tmp_path / "data"`` and a browser on its Documents page, once the page has loaded."""
    with (
        running_app(tmp_path / "data", tmp_path / "app.log", **env) as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        page.goto("/documents")
        page.get_by_role("heading", name="Documents").wait_for(timeout=STARTUP_S * 1000)
        wait_until_idle(page)
        yield app, page


def wait_until_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has finished the current script run (no "Running..." status)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(300)  # let the last delta paint


def screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the window to fit it first."""
    page.wait_for_timeout(1000)  # expanders open with an animation
    # The tallest scrolling box holds the page's content; the chat input stays pinned below it.
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('*')].map((e) => e.scrollHeight))")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(int(height), 4000))})
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(VIEWPORT)


def upload(page, path: Path) -> None:
    """Add one file on the Documents page and wait until it is stored."""
    page.goto("/documents")
    page.get_by_role("heading", name="Documents").wait_for(timeout=STARTUP_S * 1000)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(path)
    page.get_by_text(path.name).first.wait_for()
    page.get_by_role("button", name="Add to library").click()
    outcome = page.locator('[data-testid="stAlertContentSuccess"]', has_text=path.name)
    outcome.wait_for(timeout=STARTUP_S * 1000)
    wait_until_idle(page)


def ask(page, question: str):
    """Ask on the Chat page; returns the assistant's message once its answer and sources are shown."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Chat").click()
    page.get_by_role("heading", name="Chat with your documents").wait_for()
    box = page.get_by_placeholder("Ask a question about your documents")
    box.fill(question)
    box.press("Enter")
    page.locator('[data-testid="stExpander"]').filter(has_text=re.compile(r"Sources \(\d+\)")).wait_for(
        timeout=ANSWER_S * 1000
    )
    wait_until_idle(page, ANSWER_S * 1000)
    messages = page.locator('[data-testid="stChatMessage"]')
    assert messages.count() == 2
    return messages.nth(1)


def no_app_errors(page) -> None:
    """No Python exception box and no error message on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


@pytest.mark.browser
@pytest.mark.slow
def test_upload_ask_and_delete_in_a_browser(tmp_path: Path, pdfs: Path):
    pdf = tmp_path / PDF_NAME
    shutil.copy(pdfs / PDF_NAME, pdf)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with (
        running_app(tmp_path / "data", tmp_path / "app.log", RAG_MAX_NEW_TOKENS="64") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        # Documents: upload the PDF through the file input and wait for its outcome.
        page.goto("/documents")
        page.get_by_role("heading", name="Documents").wait_for(timeout=STARTUP_S * 1000)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(pdf)
        page.get_by_text(PDF_NAME).first.wait_for()
        page.get_by_role("button", name="Add to library").click()
        outcome = page.locator('[data-testid="stAlertContentSuccess"]', has_text=PDF_NAME)
        outcome.wait_for(timeout=STARTUP_S * 1000)
        assert re.search(r"added \(2 pages, \d+ chunks\)", outcome.inner_text()), outcome.inner_text()
        wait_until_idle(page)
        metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        assert metrics[0] == "1", metrics
        no_app_errors(page)
        screenshot(page, SCREENSHOTS / "documents.png")

        # Chat: ask about the PDF and wait for the streamed answer and its sources.
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Chat").click()
        page.get_by_role("heading", name="Chat with your documents").wait_for()
        box = page.get_by_placeholder("Ask a question about your documents")
        box.fill(QUESTION)
        box.press("Enter")
        sources = page.locator('[data-testid="stExpander"]').filter(has_text=re.compile(r"Sources \(\d+\)"))
        sources.wait_for(timeout=ANSWER_S * 1000)
        wait_until_idle(page, ANSWER_S * 1000)
        messages = page.locator('[data-testid="stChatMessage"]')
        assert messages.count() == 2
        answer = messages.nth(1).locator(".rag-answer").inner_text()
        assert answer.strip() and "do not contain an answer" not in answer, answer
        sources.locator("summary").click()
        details = sources.locator('[data-testid="stExpanderDetails"]')
        details.get_by_text(PDF_NAME).first.wait_for()
        listed = details.inner_text()
        assert re.search(rf"\[1\] {re.escape(PDF_NAME)}, page \d — relevance 0\.\d\d", listed), listed
        no_app_errors(page)

        # Documents again: delete the PDF; the table is gone and the library is empty.
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Documents").click()
        page.get_by_role("heading", name="Documents").wait_for()
        wait_until_idle(page)
        page.locator('[data-testid="stMultiSelect"]').click()
        page.get_by_role("option", name=PDF_NAME).click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Delete").click()
        page.get_by_text("The library is empty").wait_for(timeout=60_000)
        assert page.locator('[data-testid="stDataFrame"]').count() == 0
        assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "0"
        assert not (tmp_path / "data" / "uploads" / PDF_NAME).exists()
        no_app_errors(page)


# Text from a document and from the model is shown as text ----------------------------------

HOSTILE_NAME = "hostile-notes.md"
HOSTILE = """# Feature notes

The feature_list option turns on the video player. Watch the demo at www.youtube.com/watch?v=dQw4w9WgXcQ
or read https://example.com/docs_page for the details.

<b>bold by HTML</b> <script>window.__pwned = "script";</script>
<img src="http://127.0.0.1:9/pixel.png" onerror="window.__pwned = 'onerror'">
[Click here](javascript:window.__pwned='link') and ![a picture](http://127.0.0.1:9/picture.png)

- the player starts muted
- the player loops the video
"""
HOSTILE_QUESTION = "What does the feature_list option turn on, and where is the demo video?"


@pytest.mark.browser
@pytest.mark.slow
def test_document_and_model_text_is_shown_as_text(tmp_path: Path):
    """No link, image, script or HTML from a document or the model reaches the page, and no escape characters."""
    document = tmp_path / HOSTILE_NAME
    document.write_text(HOSTILE)
    with (
        running_app(tmp_path / "data", tmp_path / "app.log", RAG_MAX_NEW_TOKENS="48") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        requests: list[str] = []
        dialogs: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        upload(page, document)
        answer = ask(page, HOSTILE_QUESTION)
        answer.locator('[data-testid="stExpander"] summary').click()  # show the passages
        page.wait_for_timeout(1000)
        shown = answer.locator('[data-testid="stExpanderDetails"]').inner_text()
        # The passage is there, character for character as the file has it.
        for line in ("www.youtube.com/watch?v=dQw4w9WgXcQ", "https://example.com/docs_page", "feature_list option",
                     "<b>bold by HTML</b>", '<script>window.__pwned = "script";</script>',
                     "[Click here](javascript:window.__pwned='link')", "- the player starts muted"):  # fmt: skip
            assert line in shown, (line, shown)
        conversation = page.locator('[data-testid="stChatMessage"]')
        text = conversation.all_inner_texts()
        assert all("\\" not in part for part in text), text  # no backslash escapes shown
        assert "feature_list" in text[0], text  # the question, as typed
        # Only the app's own markup: no link, image, frame, script or bold from the text.
        for tag in ("a", "img", "iframe", "script", "object", "embed", "video"):
            assert conversation.locator(tag).count() == 0, (tag, conversation.locator(tag).count())
        bold = conversation.locator("b, strong").all_inner_texts()
        assert all(re.fullmatch(r"\[\d+\] .+", b) for b in bold), bold  # only the source headings
        assert page.evaluate("() => window.__pwned") is None
        assert dialogs == []
        assert not [url for url in requests if "127.0.0.1:9/" in url or "youtube" in url or "example.com" in url]
        no_app_errors(page)


# The README's screenshot ---------------------------------------------------------------------

README_NAME = "freedonia-guide.md"  # the name is in the prompt: this one gives the bundled model a clean answer
README_DOCUMENT = """The capital of Freedonia is Zenda. The city has 42 bridges over the river Sylvan.

Freedonia's national animal is the blue heron, protected since 1921.
"""
README_QUESTION = "What is the capital of Freedonia?"


@pytest.mark.browser
@pytest.mark.slow
def test_readme_screenshot_shows_a_correct_supported_answer(tmp_path: Path):
    """docs/screenshots/chat.png: a right answer whose every sentence the page marks as supported.

    The screenshot is saved only after the page itself says so: no sentence carries the
    unsupported mark, every sentence carries the supported class, and the summary line agrees.
    """
    document = tmp_path / README_NAME
    document.write_text(README_DOCUMENT)
    with (
        running_app(tmp_path / "data", tmp_path / "app.log", RAG_MAX_NEW_TOKENS="64") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        upload(page, document)
        answer = ask(page, README_QUESTION)
        generated = answer.locator(".rag-answer")
        assert generated.count() == 1
        text = generated.inner_text()
        assert "Zenda" in text, text  # the right fact
        assert answer.locator(".rag-unsupported").count() == 0, text
        assert "\u26a0" not in text and "not supported" not in answer.inner_text(), text
        sentences = answer.locator(".rag-sentence").all_inner_texts()
        assert sentences and len(answer.locator(".rag-supported").all()) == len(sentences), sentences
        assert "".join(sentences).replace(" ", "") == text.replace(" ", "").replace("\n", ""), (sentences, text)
        assert answer.get_by_text("Every sentence is supported by a cited passage.").count() == 1
        key = answer.locator(".rag-key")
        if key.count():  # the source's own words above the answer, with file and page
            assert README_NAME in key.inner_text()
        answer.locator('[data-testid="stExpander"] summary').click()
        answer.locator(".rag-source").first.wait_for()
        assert README_NAME in answer.locator(".rag-source").first.inner_text()
        no_app_errors(page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        screenshot(page, SCREENSHOTS / "chat.png")


# The marks themselves, on an answer built by hand ----------------------------------------------

MARKS_SCRIPT = """
import streamlit as st

from app_pages.render import answer_html, key_sentence_html, sources_html
from rag.answering import Answer, Evidence, KeySentence, SentenceCheck, Source

PASSAGE = (
    "The panel is rated 385 W. Its maximum efficiency is 21.0 %. See www.example.com/panel_spec "
    "or <a href='http://127.0.0.1:9/x'>the sheet</a> <img src=http://127.0.0.1:9/y.png>."
)
source = Source(1, "/docs/panel.pdf", "panel.pdf", 2, 0.71, PASSAGE, cited=True)
checks = [
    SentenceCheck("The panel is rated 385 W [1].", True, 0.8, [1],
                  evidence=[Evidence(1, "/docs/panel.pdf", 2, "The panel is rated 385 W.")]),
    SentenceCheck("Its efficiency is 2.0% [1].", False, 0.7, [1], reason="2.0% is not in source [1]"),
    SentenceCheck("Details at www.evil.example/x_y.", False, 0.1, []),
]
answer = Answer(
    " ".join(c.text for c in checks), False, [source], checks,
    key_sentence=KeySentence("Its maximum efficiency is 21.0 %.", "/docs/panel.pdf", 2, 1, 0.8),
)
with st.chat_message("assistant"):
    st.html(key_sentence_html(answer.key_sentence, answer.sources))
    st.html(answer_html(answer))
    with st.expander("Sources (1)", expanded=True):
        st.html(sources_html(answer))
"""


@pytest.mark.browser
@pytest.mark.slow
def test_marks_key_sentence_and_evidence_in_a_browser(tmp_path: Path):
    """Unsupported sentences marked in place with their reason, the key sentence quoted, evidence highlighted."""
    script = tmp_path / "marks.py"
    script.write_text(MARKS_SCRIPT)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    with open(tmp_path / "streamlit.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with chromium_page(f"http://127.0.0.1:{port}", tmp_path / "failure.png") as page:
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            deadline = time.monotonic() + STARTUP_S
            while True:
                try:
                    page.goto("/")
                    break
                except Exception:  # not listening yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            message = page.locator('[data-testid="stChatMessage"]')
            message.locator(".rag-source").wait_for(timeout=STARTUP_S * 1000)
            # The source's own words first, with file and page.
            key = message.locator(".rag-key")
            assert "“Its maximum efficiency is 21.0 %.”" in key.inner_text()
            assert "— panel.pdf, page 2 [1]" in key.inner_text()
            assert key.bounding_box()["y"] < message.locator(".rag-answer").bounding_box()["y"]
            # Both unsupported sentences are marked inside the answer, each with its reason.
            marked = message.locator(".rag-answer .rag-unsupported")
            assert marked.count() == 2
            assert marked.first.get_attribute("title") == "Not supported: 2.0% is not in source [1]"
            assert "\u26a0 Its efficiency is 2.0% [1]." in marked.first.inner_text()
            answer = message.locator(".rag-answer").inner_text()
            assert "(not supported: 2.0% is not in source [1])" in answer
            assert message.locator(".rag-answer .rag-supported").inner_text() == "The panel is rated 385 W [1]."
            # The evidence and the key sentence are highlighted inside the passage.
            assert message.locator(".rag-passage .rag-evidence").inner_text() == "The panel is rated 385 W."
            assert message.locator(".rag-passage .rag-key-mark").inner_text() == "Its maximum efficiency is 21.0 %."
            color = message.locator(".rag-passage .rag-evidence").evaluate("e => getComputedStyle(e).backgroundColor")
            assert color not in ("rgba(0, 0, 0, 0)", "transparent"), color
            # Text is text: the passage's tag and URL are shown, not followed or loaded.
            passage = message.locator(".rag-passage").inner_text()
            assert "<a href='http://127.0.0.1:9/x'>the sheet</a>" in passage and "www.example.com/panel_spec" in passage
            for tag in ("a", "img"):
                assert message.locator(tag).count() == 0, tag
            assert "\\" not in message.inner_text()
            assert not [url for url in requests if "127.0.0.1:9/" in url]
    finally:
        process.terminate()
        process.wait(timeout=30)
