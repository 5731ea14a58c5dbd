"""Typed records that carry provenance from file to answer.

A ``Page`` comes out of loading, a ``Chunk`` out of chunking and goes into the store, a
``Hit`` comes back from retrieval. Each keeps the source file and page so that every
answer can cite where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def page_ranges(numbers: Sequence[int], noun: str = "page") -> str:
    """'pages 1-3, 5' or 'page 2': page numbers in words, runs joined."""
    runs: list[list[int]] = []
    for number in sorted(set(numbers)):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    parts = [f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs]
    return f"{noun if len(numbers) == 1 else noun + 's'} {', '.join(parts)}"


@dataclass(frozen=True)
class Page:
    """The normalised text of one page (PDF) or of a whole text file (``number`` is None)."""

    text: str
    number: int | None


@dataclass(frozen=True)
class LoadedDocument:
    """A file read from disk: its pages and the identity used by the store."""

    source: str  # stable key: the path as the user gave it, relative where possible
    title: str  # file name shown to people
    content_hash: str  # sha256 of the file's bytes: the version's identity
    size_bytes: int
    pages: list[Page]  # pages that hold text
    page_total: int  # all pages of the file, blank ones included
    ocr_pages: tuple[int, ...] = ()  # pages whose text was read by OCR
    unread_pages: tuple[int, ...] = ()  # pages with ink but no text, left unread with OCR off


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for the embedding model, with its provenance."""

    id: str
    text: str
    source: str
    title: str
    page: int | None
    index: int  # position of the chunk within its document
    count: int  # chunks in the document; lets the store tell a complete version from a torn one
    content_hash: str
    doc_pages: int
    doc_bytes: int


@dataclass
class Hit:
    """A retrieved passage and how relevant it is (cosine similarity to the question)."""

    text: str
    source: str
    title: str
    page: int | None
    score: float
    chunk_index: int = 0  # first chunk of the passage
    ids: list[str] = field(default_factory=list)
    chunk_indexes: list[int] = field(default_factory=list)  # all chunks merged into this passage


@dataclass(frozen=True)
class StoredDocument:
    """One document as the store sees it (for listing and deleting)."""

    source: str
    title: str
    content_hash: str
    pages: int
    chunks: int
    size_bytes: int
    added_at: float
    chunking: str = ""  # the chunker's signature the version was made with ("" where not recorded)


class Outcome(StrEnum):
    ADDED = "added"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass
class FileResult:
    """What ingest did with one file."""

    path: Path
    source: str
    outcome: Outcome
    chunks: int = 0
    pages: int = 0
    error: str | None = None
    ocr_pages: int = 0
    unread_pages: tuple[int, ...] = ()

    def size_text(self) -> str:
        """'1 page, 3 chunks' or '5 pages (5 OCR), 9 chunks': for the per-file lines of the command
        and the upload page; pages left without text (OCR off) are named."""
        pages = plural(self.pages, "page")
        if self.ocr_pages:
            pages += f" ({self.ocr_pages} OCR)"
        if self.unread_pages:
            pages += f" (no text read on {page_ranges(self.unread_pages)}: OCR is off)"
        return f"{pages}, {plural(self.chunks, 'chunk')}"

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "source": self.source,
            "outcome": self.outcome.value,
            "chunks": self.chunks,
            "pages": self.pages,
            "error": self.error,
            "ocr_pages": self.ocr_pages,
            "unread_pages": list(self.unread_pages),
        }


@dataclass
class IngestReport:
    """Per-file outcomes of one ingest run."""

    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for f in self.files if f.outcome is outcome)

    @property
    def failed(self) -> bool:
        return any(f.outcome is Outcome.FAILED for f in self.files)

    @property
    def chunks_written(self) -> int:
        return sum(f.chunks for f in self.files if f.outcome in (Outcome.ADDED, Outcome.REPLACED))

    def summary(self) -> str:
        parts = [f"{self.count(o)} {o.value}" for o in Outcome]
        return (
            f"{len(self.files)} files: " + ", ".join(parts) + f" ({self.chunks_written} chunks, {self.seconds:.1f} s)"
        )

    def to_dict(self) -> dict:
        return {
            "files": [f.to_dict() for f in self.files],
            "summary": {o.value: self.count(o) for o in Outcome},
            "chunks_written": self.chunks_written,
            "seconds": round(self.seconds, 3),
        }
