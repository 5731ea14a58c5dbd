"""Turn files, folders and globs into a searchable collection, from a terminal.

    python -m ingest docs/ notes/*.md report.pdf
    python -m ingest --list
    python -m ingest --delete report.pdf
    python -m ingest --reset --yes docs/
    python -m ingest --watch docs/ --collection contracts
    python -m ingest --list-collections
    python -m ingest --delete-collection contracts --yes

Exit status: 0 when every file was added, replaced or unchanged; 1 when any failed;
2 for bad usage or an unusable store.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from rag.collections import CollectionError, check_name, delete_collection, find_collection, list_collections
from rag.config import Settings
from rag.logs import setup_logging
from rag.pipeline import Deletion, Progress, build_chunker, delete_document
from rag.records import FileResult, Outcome
from rag.services import Services
from rag.sharding import Shard, parse_shard, shard_paths
from rag.store import DocumentStore, EmbeddingModelMismatchError, StoreError, check_connection

SYMBOLS = {Outcome.ADDED: "+", Outcome.REPLACED: "~", Outcome.UNCHANGED: "=", Outcome.FAILED: "!"}


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Load, chunk, embed and store documents (PDF, Office, web pages, text, images) in Milvus.",
        epilog="Settings not given as flags come from RAG_* environment variables (see README).",
    )
    parser.add_argument("paths", nargs="*", help="files, folders (searched recursively) or glob patterns")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--list", action="store_true", help="list stored documents and exit")
    actions.add_argument("--delete", metavar="SOURCE", action="append", help="delete a stored document (repeatable)")
    actions.add_argument(
        "--list-collections", action="store_true", help="list collections with document and chunk counts and exit"
    )
    actions.add_argument(
        "--delete-collection", metavar="NAME", help="delete a whole collection and its uploaded copies (needs --yes)"
    )
    actions.add_argument(
        "--watch",
        metavar="DIR",
        help="ingest DIR, then keep the collection in sync with it until Ctrl-C "
        "(new and changed files ingested, deleted files removed)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="with --watch: how long a file must stay unchanged before it is read (default 1)",
    )
    parser.add_argument("--reset", action="store_true", help="drop the whole collection first (asks unless --yes)")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    parser.add_argument("--uri", help="Milvus Lite path or server URI (RAG_MILVUS_URI)")
    parser.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        type=_shard_arg,
        help="ingest only share K of N (by a hash of each file's stored name): N workers given the same "
        "PATHs from the same folder ingest every file once between them, into one Milvus server",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.shard and (not args.paths or args.reset):
        parser.error("--shard K/N needs PATHs to ingest and no --reset (reset once, before starting the workers)")
    chosen = (args.list, args.delete, args.reset, args.list_collections, args.delete_collection, args.watch)
    if not (args.paths or any(chosen)):
        parser.error(
            "give PATHs to ingest, or --list, --delete SOURCE or --reset "
            "(or --watch DIR, --list-collections, --delete-collection NAME)"
        )
    if args.watch and (args.paths or args.reset):
        parser.error("--watch DIR takes no other PATHs and no --reset")
    if args.settle <= 0:
        parser.error("--settle must be more than 0 seconds")
    stop = _stop_on_signals() if args.watch else threading.Event()
    setup_logging(verbose=args.verbose)
    overrides = {k: v for k, v in {"milvus_uri": args.uri, "collection": args.collection}.items() if v}
    try:
        if args.collection:
            check_name(args.collection)
        settings = Settings(**overrides)
        check_connection(settings)  # an unreachable store fails in a second, before the model loads
        if args.list_collections:
            return _list_collections(args, settings)
        if args.delete_collection:
            return _delete_collection(args, settings, args.delete_collection)
        if args.watch and not Path(args.watch).is_dir():
            return _fail(args, f"--watch needs a folder: '{args.watch}' is not one")
        services = Services(settings)
        if args.paths:
            build_chunker(settings, services.embedder)  # a chunk size the model cannot read fails before --reset
        store = _open_store(args, settings, services)
    except (StoreError, ValueError, RuntimeError) as exc:
        return _fail(args, str(exc))
    if args.reset and not _confirm_reset(args, store.name, store.count()):
        return _fail(args, "reset cancelled")
    if args.reset:
        store.reset()
        _say(args, f"collection '{store.name}' emptied")
    if args.list:
        return _list(args, store)
    if args.delete:
        return _delete(args, settings, store, args.delete)
    if args.watch:
        return _watch(args, services, Path(args.watch), stop)
    if not args.paths:
        if args.json:
            print(json.dumps({"reset": True}))
        return 0
    return _ingest(args, services)


def _open_store(args: argparse.Namespace, settings: Settings, services: Services) -> DocumentStore:
    """The store; with --reset also one indexed with another embedding model, so that it can be dropped."""
    try:
        return services.store()
    except EmbeddingModelMismatchError:
        if not args.reset:
            raise
        return DocumentStore(settings, services.embedder).open(check_model=False)


def _ingest(args: argparse.Namespace, services: Services) -> int:
    quiet = args.json
    files_bar = tqdm(total=0, unit="file", desc="files", disable=quiet, position=0, leave=True, file=sys.stderr)
    chunks_bar = tqdm(total=0, unit="chunk", desc="chunks", disable=quiet, position=1, leave=False, file=sys.stderr)

    def on_files(total: int) -> None:
        files_bar.total = total
        files_bar.refresh()

    def on_file_start(path: Path) -> None:
        files_bar.set_postfix_str(path.name[-40:])
        chunks_bar.reset(total=0)

    def on_chunks(done: int, total: int) -> None:
        chunks_bar.total = total
        chunks_bar.n = done
        chunks_bar.refresh()

    def on_pages(done: int, total: int) -> None:  # reading, page by page (an OCR'd page takes seconds)
        name = (files_bar.postfix or "").split(" page ")[0]
        files_bar.set_postfix_str(f"{name} page {done}/{total}")

    def on_file_done(result: FileResult) -> None:
        files_bar.update(1)
        if not quiet:
            files_bar.write(_describe(result), file=sys.stderr)

    progress = Progress(
        on_files=on_files,
        on_file_start=on_file_start,
        on_chunks=on_chunks,
        on_file_done=on_file_done,
        on_pages=on_pages,
    )
    paths = shard_paths(args.paths, args.shard) if args.shard else args.paths
    if args.shard:
        print(f"shard {args.shard}: {len(paths)} of the files", file=sys.stderr)
    report = services.ingestor().ingest(paths, progress=progress)
    chunks_bar.close()
    files_bar.close()
    print(json.dumps(report.to_dict(), indent=2) if quiet else report.summary())
    return 1 if report.failed else 0


def _list_collections(args: argparse.Namespace, settings: Settings) -> int:
    collections = list_collections(settings)
    if args.json:
        print(json.dumps([c.to_dict() for c in collections], indent=2))
        return 0
    if not collections:
        print(f"no collections at {settings.resolved_milvus_uri}")
        return 0
    width = max(len("collection"), *(len(c.name) for c in collections))
    print(f"{'collection':<{width}}  {'documents':>9}  {'chunks':>7}  embedding model")
    for c in collections:
        print(f"{c.name:<{width}}  {c.documents:>9}  {c.chunks:>7}  {c.embedding_model} ({c.dimension} dims)")
    return 0


def _delete_collection(args: argparse.Namespace, settings: Settings, name: str) -> int:
    """Drop a collection, with its uploaded copies; refuses without --yes (nothing is deleted)."""
    try:
        name = check_name(name)
        info = find_collection(settings, name)  # missing or not this app's: says so
        if not args.yes:
            return _fail(
                args,
                f"refusing to delete collection '{name}' ({info.documents} documents, {info.chunks} chunks) "
                "without --yes; nothing was deleted",
            )
        deletion = delete_collection(settings, name)
    except CollectionError as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps(vars(deletion), indent=2))
    else:
        print(
            f"deleted collection '{deletion.name}' ({deletion.documents} documents, {deletion.chunks} chunks, "
            f"{deletion.uploads_removed} uploaded copies)"
        )
    return 0


def _watch(args: argparse.Namespace, services: Services, folder: Path, stop: threading.Event) -> int:
    """Catch up with the folder, then follow it until ``stop`` (SIGINT or SIGTERM); exit 0 on a clean stop.

    One line per change on stdout (with --json, one JSON object per line), flushed at once."""
    from rag.watch import FolderWatcher

    def show(text: str, record: dict) -> None:
        print(json.dumps(record) if args.json else text, flush=True)

    def report(change: FileResult | Deletion) -> None:
        if isinstance(change, Deletion):
            show(f"- removed    {change.source} ({change.chunks} chunks)", {"outcome": "removed", **vars(change)})
        else:
            show(_describe(change), change.to_dict())

    store = services.store()
    watcher = FolderWatcher(services.ingestor(), folder, settle_s=args.settle, on_change=report)
    try:
        counts = watcher.catch_up(stop)
        show(f"caught up with {watcher.folder} in '{store.name}': {counts.summary()}", {"caught_up": counts.counts})
        if not stop.is_set():
            show("watching for changes; Ctrl-C stops", {"watching": str(watcher.folder)})
            watcher.run(stop)
    except StoreError as exc:
        return _fail(args, str(exc))
    show("stopped", {"stopped": True})
    return 0


def _stop_on_signals() -> threading.Event:
    """An event that SIGINT (Ctrl-C) and SIGTERM set instead of interrupting: the watch ends between files."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _describe(result: FileResult) -> str:
    symbol = SYMBOLS[result.outcome]
    if result.outcome is Outcome.FAILED:
        return f"{symbol} failed     {result.source}: {result.error}"
    return f"{symbol} {result.outcome.value:<10} {result.source} ({result.size_text()})"


