"""Documents page: upload files, see each file's outcome, browse and delete stored documents.

Uploads are queued as background jobs (``rag.upload_jobs``), so leaving the page never cuts one off;
coming back shows every job's state, refreshed each second while any is running.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st

from app_pages.shared import escape, open_store, upload_jobs
from rag.loading import SUPPORTED_SUFFIXES
from rag.pipeline import delete_document
from rag.records import Outcome, plural
from rag.upload_jobs import JobState, UploadJob

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
st.caption(f"Collection: **{escape(settings.collection)}**")


jobs = upload_jobs()
if notice := jobs.cleanup_notice():
    st.warning(notice, icon=":material/restore:")


def show_job(job: UploadJob) -> None:
    """A finished job as its outcome message; a running one as a progress bar with its state."""
    name = escape(Path(job.result.source if job.result else job.name).name)
    if job.state is JobState.FAILED:
        st.error(f"**{name}**: failed — {escape(job.error or 'unknown error')}", icon=":material/error:")
    elif job.state is JobState.DONE and job.result is not None:
        show, icon = OUTCOME_STYLE[job.result.outcome]
        show(f"**{name}**: {job.result.outcome.value} ({job.result.size_text()})", icon=icon)
    else:
        done, total = job.chunks if job.state is JobState.EMBEDDING else job.pages
        st.progress(done / total if total else 0.0, text=f"{name}: {escape(job.describe())}")


@st.fragment(run_every=1.0)
def live_jobs() -> None:
    """Every second while uploads are ingested in the background; one full run once all are done."""
    current = jobs.jobs(settings.collection)
    for job in current:
        show_job(job)
    if not any(job.active for job in current):
        st.rerun()  # the library table below shows the new documents, and this timer stops


with st.form("upload", clear_on_submit=True):
    files = st.file_uploader(
        "Add documents",
        type=sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES),
        accept_multiple_files=True,
        help=f"Up to {settings.max_file_mb} MB each. A file with the name of a stored one replaces it. "
        "Files are added in the background: you may leave this page meanwhile.",
    )
    submitted = st.form_submit_button("Add to library", icon=":material/upload:", type="primary")
if submitted and files:
    for upload in files:
        jobs.submit(services, upload.name, upload.getvalue())
if jobs.active(settings.collection):
    live_jobs()
else:
    for job in jobs.jobs(settings.collection):
        show_job(job)
    if jobs.jobs(settings.collection) and st.button("Clear messages", icon=":material/clear_all:"):
        jobs.forget_finished(settings.collection)
        st.rerun()

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
            jobs.forget_finished(settings.collection)
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
