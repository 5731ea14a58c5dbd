"""Chat page: ask, watch the answer stream in, check its sources and grounding; keep the conversation.

Conversations are stored (``rag.conversations``) and listed in the sidebar. The open one is this
browser session's own (``st.session_state``) and is in the address (``?c=ID``), so a reload keeps
it and two tabs never mix theirs.
"""

from __future__ import annotations

import dataclasses
import re

import streamlit as st

from app_pages.render import answer_html, key_sentence_html, plain_html, sources_html
from app_pages.shared import adding_notice, escape, get_generator, open_store, pick_collection
from rag.answering import Answer
from rag.conversations import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    ConversationStoreError,
    Thread,
    deleted_sources,
    now,
    save_exchange,
    to_markdown,
    used_settings,
)
from rag.queueing import answer_in_turn

CONVERSATION_KEY = "conversation"  # st.session_state: the open conversation's id, None for a new one
QUERY_KEY = "c"  # st.query_params: the same id, so a reload reopens it
DELETED = " (deleted)"

opened = open_store()
if opened is None:
    st.stop()
services, store = opened
settings = services.settings
chats = ConversationStore.for_settings(settings)


def open_conversation(conversation_id: str | None) -> None:
    """Make ``conversation_id`` this session's open conversation; its messages load on the next run."""
    st.session_state[CONVERSATION_KEY] = conversation_id
    st.session_state.messages = None


def load_messages(conversation_id: str) -> list[dict]:
    """The stored conversation as chat messages; on the collection it was asked in (a rerun picks it)."""
    conversation = chats.get(conversation_id)
    messages: list[dict] = []
    for exchange in conversation.exchanges:
        messages.append({"role": "user", "content": exchange.question})
        messages.append({"role": "assistant", "content": exchange.answer, "answer": exchange.to_answer()})
    if conversation.collection != settings.collection:  # once: the next run has its messages loaded
        st.session_state.messages = messages
        pick_collection(conversation.collection)
        st.rerun()
    return messages


if CONVERSATION_KEY not in st.session_state:  # a new browser session (a new tab, or a reload)
    open_conversation(st.query_params.get(QUERY_KEY))
history_problem: str | None = None
if st.session_state.get("messages") is None:
    conversation_id = st.session_state[CONVERSATION_KEY]
    st.session_state.messages = []  # per browser session: [{"role", "content", "answer"}]
    if conversation_id is not None:
        try:
            st.session_state.messages = load_messages(conversation_id)
        except ConversationNotFound:
            st.warning(
                f"Conversation {escape(conversation_id)} no longer exists (deleted in another tab or from the "
                "terminal): this is a new one.",
                icon=":material/warning:",
            )
            st.session_state[CONVERSATION_KEY] = None
        except ConversationStoreError as exc:
            history_problem = str(exc)
if st.session_state[CONVERSATION_KEY] is not None:
    st.query_params[QUERY_KEY] = st.session_state[CONVERSATION_KEY]  # page switches drop the address's query
else:
    st.query_params.pop(QUERY_KEY, None)

documents = store.list_documents()

with st.sidebar:
    conversations_box = st.container()  # filled at the end of the run, once a new answer is stored
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
    for notice in store.notices:
        st.caption(notice)

st.title("Chat with your documents")
adding_notice()  # uploads still being ingested in the background

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


def mark_deleted(answer: Answer, present: set[str]) -> Answer:
    """The answer with each source no longer in the collection labelled as deleted."""
    if all(s.source in present for s in answer.sources):
        return answer
    sources = [s if s.source in present else dataclasses.replace(s, title=s.title + DELETED) for s in answer.sources]
    return dataclasses.replace(answer, sources=sources)


def show_answer(answer: Answer) -> None:
    """The source's own words first, then the generated answer with its marks, then the passages."""
    if answer.key_sentence is not None and not answer.refused:
        st.html(key_sentence_html(answer.key_sentence, answer.sources))
    st.html(answer_html(answer))
    show_grounding(answer)
    show_sources(answer)


present = {d.source for d in documents}
if history_problem:
    st.warning(f"{escape(history_problem)} Answers still work but are not saved.", icon=":material/history_toggle_off:")
for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        if message["role"] == "assistant":
            show_answer(mark_deleted(message["answer"], present))
        else:
            st.html(plain_html(message["content"], "rag-question"))


