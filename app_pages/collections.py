"""The sidebar's collection picker, on every page: pick, create and delete collections.

The pick lives in ``st.session_state`` and in the address (``?collection=``), so switching
pages and reloading keep it; ``app_pages.shared.open_store`` serves the picked collection.
"""

from __future__ import annotations

import streamlit as st

from app_pages.shared import (
    app_settings,
    configured_collection,
    escape,
    forget_collection,
    get_services,
    pick_collection,
    picked_collection,
    upload_jobs,
)
from rag.collections import CollectionError, check_name, collection_names, delete_collection, find_collection
from rag.config import Settings
from rag.records import plural
from rag.store import StoreError

CONFIRM_KEY = "confirm_delete_collection"
NOTICE_KEY = "collection_notice"  # said once, on the run after a deletion
FAILURE_KEY = "collection_failure"  # a deletion that failed, said once


def collection_sidebar() -> None:
    """Render the picker; never raises (a store that cannot be listed is shown as an error)."""
    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.toast(notice, icon=":material/delete:")
    configured = configured_collection()
    try:
        settings = app_settings()  # starts the local Milvus server before listing
        names = collection_names(settings)
    except (StoreError, RuntimeError, ValueError, OSError) as exc:
        st.sidebar.error(f"Collections are not available: {escape(str(exc))}", icon=":material/error:")
        return
    current = picked_collection()
    if current not in names and current != configured:
        st.sidebar.warning(
            f"The collection **{escape(current)}** no longer exists (deleted in another tab or from the "
            f"terminal): showing **{escape(configured)}**.",
            icon=":material/warning:",
        )
        forget_collection(current)  # a later collection of that name starts afresh
        current = configured
    options = sorted({*names, configured})
    pick_collection(current)  # page switches drop the address's query: put it back
    with st.sidebar:
        choice = st.selectbox(
            "Collection",
            options,
            index=options.index(current),
            help="Each collection keeps its own documents and embedding model; Chat and Documents work on this one.",
        )
        if choice != current:
            st.session_state.pop(CONFIRM_KEY, None)
            pick_collection(choice)
            st.rerun()
        _create_form(settings, names)
        _delete_controls(settings, current)


def _create_form(settings: Settings, names: list[str]) -> None:
    with st.popover("New collection", icon=":material/add:", width="stretch"):
        with st.form("new_collection", clear_on_submit=True, border=False):
            raw = st.text_input("Name", placeholder="contracts_2024")
            submitted = st.form_submit_button("Create collection")
        if not submitted:
            return
        try:
            name = check_name(raw)
        except CollectionError as exc:
            st.error(escape(str(exc)), icon=":material/error:")
            return
        if name in names:
            st.error(f"A collection named **{escape(name)}** already exists: pick it above.", icon=":material/error:")
            return
        try:
            forget_collection(name)  # nothing cached from an earlier collection of that name
            get_services(name)  # creates it, recording the embedding model
        except (StoreError, RuntimeError, ValueError, OSError) as exc:
            st.error(f"Could not create **{escape(name)}**: {escape(str(exc))}", icon=":material/error:")
            return
        pick_collection(name)
        st.rerun()


def _delete_controls(settings: Settings, current: str) -> None:
    """A remove button that asks first, in the page, saying what will go. The buttons act in
    callbacks, before the next run draws the page, so a quick second click never meets a stale
    page. (The label avoids the word "Delete", which the Documents page's own button answers to.)"""
    if failure := st.session_state.pop(FAILURE_KEY, None):
        st.error(escape(failure), icon=":material/error:")
    if st.session_state.get(CONFIRM_KEY) != current:
        st.button(
            f"Remove collection {current}",
            icon=":material/delete:",
            width="stretch",
            on_click=st.session_state.update,
            args=({CONFIRM_KEY: current},),
        )
        return
    try:
        info = find_collection(settings, current)
        what = (
            f"with its {plural(info.documents, 'document')} ({plural(info.chunks, 'chunk')}) and their uploaded copies"
        )
    except (CollectionError, StoreError):
        what = "and its uploaded copies"
    st.warning(f"Delete the collection **{escape(current)}** {what}? This cannot be undone.", icon=":material/warning:")
    yes, no = st.columns(2)
    yes.button("Yes, delete it", type="primary", key="confirm_delete_yes", on_click=_delete, args=(settings, current))
    no.button("Cancel", key="confirm_delete_no", on_click=st.session_state.pop, args=(CONFIRM_KEY, None))


def _delete(settings: Settings, name: str) -> None:
    """The confirmed deletion (a button callback): drop it, forget its services, pick the default."""
    st.session_state.pop(CONFIRM_KEY, None)
    try:
        deletion = delete_collection(settings, name)
    except (CollectionError, StoreError) as exc:
        st.session_state[FAILURE_KEY] = f"Could not delete {name}: {exc}"
        return
    forget_collection(name)
    upload_jobs().forget_finished(name)  # its upload outcomes go with it
    pick_collection(configured_collection())
    st.session_state[NOTICE_KEY] = (
        f"Deleted collection {deletion.name} ({plural(deletion.documents, 'document')}, "
        f"{plural(deletion.chunks, 'chunk')})"
    )