def _list(args: argparse.Namespace, store: DocumentStore) -> int:
    documents = store.list_documents()
    if args.json:
        print(json.dumps([vars(d) for d in documents], indent=2))
        return 0
    if not documents:
        print(f"no documents in '{store.name}' at {store.uri}")
        return 0
    width = max(len(d.source) for d in documents)
    print(f"{'source':<{width}}  {'pages':>5}  {'chunks':>6}  {'size':>9}  added")
    for d in documents:
        added = datetime.fromtimestamp(d.added_at).strftime("%Y-%m-%d %H:%M")
        print(f"{d.source:<{width}}  {d.pages:>5}  {d.chunks:>6}  {d.size_bytes / 1024:>7.0f}kB  {added}")
    print(f"{len(documents)} documents, {sum(d.chunks for d in documents)} chunks")
    return 0


def _delete(args: argparse.Namespace, settings: Settings, store: DocumentStore, names: list[str]) -> int:
    """Delete each named document everywhere: its chunks and its uploaded copy."""
    results, status = [], 0
    for name in names:
        sources = store.find_sources(name)
        if len(sources) != 1:
            reason = "no stored document by that name" if not sources else f"ambiguous: {', '.join(sources)}"
            results.append({"source": name, "deleted_chunks": 0, "upload_removed": False, "error": reason})
            status = 1
            continue
        deletion = delete_document(settings, store, sources[0])
        results.append(
            {
                "source": deletion.source,
                "deleted_chunks": deletion.chunks,
                "upload_removed": deletion.upload_removed,
                "error": None,
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"! {r['source']}: {r['error']}"
                if r["error"]
                else f"- deleted {r['source']} ({r['deleted_chunks']} chunks"
                + (", and its uploaded copy)" if r["upload_removed"] else ")")
            )
    return status


def _confirm_reset(args: argparse.Namespace, name: str, chunks: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("--reset needs --yes when not run interactively", file=sys.stderr)
        return False
    answer = input(f"Delete all {chunks} chunks in collection '{name}'? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout)


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"error": message}))
    print(f"error: {message}", file=sys.stderr)
    return 2