def save(answer: Answer, asked: str, history: list[str], **chosen: object) -> None:
    """Store the exchange in the open conversation (a new one for the first answer), or say why not."""
    thread = Thread(st.session_state[CONVERSATION_KEY], history, history_problem)
    used = used_settings(settings, max_new_tokens=max_new_tokens, temperature=temperature, sources=limit_to, **chosen)
    thread = save_exchange(chats, thread, answer, settings=used, collection=settings.collection, asked=asked)
    if thread.problem is not None:
        if not history_problem:  # said once already, above the conversation
            st.warning(escape(thread.problem), icon=":material/history_toggle_off:")
        return
    st.session_state[CONVERSATION_KEY] = thread.id
    st.query_params[QUERY_KEY] = thread.id


question = st.chat_input("Ask a question about your documents", disabled=not documents)
if question:
    history = [m["content"] for m in st.session_state.messages if m["role"] == "user"]
    st.session_state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.html(plain_html(question, "rag-question"))
    asked = now()
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
            # Its turn at the model (other sessions' questions may be ahead), then the text so far, as literal text
            for _ in answer_in_turn(stream, on_wait=lambda position: placeholder.caption(position.message)):
                placeholder.html(plain_html(stream.streamed_text, "rag-answer rag-streaming"))
            answer = stream.answer()
            placeholder.empty()
            show_answer(answer)
            st.session_state.messages.append({"role": "assistant", "content": answer.text, "answer": answer})
            save(answer, asked, history, top_k=top_k, threshold=threshold, mode="hybrid" if hybrid else "dense")
        except Exception as exc:  # shown as a message with its reason, never as a traceback
            st.error(f"Could not answer: {escape(str(exc))}", icon=":material/error:")


def file_name(conversation: Conversation) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", conversation.title).strip("-").lower()[:40] or "conversation"
    return f"{slug}-{conversation.id}.md"


def conversation_controls(conversation: Conversation) -> None:
    """Export, rename and delete (after a confirmation) for the open conversation."""
    gone = deleted_sources(conversation, sorted(present)) if conversation.collection == settings.collection else set()
    st.download_button(
        "Export as Markdown",
        to_markdown(conversation, gone),
        file_name=file_name(conversation),
        mime="text/markdown",
        icon=":material/download:",
        width="stretch",
    )
    rename, delete = st.columns(2)
    with (
        rename.popover("Rename", icon=":material/edit:", width="stretch"),
        st.form(f"rename-{conversation.id}", border=False),
    ):
        title = st.text_input("Title", value=conversation.title, max_chars=200)
        if st.form_submit_button("Save title"):
            try:
                chats.rename(conversation.id, title)
            except (ValueError, ConversationStoreError) as exc:
                st.error(escape(str(exc)), icon=":material/error:")
            else:
                st.rerun()
    with delete.popover("Delete", icon=":material/delete:", width="stretch"):
        st.write(f"Delete **{escape(conversation.title)}** and its {conversation.turns} questions and answers?")
        if st.button("Delete conversation", type="primary", key=f"delete-{conversation.id}"):
            try:
                chats.delete(conversation.id)
            except ConversationStoreError as exc:
                st.error(escape(str(exc)), icon=":material/error:")
            else:
                open_conversation(None)
                st.rerun()


def conversations_sidebar() -> None:
    """Past conversations, newest first; the open one has its controls below it."""
    st.header("Conversations")
    if st.button("New chat", icon=":material/add_comment:", width="stretch", key="new-chat"):
        open_conversation(None)
        st.rerun()
    current = st.session_state[CONVERSATION_KEY]
    try:
        listed = chats.list()
        opened = chats.get(current) if any(c.id == current for c in listed) else None
    except ConversationStoreError as exc:
        st.caption(f":material/warning: {escape(str(exc))}")
        return
    for conversation in listed:
        here = conversation.id == current
        elsewhere = "" if conversation.collection == settings.collection else f" · in {conversation.collection}"
        if st.button(
            conversation.title,
            key=f"open-{conversation.id}",
            type="primary" if here else "secondary",
            width="stretch",
            help=f"{conversation.turns} questions · last {conversation.updated[:16].replace('T', ' ')} UTC{elsewhere}",
        ):
            open_conversation(conversation.id)
            st.rerun()
        if here and opened is not None:
            conversation_controls(opened)


with conversations_box:
    conversations_sidebar()
