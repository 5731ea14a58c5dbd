"""Step 2 of ingest: split pages into chunks that fill the embedding model's window.

Lengths are measured in the embedding model's own word pieces. Each chunk is as long as
``chunk_size`` allows (at least 90 % of it, except a text's last chunk) and ends at the best
boundary in its last tenth: a paragraph, then a line, a sentence, a clause, a word, and only
for unbroken text a character. Two steps do it:

1. LangChain's recursive splitter cuts the text into small pieces (a twentieth of a chunk)
   along those separators, so no piece crosses a better boundary than it needs to.
2. The pieces are packed into chunks up to the budget; the chunk then ends after the piece in
   its last tenth with the best boundary, and the next chunk repeats up to ``chunk_overlap``
   tokens of pieces before it.

Counts leave out [CLS]/[SEP] while packing (they come once per chunk, not once per piece) and
the budget is ``chunk_size`` minus them, so ``chunk_size`` is what the model sees. Each chunk
is measured whole at the end, so none is ever truncated silently by the embedder.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from functools import lru_cache

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.records import Chunk, LoadedDocument

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
# Bump when a change to this module makes other chunks from the same text and settings.
SPLITTER_VERSION = "tokens-v2"
# A chunk that is not a text's last is at least this share of chunk_size.
MIN_FILL = 0.9


class ChunkSizeError(ValueError):
    """The configured chunk size does not fit the embedding model's window, or the overlap fills it."""


def chunk_id(source: str, content_hash: str, index: int) -> str:
    """Deterministic id: re-ingesting the same version upserts instead of duplicating."""
    return hashlib.sha256(f"{source}\0{content_hash}\0{index}".encode()).hexdigest()[:40]


def boundary_rank(piece: str) -> int:
    """How good a place the end of ``piece`` is to end a chunk: 0 (a paragraph) is best."""
    return next((rank for rank, sep in enumerate(SEPARATORS[:-1]) if piece.endswith(sep)), len(SEPARATORS) - 1)


class Chunker:
    """Token-measured splitter bound to one tokenizer.

    ``count_tokens`` counts special tokens too, so ``chunk_size`` is what the model sees.

    >>> chunker = Chunker(embedder.count_tokens, chunk_size=200, chunk_overlap=30, max_tokens=256)
    >>> chunker.split_text(long_text)  # chunks of 180 to 200 tokens, 30 tokens of overlap
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
        self.chunk_overlap = chunk_overlap
        special = count_tokens("")
        # Word pieces never cross whitespace (BERT's tokenizer splits on it first), so a text's
        # length is the sum of its words' lengths: one tokenizer call per distinct word instead
        # of one per piece the splitter measures. Each chunk is still measured whole at the end.
        word_length = lru_cache(maxsize=65_536)(lambda word: count_tokens(word) - special)
        self._length = lru_cache(maxsize=16_384)(lambda text: sum(word_length(word) for word in text.split()))
        self._budget = max(1, chunk_size - special)
        self._floor = max(1, math.ceil(MIN_FILL * chunk_size) - special)
        self._pieces = RecursiveCharacterTextSplitter(
            # Half the slack above the floor: packing leaves less than that unused.
            chunk_size=max(1, (self._budget - self._floor) // 2),
            chunk_overlap=0,
            length_function=self._length,
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=False,  # the pieces add up to the text, separators included
        )

    @property
    def signature(self) -> str:
        """Names the chunking (splitter version, size, overlap): other settings make other chunks."""
        return f"{SPLITTER_VERSION}:{self.chunk_size}/{self.chunk_overlap}"

    def split_text(self, text: str) -> list[str]:
        pieces = [piece for piece in self._pieces.split_text(text) if piece]
        sizes = [self._length(piece) for piece in pieces]
        chunks: list[str] = []
        start = 0
        while start < len(pieces):
            end = self._chunk_end(pieces, sizes, start)
            chunk = "".join(pieces[start:end]).strip()
            while self.count_tokens(chunk) > self.chunk_size and end - start > 1:
                end -= 1  # word pieces do not always add up across a cut inside a word
                chunk = "".join(pieces[start:end]).strip()
            if chunk:
                chunks.append(chunk)
            if end >= len(pieces):
                break
            start = self._next_start(sizes, start, end)
        return chunks

    def _chunk_end(self, pieces: list[str], sizes: list[int], start: int) -> int:
        """One past the last piece of the chunk from ``start``: full, cut at the best boundary near the end."""
        end, total = start, 0
        ends: list[tuple[int, int]] = []  # (end, tokens) of every piece boundary at or above the floor
        while end < len(pieces) and (end == start or total + sizes[end] <= self._budget):
            total += sizes[end]
            end += 1
            if total >= self._floor:
                ends.append((end, total))
        if end >= len(pieces) or not ends:
            return end
        best = min(boundary_rank(pieces[index - 1]) for index, _ in ends)
        return max(index for index, _ in ends if boundary_rank(pieces[index - 1]) == best)

    def _next_start(self, sizes: list[int], start: int, end: int) -> int:
        """The first piece of the next chunk: the previous chunk's last pieces, up to ``chunk_overlap`` tokens."""
        begin, overlap = end, 0
        while begin - 1 > start and overlap + sizes[begin - 1] <= self.chunk_overlap:
            begin -= 1
            overlap += sizes[begin]
        return begin

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
