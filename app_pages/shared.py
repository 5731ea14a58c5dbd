"""What both pages share: the picked collection's ``Services`` (models loaded once per process) and safe text."""

from __future__ import annotations

import atexit
import re
from pathlib import Path

import streamlit as st

from rag.collections import collection_names
from rag.config import Settings
from rag.local_server import LocalServer, running_endpoint
from rag.logs import quiet_libraries
from rag.services import Services
from rag.store import DocumentStore, StoreError, check_connection
from rag.upload_jobs import UploadJobs

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
# Streamlit's markdown turns "www.x", "http://x" and "a@b.c" into links whatever the escaping;
# an invisible word joiner (U+2060) inside each breaks the pattern and shows nothing.
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\.)|(?<=:)(?=//)|(?<=@)")
WORD_JOINER = "\u2060"
COLLECTION_KEY = "collection"  # in st.session_state and st.query_params


def escape(text: str) -> str:
    """Markdown that shows ``text`` literally: no markup, links, images or HTML, and no visible escapes.

    For short text inside the app's own markdown (file names, error reasons); answers and passages
    are shown as HTML text instead (``app_pages.render``).
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, text))


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
def _configured_services() -> Services:
    """The settings stay as configured: a Lite folder resolves to the local server started here
    (``store.uri`` says where it connected), so pages show the folder and keep uploads beside it."""
    settings = Settings()
    quiet_libraries()
    if settings.is_local_store:
        _local_server(settings.resolved_milvus_uri)
    check_connection(settings)  # an unreachable store says so now, before the model loads
    services = Services(settings)
    services.embedder  # noqa: B018 (load it now, inside the spinner; every collection shares it)
    return services


def app_settings() -> Settings:
    """The settings the app was started with (the local Milvus server is running once this returns)."""
    return _configured_services().settings


@st.cache_resource(show_spinner="Opening the collection…")
def _collection_services(name: str) -> Services:
    """One ``Services`` per collection, all sharing the configured one's loaded models (the configured
    collection too gets its own, so that deleting it and picking it again starts it afresh)."""
    services = _configured_services().with_collection(name)
    services.store()  # opens it, or creates it empty (with the embedding model it records)
    return services


def forget_collection(name: str) -> None:
    """Drop the cached services of a deleted collection (a later pick of the name starts afresh)."""
    _collection_services.clear(name)


def configured_collection() -> str:
    """The collection the app was started with (``RAG_COLLECTION``): the pick when nothing else is."""
    return Settings().collection


def picked_collection() -> str:
    """The collection this browser session works on: its pick, else the page address's
    ``?collection=`` (so a reload keeps it), else the configured one."""
    picked = st.session_state.get(COLLECTION_KEY) or st.query_params.get(COLLECTION_KEY)
    return picked or configured_collection()


def pick_collection(name: str) -> None:
    """Make ``name`` this session's collection, in the session and in the page address."""
    st.session_state[COLLECTION_KEY] = name
    st.query_params[COLLECTION_KEY] = name


def get_services(collection: str | None = None) -> Services:
    """The services of ``collection`` (default: the one picked in this browser session)."""
    return _collection_services(collection or picked_collection())


@st.cache_resource(show_spinner="Loading the language model (the first start converts it once)…")
def get_generator(_services: Services):
    services = _services
    services.generator.load()
    return services.generator


@st.cache_resource(show_spinner=False)
def upload_jobs() -> UploadJobs:
    """The process's upload queue and worker: uploads outlive the page run (and the page) that sent them.
    Made on the first page of a start, which first removes what an earlier run left half-done."""
    return UploadJobs.start(app_settings().data_dir / "uploads", _existing_collection)


def _existing_collection(name: str) -> Services | None:
    """A collection's services if it exists (checking a leftover upload never creates one)."""
    return get_services(name) if name in collection_names(app_settings()) else None


def adding_notice() -> None:
    """A line saying that uploads to the picked collection are still being ingested (none when idle)."""
    active = upload_jobs().active(picked_collection())
    if active:
        st.info(
            f"Documents are still being added ({active} in progress): see the Documents page.",
            icon=":material/hourglass_top:",
        )


def open_store() -> tuple[Services, DocumentStore] | None:
    """The picked collection's services and store, or an error message on the page (never a traceback)."""
    try:
        services = get_services()
        return services, services.store()
    except (StoreError, RuntimeError, ValueError, OSError) as exc:
        st.error(f"The document store is not available: {exc}", icon=":material/error:")
        return None
