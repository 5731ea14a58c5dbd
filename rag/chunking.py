"""Step 2 of ingest: split pages into chunks the embedding model reads whole.

Lengths are measured in the embedding model's own word pieces. LangChain's recursive
splitter prefers paragraph, line and sentence boundaries; a piece that still does not fit
(a table row with no spaces, say) is cut on token boundaries, so no chunk is ever
truncated silently by the embedder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.records import Chunk, LoadedDocument

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


class ChunkSizeError(ValueError):
    """The configured chunk size does not fit the embedding model's window, or the overlap fills it."""


def chunk_id(source: str, content_hash: str, index: int) -> str:
    """Deterministic id: re-ingesting the same version upserts instead of duplicating."""
    return hashlib.sha256(f"{source}\0{content_hash}\0{index}".encode()).hexdigest()[:40]


class Chunker:
    """Token-measured splitter bound to one tokenizer.

    ``count_tokens`` counts special tokens too, so ``chunk_size`` is what the model sees.
    The splitter measures each piece several times while merging, so counts are remembered.
    """

    def __init__(
        self,
        count_tokens: Callable[[str], int],
        *,
        chunk_size: int,
        chunk_overlap: int,
        max_tokens: int,
    ) -> None:
        if chunk_size > max_tokens:
            raise ChunkSizeError(
                f"chunk_size {chunk_size} is larger than the embedding model's window of {max_tokens} "
                f"tokens; set RAG_CHUNK_SIZE to {max_tokens} or less"
            )
        if chunk_overlap >= chunk_size:
            raise ChunkSizeError(
                f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size}); "
                "lower RAG_CHUNK_OVERLAP"
            )
        self.count_tokens = count_tokens
        self.chunk_size = chunk_size
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=lru_cache(maxsize=16_384)(count_tokens),
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )

    def split_text(self, text: str) -> list[str]:
        pieces = []
        for piece in self._splitter.split_text(text):
            if self.count_tokens(piece) <= self.chunk_size:
                pieces.append(piece)
            else:
                pieces.extend(self._hard_split(piece))
        return pieces

    def _hard_split(self, text: str) -> list[str]:
        """Halve by characters until every part fits: a last resort for unbroken text."""
        if self.count_tokens(text) <= self.chunk_size or len(text) <= 1:
            return [text]
        middle = len(text) // 2
        return self._hard_split(text[:middle]) + self._hard_split(text[middle:])

    def split_document(self, document: LoadedDocument) -> list[Chunk]:
        """Chunks of one document, page by page, so every chunk has one page to cite."""
        located = [(page.number, text) for page in document.pages for text in self.split_text(page.text)]
        return [
            Chunk(
                id=chunk_id(document.source, document.content_hash, index),
                text=text,
                source=document.source,
                title=document.title,
                page=page,
                index=index,
                count=len(located),
                content_hash=document.content_hash,
                doc_pages=document.page_total,
                doc_bytes=document.size_bytes,
            )
            for index, (page, text) in enumerate(located)
        ]
