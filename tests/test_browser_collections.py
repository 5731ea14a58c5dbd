"""Collections in headless Chromium: create one in the sidebar, upload into it, reload, switch
back and forth (the documents differ), delete it after confirming.

The app runs as ``python -m rag app`` with its own data folder (see ``test_browser``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_browser import STARTUP_S, chromium_page, running_app, wait_until_idle

TERMS = "terms.txt"


def picker(page):
    """The sidebar's collection picker (a combo box: an input showing the value, and an Open button)."""
    return page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')


def pick(page, name: str) -> None:
    """Choose ``name`` in the sidebar's collection picker."""
    picker(page).get_by_role("button", name="Open").click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_until_idle(page)


def picked(page) -> str:
    return picker(page).get_by_role("combobox").input_value()


def address_names(page, name: str) -> None:
    """Wait until the page's address carries ``?collection=name`` (set without a navigation)."""
    page.wait_for_function(
        "name => new URL(location.href).searchParams.get('collection') === name", arg=name, timeout=60_000
    )


def go(page, title: str, heading: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    page.get_by_role("heading", name=heading).wait_for(timeout=60_000)
    wait_until_idle(page)


def no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


@pytest.mark.browser
@pytest.mark.slow
def test_collections_in_a_browser(tmp_path: Path):
    document = tmp_path / TERMS
    document.write_text("The contract ends after twelve months unless renewed in writing.")
    data_dir = tmp_path / "data"
    with (
        running_app(data_dir, tmp_path / "app.log", RAG_MAX_NEW_TOKENS="16") as app,
        chromium_page(app.url, tmp_path / "failure.png") as page,
    ):
        page.goto("/")
        page.get_by_role("heading", name="Chat with your documents").wait_for(timeout=STARTUP_S * 1000)
        wait_until_idle(page)
        assert picked(page) == "documents"

        # Create a collection in the sidebar: it becomes the pick, and the address names it.
        page.get_by_role("button", name=re.compile("New collection")).click()
        page.get_by_label("Name").fill("contracts")
        page.get_by_role("button", name="Create collection").click()
        address_names(page, "contracts")
        wait_until_idle(page)
        page.keyboard.press("Escape")  # close the popover
        assert picked(page) == "contracts"

        # Upload into it on the Documents page, which names the collection.
        go(page, "Documents", "Documents")
        assert picked(page) == "contracts"
        page.get_by_test_id("stCaptionContainer").get_by_text("Collection: contracts").wait_for()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(document)
        page.get_by_text(TERMS).first.wait_for()
        page.get_by_role("button", name="Add to library").click()
        page.locator('[data-testid="stAlertContentSuccess"]', has_text=TERMS).wait_for(timeout=STARTUP_S * 1000)
        wait_until_idle(page)
        assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "1"
        assert (data_dir / "uploads" / "contracts" / TERMS).exists()

        # A reload keeps the pick (it is in the address).
        page.reload()
        page.get_by_role("heading", name="Documents").wait_for(timeout=60_000)
        wait_until_idle(page)
        assert picked(page) == "contracts"
        assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "1"

        # Switch back: the default collection has no documents; the chat page shows the pick too.
        pick(page, "documents")
        page.get_by_text("The library is empty").wait_for(timeout=60_000)
        assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "0"
        go(page, "Chat", "Chat with your documents")
        assert picked(page) == "documents"
        page.get_by_text("No documents yet").wait_for()
        pick(page, "contracts")
        page.get_by_text("No documents yet").wait_for(state="detached", timeout=60_000)
        go(page, "Documents", "Documents")
        assert picked(page) == "contracts"
        assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == "1"
        no_errors(page)

        # Delete asks first; Cancel keeps the collection.
        page.get_by_role("button", name="Remove collection contracts").click()
        warning = page.locator('[data-testid="stAlertContentWarning"]', has_text="cannot be undone")
        warning.wait_for(timeout=60_000)
        assert "contracts with its 1 document (1 chunk)" in warning.inner_text()
        page.get_by_role("button", name="Cancel").click()
        warning.wait_for(state="detached", timeout=60_000)
        wait_until_idle(page)
        assert picked(page) == "contracts"

        # Confirmed: it is gone with its uploaded copy, and the default collection is picked.
        page.get_by_role("button", name="Remove collection contracts").click()
        page.get_by_role("button", name="Yes, delete it").click()
        address_names(page, "documents")
        wait_until_idle(page)
        assert picked(page) == "documents"
        picker(page).get_by_role("button", name="Open").click()
        page.get_by_role("option").first.wait_for()
        options = page.get_by_role("option").all_inner_texts()
        page.keyboard.press("Escape")
        assert options == ["documents"], options
        assert not (data_dir / "uploads" / "contracts").exists()
        no_errors(page)
