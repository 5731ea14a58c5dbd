"""``python -m rag``: ask questions from a terminal, run the app, check the store.

python -m rag ask "What is dense passage retrieval?"
python -m rag ask --json "..."      # {"answer", "refused", "sources": [...], "key_sentence": {...}, "conversation"}
python -m rag ask -c "and in 2020?" # continue the latest conversation (--cid ID: a given one)
python -m rag chats [--json]        # stored conversations; chats show ID [--json]; chats delete ID
python -m rag check "CLAIM"         # supported / unsupported / no evidence, with reason and quotes
python -m rag app                   # the Streamlit app, sharing a local store
python -m rag doctor                # store, schema, model and consistency report
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.logs import setup_logging
from rag.store import StoreError

if TYPE_CHECKING:
    from rag.answering import Answer
    from rag.conversations import ConversationStore, Thread


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="A local, private document chatbot.")
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser("ask", help="answer a question from the stored documents")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    ask.add_argument("-k", "--top-k", type=int, help="passages to retrieve (RAG_TOP_K)")
    ask.add_argument("--threshold", type=float, help="minimum relevance (RAG_RELEVANCE_THRESHOLD)")
    ask.add_argument("--source", action="append", help="limit the search to this document (repeatable)")
    ask.add_argument("--max-new-tokens", type=int, help="answer length limit (RAG_MAX_NEW_TOKENS)")
    follow = ask.add_mutually_exclusive_group()
    follow.add_argument(
        "-c", "--continue", dest="continue_", action="store_true", help="continue the latest conversation"
    )
    follow.add_argument("--cid", help="continue the conversation with this id (python -m rag chats lists them)")

    chats = commands.add_parser("chats", help="list, show or delete stored conversations")
    chats.add_argument("--json", action="store_true", help="print JSON")
    chat_commands = chats.add_subparsers(dest="chats_command")
    show = chat_commands.add_parser("show", help="print one conversation")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    delete = chat_commands.add_parser("delete", help="delete one conversation")
    delete.add_argument("id")
    chats.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")

    check = commands.add_parser("check", help="check a claim against the stored documents, as the chat marks answers")
    check.add_argument("claim")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("-k", "--top-k", type=int, help="passages to retrieve (RAG_TOP_K)")
    check.add_argument("--source", action="append", help="check against this document only (repeatable)")

    app = commands.add_parser("app", help="start the Streamlit app (and a local Milvus server for a local store)")
    app.add_argument("--port", type=int, default=8501)

    commands.add_parser("doctor", help="report on the store: connection, schema, model, counts, problems")

    for sub in (ask, check, app, commands.choices["doctor"]):
        sub.add_argument("--uri", help="Milvus Lite path or server URI (RAG_MILVUS_URI)")
        sub.add_argument("--collection", help="collection name (RAG_COLLECTION)")
        sub.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    overrides = {"milvus_uri": getattr(args, "uri", None), "collection": getattr(args, "collection", None)}
    if args.command == "ask":
        overrides |= {"top_k": args.top_k, "relevance_threshold": args.threshold, "max_new_tokens": args.max_new_tokens}
    if args.command == "check":
        overrides |= {"top_k": args.top_k}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        if args.command == "ask":
            return ask(settings, args)
        if args.command == "check":
            return check(settings, args)
        if args.command == "chats":
            return chats(settings, args)
        if args.command == "app":
            from rag.launcher import run_app

            return run_app(settings, port=args.port)
        from rag.doctor import run_doctor

        return run_doctor(settings)
    except (StoreError, ValueError, RuntimeError) as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 2


def ask(settings: Settings, args: argparse.Namespace) -> int:
    from rag.conversations import ConversationStore, now, open_thread
    from rag.services import Services
    from rag.store import check_connection

    conversations = ConversationStore.for_settings(settings)
    thread = open_thread(conversations, args.cid, latest=args.continue_)  # an unknown id fails before the models load
    asked = now()
    check_connection(settings)  # an unreachable store fails in a second, before the models load
    pipeline = Services(settings).answer_pipeline()
    stream = pipeline.stream(args.question, history=thread.history, sources=args.source)
    if args.json:
        answer = stream.answer()
        thread = _save(conversations, thread, answer, settings, args, asked)
        print(json.dumps(answer.to_dict() | _saved(thread), indent=2, ensure_ascii=False))
        return 0
    key = stream.key_sentence()
    if key is not None:
        page = f", page {key.page}" if key.page is not None else ""
        print(f"Key sentence from the sources:\n  “{key.text}”\n  — {key.source}{page} [{key.n}]\n")
    try:
        for piece in stream:
            print(piece, end="", flush=True)
    finally:
        print()  # an error about a cut answer starts on its own line
    answer = stream.answer()
    if answer.text != stream.streamed_text:
        print(f"\nWith citations checked:\n{answer.text}")
    for warning in answer.warnings:
        print(f"\n! {warning}")
    unsupported = [s for s in answer.sentences if not s.supported]
    if unsupported:
        print(f"\nNot supported by the sources ({len(unsupported)}):")
        for sentence in unsupported:
            print(f"  ? {sentence.text}\n      {sentence.reason or 'not supported'}")
    print("\nClosest sources (none was relevant enough):" if answer.refused else "\nSources:")
    for s in answer.sources:
        mark = "*" if s.cited else " "
        print(f" {mark}[{s.n}] {s.label()}  (relevance {s.score:.2f})  {s.source}")
    thread = _save(conversations, thread, answer, settings, args, asked)
    if thread.problem is None:
        print(f'\nConversation {thread.id} (continue it with: python -m rag ask -c "...")')
    return 0


def _save(
    conversations: ConversationStore,
    thread: Thread,
    answer: Answer,
    settings: Settings,
    args: argparse.Namespace,
    asked: str,
) -> Thread:
    """Store the exchange; a history that cannot be written is a warning on stderr, never a failed answer."""
    from rag.conversations import save_exchange, used_settings

    used = used_settings(settings, sources=args.source)
    thread = save_exchange(conversations, thread, answer, settings=used, collection=settings.collection, asked=asked)
    if thread.problem is not None:
        print(f"warning: {thread.problem}", file=sys.stderr)
    return thread


def _saved(thread: Thread) -> dict[str, object]:
    """The conversation part of ``ask --json``."""
    saved = {"conversation": thread.id, "saved": thread.problem is None}
    return saved | ({"warning": thread.problem} if thread.problem else {})


def chats(settings: Settings, args: argparse.Namespace) -> int:
    """``rag chats``: list, show or delete stored conversations."""
    from rag.conversations import ConversationStore, to_markdown

    conversations = ConversationStore.for_settings(settings)
    if args.chats_command == "delete":
        removed = conversations.delete(args.id)
        print(f"Deleted conversation {args.id} ({removed} exchange{'s' if removed != 1 else ''}).")
        return 0
    if args.chats_command == "show":
        conversation = conversations.get(args.id)
        if args.json:
            print(json.dumps(conversation.to_dict(with_exchanges=True), indent=2, ensure_ascii=False))
        else:
            print(to_markdown(conversation), end="")
        return 0
    listed = conversations.list()
    if args.json:
        print(json.dumps([c.to_dict() for c in listed], indent=2, ensure_ascii=False))
    elif not listed:
        print('No conversations yet: python -m rag ask "..." starts one.')
    else:
        print(f"{'ID':8}  {'TURNS':>5}  {'LAST':16}  {'COLLECTION':12}  TITLE")
        for c in listed:
            print(f"{c.id:8}  {c.turns:>5}  {c.updated[:16].replace('T', ' '):16}  {c.collection:12}  {c.title}")
    return 0


def check(settings: Settings, args: argparse.Namespace) -> int:
    """``rag check``: the verdict on a claim, its reason and the source's own words."""
    from rag.grounding import check_claim
    from rag.services import Services
    from rag.store import check_connection

    check_connection(settings)
    retriever = Services(settings).retriever()
    result = check_claim(args.claim, retriever, settings.grounding_threshold, sources=args.source)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"{result.verdict}: {result.reason}")
    for item in result.evidence:
        page = f", page {item['page']}" if item["page"] is not None else ""
        print(f"\n  “{item['quote']}”\n  — {item['source']}{page}")
    return 0
