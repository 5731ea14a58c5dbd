"""``python -m rag``: ask questions from a terminal, run the app, check the store.

python -m rag ask "What is dense passage retrieval?"
python -m rag ask --json "..."      # {"answer", "refused", "sources": [...], "key_sentence": {...}}
python -m rag check "CLAIM"         # supported / unsupported / no evidence, with reason and quotes
python -m rag app                   # the Streamlit app, sharing a local store
python -m rag doctor                # store, schema, model and consistency report
"""

from __future__ import annotations

import argparse
import json
import sys

from rag.config import Settings
from rag.logs import setup_logging
from rag.store import StoreError


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
    overrides = {"milvus_uri": args.uri, "collection": args.collection}
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
    from rag.services import Services
    from rag.store import check_connection

    check_connection(settings)  # an unreachable store fails in a second, before the models load
    pipeline = Services(settings).answer_pipeline()
    stream = pipeline.stream(args.question, sources=args.source)
    if args.json:
        print(json.dumps(stream.answer().to_dict(), indent=2, ensure_ascii=False))
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
    unsupported = [s for s in answer.sentences if not s.supported]
    if unsupported:
        print(f"\nNot supported by the sources ({len(unsupported)}):")
        for sentence in unsupported:
            print(f"  ? {sentence.text}\n      {sentence.reason or 'not supported'}")
    print("\nClosest sources (none was relevant enough):" if answer.refused else "\nSources:")
    for s in answer.sources:
        mark = "*" if s.cited else " "
        print(f" {mark}[{s.n}] {s.label()}  (relevance {s.score:.2f})  {s.source}")
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
