"""What both pages share: one ``Services`` per process and safe text rendering."""

from __future__ import annotations

import atexit
import re
from pathlib import Path

import streamlit as st

from rag.config import Settings
from rag.local_server import LocalServer, running_endpoint
from rag.logs import quiet_libraries
from rag.services import Services
from rag.store import DocumentStore, StoreError

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def escape(text: str) -> str:
    """Show document or model text literally: no markdown, links, images or HTML."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


@st.cache_resource(show_spinner=False)
def _local_server(db_path: str) -> str:
    """Serve a Milvus Lite folder on loopback once per process, so `python -m ingest` can share it."""
    existing = running_endpoint(Path(db_path))
    if existing:
        return existing
    server = LocalServer(Path(db_path))
    uri = server.start()
    atexit.register(server.stop)
    return uri


@st.cache_resource(show_spinner="Loading the embedding model and opening the store…")
def get_services() -> Services:
    settings = Settings()
    quiet_libraries()
    if settings.is_local_store:
        settings = settings.model_copy(update={"milvus_uri": _local_server(settings.resolved_milvus_uri)})
    services = Services(settings)
    services.store()  # connect now, inside the spinner
    return services


@st.cache_resource(show_spinner="Loading the language model (the first start converts it once)…")
def get_generator(_services: Services):
    services = _services
    services.generator.load()
    return services.generator


def open_store() -> tuple[Services, DocumentStore] | None:
    """The shared services and store, or an error message on the page (never a traceback)."""
    try:
        services = get_services()
        return services, services.store()
    except (StoreError, RuntimeError, ValueError, OSError) as exc:
        st.error(f"The document store is not available: {exc}", icon=":material/error:")
        return None
