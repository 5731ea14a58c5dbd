"""``python -m rag doctor``: what the store is, what it holds, and what is wrong with it.

    >>> from rag.doctor import diagnose
    >>> report = diagnose(Settings())
    >>> report.problems
    []

It reports the connection (URI, and whether the app's local Milvus Lite server is used),
the server's version and capabilities, the collection's schema and indexes, the embedding
model recorded against the configured one, document and chunk counts, and consistency
problems: torn documents (not all chunks of a version, or chunks of several versions under
one source, as a killed ingest can leave) and orphan chunks (whose document has no first
chunk). It only reads: it never creates, changes or repairs anything.

With ``RAG_LLM_BASE_URL`` set it also reports the LLM server: its URL, the models it serves,
the one answers will use, its context window and the latency of one models call; a server
that cannot be used is a problem.

Exit status of ``run_doctor``: 0 healthy, 1 problems found, 2 store unreachable or unusable.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rag.config import Settings
from rag.local_server import endpoint_file, running_endpoint
from rag.milvus import MilvusCollection, StoreError
from rag.openai_generator import ServerReport, describe_server

SCAN_BATCH = 1000
INDEX_KEYS = {
    "index_type", "metric_type", "field_name", "index_name", "total_rows", "indexed_rows", "pending_index_rows",
    "state", "params",
}  # fmt: skip


@dataclass
class Version:
    """The chunks stored for one (source, content hash, chunking)."""

    indexes: list[int] = field(default_factory=list)
    counts: set[int] = field(default_factory=set)


@dataclass
class DoctorReport:
    """Everything the doctor found; ``problems`` empty means healthy."""

    uri: str = ""
    location: str = ""
    server_version: str = ""
    server_bm25: bool = False
    collection: str = ""
    exists: bool = False
    fields: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    hybrid: bool = False
    recorded_model: str = ""
    recorded_dimension: int = 0
    configured_model: str = ""
    documents: int = 0
    chunks: int = 0
    torn: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str = ""
    llm: ServerReport | None = None  # with RAG_LLM_BASE_URL: the LLM server

    @property
    def exit_code(self) -> int:
        if self.error:
            return 2
        return 1 if self.problems else 0


def diagnose(settings: Settings) -> DoctorReport:
    """Connect, inspect and scan the configured collection; never raises for store trouble."""
    report = DoctorReport(collection=settings.collection, configured_model=settings.embedding_model_name)
    report.location = _describe_location(settings)
    if settings.llm_base_url:
        report.llm = describe_server(settings)
        if report.llm.error:
            report.problems.append(f"LLM server: {report.llm.error}")
    collection = MilvusCollection(settings, read_batch=SCAN_BATCH)
    try:
        collection.connect()
    except StoreError as exc:
        report.uri = collection.uri
        report.error = str(exc)
        return report
    report.uri = collection.uri
    report.server_version = collection.server_version
    report.server_bm25 = collection.supports_bm25
    try:
        _inspect(collection, report)
    except StoreError as exc:
        report.error = str(exc)
    except Exception as exc:  # a server that fails half-way through the scan
        report.error = f"the store failed while being inspected: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    finally:
        collection.close()
    return report


def _describe_location(settings: Settings) -> str:
    if not settings.is_local_store:
        return "Milvus server"
    db_path = Path(settings.resolved_milvus_uri)
    served = running_endpoint(db_path)
    if served:
        try:
            pid = json.loads(endpoint_file(db_path).read_text()).get("pid")
        except (OSError, ValueError):
            pid = "?"
        return f"Milvus Lite file {db_path}, served by the app's local server at {served} (pid {pid})"
    return f"Milvus Lite file {db_path}, opened in this process (no local server running)"


def _inspect(collection: MilvusCollection, report: DoctorReport) -> None:
    name = collection.name
    if not collection.exists():
        report.problems.append(
            f"there is no collection '{name}' yet: add documents with `python -m ingest PATHS` "
            "(or check RAG_COLLECTION)"
        )
        return
    report.exists = True
    info = collection.describe()
    fields = collection.fields(info)
    report.fields = [_describe_field(f) for f in info.get("fields", [])]
    for function in info.get("functions") or []:
        kind = getattr(function.get("type"), "name", function.get("type"))
        report.fields.append(
            f"function {function.get('name')}: {kind} {function.get('input_field_names')} -> "
            f"{function.get('output_field_names')}"
        )
    report.hybrid = "sparse" in fields
    for index_name in collection.index_names():
        report.indexes.append(_describe_index(collection.describe_index(index_name), index_name))
    if "vector" not in fields or "doc_hash" not in fields:
        report.problems.append(f"collection '{name}' was not made by this app; choose another with RAG_COLLECTION")
        return
    meta = collection.metadata(info)
    report.recorded_model = meta.get("rag.embedding_model", "unknown")
    report.recorded_dimension = int(fields["vector"].get("params", {}).get("dim", 0))
    if report.recorded_model != report.configured_model:
        report.problems.append(
            f"embedding model mismatch: the collection was indexed with '{report.recorded_model}' "
            f"({report.recorded_dimension} dims) but '{report.configured_model}' is configured. Set "
            f"RAG_EMBEDDING_MODEL back, or re-index with `python -m ingest --reset --yes PATHS`."
        )
    collection.load()
    report.chunks = collection.count()
    _scan(collection, report, chunking="chunking" in fields)


def _describe_field(f: dict[str, Any]) -> str:
    kind = getattr(f.get("type"), "name", str(f.get("type")))
    params = ", ".join(f"{k}={v}" for k, v in (f.get("params") or {}).items())
    flags = [flag for flag, on in (("primary key", f.get("is_primary")), ("auto id", f.get("auto_id"))) if on]
    if f.get("is_function_output"):
        flags.append("function output")
    text = f"{f['name']}: {kind}" + (f"({params})" if params else "")
    return text + (f" [{', '.join(flags)}]" if flags else "")


def _describe_index(index: dict[str, Any], name: str) -> str:
    params = {k: v for k, v in index.items() if k not in INDEX_KEYS}
    params |= index.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "params not reported by this server"
    rows = f"{index.get('indexed_rows', '?')}/{index.get('total_rows', '?')} rows indexed"
    return (
        f"{index.get('field_name', name)}: {index.get('index_type')} {index.get('metric_type')} ({shown}); "
        f"{rows}, state {index.get('state', '?')}"
    )


def _scan(collection: MilvusCollection, report: DoctorReport, *, chunking: bool) -> None:
    """Group every chunk by document and version; find torn documents and orphan chunks.

    A version is the content hash, with the chunking it was made with where the collection records it."""
    versions: dict[str, dict[str, Version]] = defaultdict(lambda: defaultdict(Version))
    fields = ["source", "doc_hash", "chunk_index", "chunk_count", *(["chunking"] if chunking else [])]
    for rows in collection.iterate(fields):
        for row in rows:
            key = row["doc_hash"][:12] + (f" {row['chunking']}" if row.get("chunking") else "")
            version = versions[row["source"]][key]
            version.indexes.append(int(row["chunk_index"]))
            version.counts.add(int(row["chunk_count"]))
    advice = "re-ingest the file (`python -m ingest FILE`) or delete it (`python -m ingest --delete SOURCE`)"
    for source in sorted(versions):
        by_hash = versions[source]
        heads = {h: v for h, v in by_hash.items() if 0 in v.indexes}
        report.documents += len(heads)
        if len(by_hash) > 1:
            hashes = ", ".join(f"{h} ({len(v.indexes)} chunks)" for h, v in sorted(by_hash.items()))
            report.torn.append(source)
            report.problems.append(f"torn document {source}: chunks of {len(by_hash)} versions ({hashes}); {advice}")
        for digest, version in sorted(by_hash.items()):
            if digest not in heads:
                report.orphans.append(source)
                report.problems.append(
                    f"{len(version.indexes)} orphan chunks of {source} (version {digest}): its first chunk "
                    f"(chunk_index 0) is missing; {advice}"
                )
                continue
            expected = max(version.counts)
            distinct = len(set(version.indexes))
            if len(version.counts) > 1 or distinct != expected or len(version.indexes) != expected:
                if source not in report.torn:
                    report.torn.append(source)
                report.problems.append(
                    f"torn document {source}: {distinct} of {expected} chunks stored (version {digest}); {advice}"
                )


def format_report(report: DoctorReport) -> str:
    lines = ["Store"]
    lines.append(f"  location:    {report.location}")
    lines.append(f"  URI:         {report.uri}")
    if report.error:
        lines += _llm_lines(report.llm)
        lines += ["", f"UNREACHABLE: {report.error}"]
        return "\n".join(lines)
    bm25 = "yes" if report.server_bm25 else "no (needs Milvus 2.5+): dense search only"
    lines.append(f"  server:      Milvus {report.server_version}; built-in BM25: {bm25}")
    lines.append(f"Collection '{report.collection}'")
    if report.exists:
        lines.append("  fields:")
        lines += [f"    {f}" for f in report.fields]
        lines.append("  indexes:")
        lines += [f"    {i}" for i in report.indexes] or ["    (none)"]
        lines.append(f"  search:      {'hybrid (dense + BM25)' if report.hybrid else 'dense only'}")
        same = "matches" if report.recorded_model == report.configured_model else "MISMATCH"
        lines.append(
            f"  embedding:   recorded '{report.recorded_model}' ({report.recorded_dimension} dims), "
            f"configured '{report.configured_model}': {same}"
        )
        lines.append(f"  contents:    {report.documents} documents, {report.chunks} chunks")
    else:
        lines.append("  (does not exist)")
    lines += _llm_lines(report.llm)
    if report.problems:
        lines.append(f"Problems ({len(report.problems)}):")
        lines += [f"  - {p}" for p in report.problems]
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def _llm_lines(llm: ServerReport | None) -> list[str]:
    if llm is None:
        return []
    lines = ["LLM server", f"  URL:         {llm.url}"]
    if llm.latency_s is not None:
        lines.append(f"  latency:     {llm.latency_s * 1000:.0f} ms (one models call)")
    if llm.models:
        lines.append(f"  models:      {', '.join(llm.models)}")
    if llm.error:
        lines.append(f"  UNUSABLE:    {llm.error}")
    else:
        lines.append(f"  answers by:  {llm.model}, context window {llm.context_window} tokens")
    return lines


def run_doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Print the report; return 0 when healthy, 1 when there are problems, 2 when unreachable."""
    report = diagnose(settings)
    print(format_report(report), file=out or sys.stdout)
    return report.exit_code
