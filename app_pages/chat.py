"""Chat page: ask, watch the answer stream in, check its sources and grounding."""

from __future__ import annotations

import streamlit as st

from app_pages.render import answer_html, key_sentence_html, plain_html, sources_html
from app_pages.shared import escape, get_generator, open_store
from rag.answering import Answer

opened = open_store()
if opened is None:
    st.stop()
services, store = opened
settings = services.settings

if "messages" not in st.session_state:
    st.session_state.messages = []  # per browser session: [{"role", "content", "answer"}]

documents = store.list_documents()

with st.sidebar:
    st.header("Search settings")
    top_k = st.slider("Passages to retrieve", 1, 12, settings.top_k)
    threshold = st.slider(
        "Relevance threshold", 0.0, 1.0, float(settings.relevance_threshold), 0.05,
        help="Passages less similar to the question than this are not used. If none passes, the app says so.",
    )  # fmt: skip
    hybrid = st.toggle(
        "Hybrid search (dense + BM25)",
        value=settings.hybrid and store.hybrid_available,
        disabled=not store.hybrid_available,
        help=None if store.hybrid_available else "This Milvus has no BM25 support: dense search only.",
    )
    limit_to = st.multiselect(
        "Limit to documents", [d.source for d in documents], format_func=lambda s: s.rsplit("/", 1)[-1]
    )
    st.header("Answer settings")
    temperature = st.slider("Temperature", 0.0, 1.5, float(settings.temperature), 0.1, help="0 = deterministic")
    max_new_tokens = st.slider("Max answer tokens", 16, 1024, settings.max_new_tokens, 16)
    if st.button("Clear chat", icon=":material/delete_sweep:", width="stretch"):
        st.session_state.messages = []
        st.rerun()
    for notice in store.notices:
        st.caption(notice)

st.title("Chat with your documents")

if not documents:
    st.info("No documents yet. Add some on the Documents page, or run `python -m ingest PATH` in a terminal.")
    st.page_link("app_pages/documents.py", label="Go to Documents", icon=":material/upload_file:")


def show_sources(answer: Answer) -> None:
    if not answer.sources:
        return
    title = "Closest passages (none relevant enough)" if answer.refused else f"Sources ({len(answer.sources)})"
    with st.expander(title, expanded=False):
        st.html(sources_html(answer))


def show_grounding(answer: Answer) -> None:
    """A one-line summary; the unsupported sentences themselves are marked in the answer."""
    if answer.refused or not answer.sentences:
        return
    unsupported = sum(not s.supported for s in answer.sentences)
    if not unsupported:
        st.caption(":material/verified: Every sentence is supported by a cited passage.")
    else:
        st.caption(
            f":material/warning: {unsupported} of {len(answer.sentences)} sentences not supported "
            "by the cited passages: marked in the answer, with the reason."
        )


def show_answer(answer: Answer) -> None:
    """The source's own words first, then the generated answer with its marks, then the passages."""
    if answer.key_sentence is not None and not answer.refused:
        st.html(key_sentence_html(answer.key_sentence, answer.sources))
    st.html(answer_html(answer))
    show_grounding(answer)
    show_sources(answer)


for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        if message["role"] == "assistant":
            show_answer(message["answer"])
        else:
            st.html(plain_html(message["content"], "rag-question"))

question = st.chat_input("Ask a question about your documents", disabled=not documents)
if question:
    history = [m["content"] for m in st.session_state.messages if m["role"] == "user"]
    st.session_state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.html(plain_html(question, "rag-question"))
    with st.chat_message("assistant"):
        try:
            get_generator(services)  # loads the model once per process, with a spinner the first time
            pipeline = services.answer_pipeline()
            with st.spinner("Searching your documents…"):
                stream = pipeline.stream(
                    question,
                    history=history,
                    sources=limit_to or None,
                    k=top_k,
                    threshold=threshold,
                    mode="hybrid" if hybrid else "dense",
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                )
            placeholder = st.empty()
            for _ in stream:  # the text so far, as literal text, while it streams
                placeholder.html(plain_html(stream.streamed_text, "rag-answer rag-streaming"))
            answer = stream.answer()
            placeholder.empty()
            show_answer(answer)
            st.session_state.messages.append({"role": "assistant", "content": answer.text, "answer": answer})
        except Exception as exc:  # shown as a message with its reason, never as a traceback
            st.error(f"Could not answer: {escape(str(exc))}", icon=":material/error:")
