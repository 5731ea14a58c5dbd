"""Stored conversations in headless Chromium: ask, reload, follow up, two tabs, open another, export.

The app runs as ``python -m rag app`` with its own data folder (``tests/test_browser.py``
starts and stops it); the conversation history is the real SQLite file in that folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect
from test_browser import (
    ANSWER_S,
    PDF_NAME,
    QUESTION,
    ask,
    chromium_page,
    no_app_errors,
    running_app,
    upload,
    wait_until_idle,
)

from rag.conversations import FILE_NAME, ConversationStore

FOLLOW_UP = "And how is it trained?"
OTHER = "How long should sourdough bread rise before baking?"


def conversation_id(page) -> str:
    """The open conversation's id, from the page address (``?c=ID``)."""
    page.wait_for_url(re.compile(r"[?&]c="))
    return parse_qs(urlparse(page.url).query)["c"][0]


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def questions(page) -> list[str]:
    """The user's questions shown in the chat, in order."""
    return page.locator('[data-testid="stChatMessage"] .rag-question').all_inner_texts()


def submit(page, question: str, done: str, count: int) -> None:
    """Ask on the open Chat page and wait for ``count`` messages, the last with an expander titled ``done``."""
    box = page.get_by_placeholder("Ask a question about your documents")
    box.fill(question)
    box.press("Enter")
    messages = page.locator('[data-testid="stChatMessage"]')
    messages.nth(count - 1).locator('[data-testid="stExpander"]', has_text=done).wait_for(timeout=ANSWER_S * 1000)
    wait_until_idle(page, ANSWER_S * 1000)
    assert messages.count() == count


@pytest.mark.browser
@pytest.mark.slow
def test_a_conversation_survives_a_reload_continues_and_exports(tmp_path: Path, pdfs: Path):
    pdf = tmp_path / PDF_NAME
    shutil.copy(pdfs / PDF_NAME, pdf)
    data_dir = tmp_path / "data"
    with (
        running_app(data_dir, tmp_path / "app.log", RAG_MAX_NEW_TOKENS="48") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        upload(page, pdf)
        ask(page, QUESTION)
        first = conversation_id(page)
        chats = ConversationStore(data_dir / FILE_NAME)
        assert [(c.id, c.title, c.turns) for c in chats.list()] == [(first, QUESTION, 1)]
        sidebar(page).get_by_role("button", name=QUESTION).wait_for()

        # A reload reopens it, and a follow-up is searched with its stored history.
        page.reload()
        page.get_by_role("heading", name="Chat with your documents").wait_for(timeout=60_000)
        expect(page.locator('[data-testid="stChatMessage"] .rag-question')).to_have_text([QUESTION])
        wait_until_idle(page)
        assert page.locator('[data-testid="stChatMessage"] .rag-answer').count() == 1
        submit(page, FOLLOW_UP, "Sources (", 4)
        assert questions(page) == [QUESTION, FOLLOW_UP]
        assert conversation_id(page) == first
        assert [e.query for e in chats.get(first).exchanges] == [QUESTION, f"{QUESTION} {FOLLOW_UP}"]

        # A new chat is a second conversation, listed first.
        sidebar(page).get_by_role("button", name="New chat").click()
        expect(page.locator('[data-testid="stChatMessage"]')).to_have_count(0, timeout=60_000)
        page.wait_for_url(lambda url: "c=" not in url)
        wait_until_idle(page)
        submit(page, OTHER, "Closest passages", 2)
        second = conversation_id(page)
        assert second != first
        titles = [c.title for c in chats.list()]
        assert titles == [OTHER, QUESTION]
        for title in titles:
            expect(sidebar(page).get_by_role("button", name=title)).to_be_visible()
        buttons = sidebar(page).get_by_role("button").all_inner_texts()
        assert [b for b in buttons if b in titles] == titles, buttons

        # A second tab opened at the first conversation shows it; neither tab takes the other's.
        tab = page.context.new_page()
        tab.goto(f"/?c={first}")
        tab.get_by_role("heading", name="Chat with your documents").wait_for(timeout=60_000)
        expect(tab.locator('[data-testid="stChatMessage"] .rag-question')).to_have_text([QUESTION, FOLLOW_UP])
        wait_until_idle(tab)
        assert questions(page) == [OTHER]
        tab.close()
        page.reload()
        page.get_by_role("heading", name="Chat with your documents").wait_for(timeout=60_000)
        expect(page.locator('[data-testid="stChatMessage"] .rag-question')).to_have_text([OTHER])
        wait_until_idle(page)
        assert conversation_id(page) == second

        # Open the first one again from the sidebar, and export it.
        sidebar(page).get_by_role("button", name=QUESTION).click()
        page.wait_for_url(re.compile(rf"[?&]c={first}"))
        expect(page.locator('[data-testid="stChatMessage"] .rag-question')).to_have_text([QUESTION, FOLLOW_UP])
        wait_until_idle(page)
        with page.expect_download() as download:
            sidebar(page).get_by_role("button", name="Export as Markdown").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.suffix == ".md" and first in saved.name
        markdown = saved.read_text()
        assert markdown.startswith(f"# {QUESTION}\n")
        assert f"## {FOLLOW_UP}" in markdown
        assert re.search(rf"^- \[\d\] {re.escape(PDF_NAME)}, page [12]$", markdown, re.M), markdown
        no_app_errors(page)
