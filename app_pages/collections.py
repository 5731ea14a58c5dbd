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
)
from rag.collections import CollectionError, check_name, collection_names, delete_collection
from rag.records import plural
from rag.store import StoreError

CONFIRM_KEY = "confirm_delete_collection"
NOTICE_KEY = "collection_notice"  # said once, on the run after a deletion


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


def _create_form(settings, names: list[str]) -> None:
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


def _delete_controls(settings, current: str) -> None:
    """A delete button that asks first, in the page, saying what will go."""
    if st.session_state.get(CONFIRM_KEY) != current:
        if st.button(f"Delete collection {current}", icon=":material/delete:", width="stretch"):
            st.session_state[CONFIRM_KEY] = current
            st.rerun()
        return
    store = get_services(current).store()
    documents, chunks = store.document_count(), store.count()
    st.warning(
        f"Delete the collection **{escape(current)}** with its {plural(documents, 'document')} "
        f"({plural(chunks, 'chunk')}) and their uploaded copies? This cannot be undone.",
        icon=":material/warning:",
    )
    yes, no = st.columns(2)
    if yes.button("Yes, delete it", type="primary", key="confirm_delete_yes"):
        st.session_state.pop(CONFIRM_KEY, None)
        try:
            deletion = delete_collection(settings, current)
        except (CollectionError, StoreError) as exc:
            st.error(escape(str(exc)), icon=":material/error:")
            return
        forget_collection(current)
        st.session_state.pop("last_results", None)
        pick_collection(configured_collection())
        st.session_state[NOTICE_KEY] = (
            f"Deleted collection {deletion.name} ({plural(deletion.documents, 'document')}, "
            f"{plural(deletion.chunks, 'chunk')})"
        )
        st.rerun()
    if no.button("Cancel", key="confirm_delete_no"):
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()
