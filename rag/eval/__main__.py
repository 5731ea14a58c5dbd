"""``python -m rag.eval``: retrieval and answer benchmarks on public data sets.

python -m rag.eval beir ../shared/data/scifact --json beir.json
python -m rag.eval beir DIR --limit-queries 50 --k 100 --uri data/beir.db --keep
python -m rag.eval pubmedqa ../shared/data/pubmedqa --limit 50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.config import Settings
from rag.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag.eval", description="Benchmarks on public data sets.")
    commands = parser.add_subparsers(dest="command", required=True)
    beir = commands.add_parser(
        "beir",
        help="nDCG@10, Recall@100 and MRR@10 of dense, BM25 and hybrid search on a BEIR folder",
        description="Ingest a BEIR corpus with the product's chunker, embedder and store, then score "
        "dense, BM25 and hybrid search on its test queries. Settings come from RAG_* variables.",
    )
    beir.add_argument("folder", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")
    beir.add_argument("--limit-queries", type=int, metavar="N", help="score only the first N test queries")
    beir.add_argument("--k", type=int, default=100, help="documents retrieved per query (Recall@k; default 100)")
    beir.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON here")
    beir.add_argument("--uri", help="Milvus Lite path or server URI (default: a temporary Milvus Lite folder)")
    beir.add_argument("--collection", metavar="NAME", help="collection name (default: beir_<dataset>)")
    beir.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    beir.add_argument("--no-cache", action="store_true", help="embed the corpus even if its vectors are cached")
    beir.add_argument(
        "--whole-documents",
        action="store_true",
        help="reference run: no chunking, each title + text embedded whole (truncated) as MTEB does",
    )
    beir.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    commands.add_parser("pubmedqa", help="answer quality on PubMedQA (see python -m rag.eval pubmedqa --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pubmedqa"]:
        from rag.eval.pubmedqa import main as pubmedqa_main

        return pubmedqa_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose)
    from rag.eval.beir import run_beir

    try:
        settings = Settings()
        report = run_beir(
            args.folder,
            settings,
            k=args.k,
            limit_queries=args.limit_queries,
            uri=args.uri,
            collection=args.collection,
            keep=args.keep,
            cache_dir=None if args.no_cache else settings.data_dir / "eval_cache",
            whole_documents=args.whole_documents,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
