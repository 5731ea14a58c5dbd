"""Documents page: upload files, see each file's outcome, browse and delete stored documents."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st

from app_pages.shared import escape, open_store
from rag.loading import SUPPORTED_SUFFIXES
from rag.pipeline import Progress, delete_document
from rag.records import FileResult, Outcome, plural

OUTCOME_STYLE = {
    Outcome.ADDED: (st.success, ":material/add_circle:"),
    Outcome.REPLACED: (st.success, ":material/published_with_changes:"),
    Outcome.UNCHANGED: (st.info, ":material/check_circle:"),
    Outcome.FAILED: (st.error, ":material/error:"),
}

opened = open_store()
if opened is None:
    st.stop()
services, store = opened
settings = services.settings

st.title("Documents")
st.caption(f"Collection: **{escape(store.name)}**")


def show_result(result: FileResult) -> None:
    show, icon = OUTCOME_STYLE[result.outcome]
    name = escape(Path(result.source).name)
    if result.outcome is Outcome.FAILED:
        show(f"**{name}**: failed — {escape(result.error or 'unknown error')}", icon=icon)
    else:
        show(
            f"**{name}**: {result.outcome.value} ({result.size_text()})",
            icon=icon,
        )


def ingest_uploads(files: list) -> list[FileResult]:
    """Ingest each upload (the library keeps it in the data folder), with a progress bar per file."""
    results = []
    ingestor = services.ingestor()
    for upload in files:
        bar = st.progress(0.0, text=f"{upload.name}: reading")
        progress = Progress(
            on_chunks=lambda done, total, bar=bar, name=upload.name: bar.progress(
                done / max(total, 1), text=f"{name}: embedding {done}/{total} chunks"
            )
        )
        results.append(ingestor.ingest_upload(upload.name, upload.getvalue(), progress=progress))
        bar.empty()  # the outcome message below says how it went
    return results


with st.form("upload", clear_on_submit=True):
    files = st.file_uploader(
        "Add documents",
        type=sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES),
        accept_multiple_files=True,
        help=f"Up to {settings.max_file_mb} MB each. A file with the name of a stored one replaces it.",
    )
    submitted = st.form_submit_button("Add to library", icon=":material/upload:", type="primary")
if submitted and files:
    st.session_state.last_results = ingest_uploads(files)
for result in st.session_state.get("last_results", []):
    show_result(result)

documents = store.list_documents()
left, middle, right = st.columns(3)
left.metric("Documents", len(documents))
middle.metric("Chunks", sum(d.chunks for d in documents))
right.metric("Pages", sum(d.pages for d in documents))

if documents:
    st.dataframe(
        [
            {
                "name": Path(d.source).name,
                "pages": d.pages,
                "chunks": d.chunks,
                "added": datetime.fromtimestamp(d.added_at).strftime("%Y-%m-%d %H:%M"),
                "size (kB)": round(d.size_bytes / 1024, 1),
                "source": d.source,
            }
            for d in documents
        ],
        hide_index=True,
        width="stretch",
    )
    with st.form("delete"):
        doomed = st.multiselect("Delete documents", [d.source for d in documents])
        if st.form_submit_button("Delete", icon=":material/delete:") and doomed:
            removed = sum(delete_document(settings, store, source).chunks for source in doomed)
            st.session_state.last_results = []
            st.toast(f"Deleted {plural(len(doomed), 'document')} ({plural(removed, 'chunk')})")
            st.rerun()
else:
    st.info("The library is empty: upload files above, or run `python -m ingest PATH` in a terminal.")

with st.expander("Store details"):
    st.markdown(
        f"- Location: `{settings.resolved_milvus_uri}` (connected at `{store.uri}`)\n"
        f"- Collection: `{store.name}`\n"
        f"- Embedding model: `{store.embedder.model_name}` ({store.embedder.dimension} dimensions)\n"
        f"- Search: {'hybrid dense + BM25' if store.hybrid_available else 'dense only'}; "
        f"index {settings.index_type} / {settings.metric}"
    )
