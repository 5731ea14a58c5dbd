"""Step 2 of ingest: chunks fill the configured size, and none is longer than the embedding model reads."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.chunking import Chunker, ChunkSizeError, chunk_id
from rag.config import Settings
from rag.loading import load_document
from rag.pipeline import Ingestor
from rag.records import LoadedDocument, Page

WORDS = ["retrieval", "vector", "passage", "encoder", "question", "answer", "index", "cluster", "graph", "model"]


def prose(sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    sentences_ = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) for _ in range(sentences))
    return " ".join(sentence.capitalize() + "." for sentence in sentences_)


TEXTS = {
    "prose with paragraphs": "\n\n".join(prose(12, seed) for seed in range(6)),
    "one endless sentence": " ".join(WORDS[i % len(WORDS)] for i in range(3000)),
    "no separators at all": "x" * 6000,
    "unbroken digits": "".join(str(i % 10) for i in range(6000)),
    "a long URL": "https://example.org/" + "a1b2c3/" * 600,
    "Korean with spaces": "한국어 문서는 표와 함께 텍스트를 담고 있습니다. " * 150,
    "Korean without spaces": "가나다라마바사아자차카타파하" * 300,
    "Chinese": "检索增强生成把文档切成小块再编码。" * 200,
    "a table, one short row per line": "\n".join(
        f"{2000 + row % 25} | region {row % 7} | {row * 13 % 97}.{row % 10} | {'yes' if row % 3 else 'no'}"
        for row in range(300)
    ),
    "table rows": "\n".join("|".join(f"r{row}c{col}=0.{row * col:04d}" for col in range(12)) for row in range(200)),
}


@pytest.fixture()
def chunker(embedder) -> Chunker:
    return Chunker(embedder.count_tokens, chunk_size=200, chunk_overlap=30, max_tokens=embedder.max_tokens)


def test_the_window_is_256_word_pieces(embedder) -> None:
    assert embedder.max_tokens == 256
    assert embedder.count_tokens("") == 2  # [CLS] and [SEP] are counted


@pytest.mark.parametrize("name", list(TEXTS))
def test_no_chunk_exceeds_the_model_window(embedder, chunker: Chunker, name: str) -> None:
    text = TEXTS[name]

    chunks = chunker.split_text(text)

    assert chunks
    sizes = [embedder.count_tokens(chunk) for chunk in chunks]
    assert max(sizes) <= chunker.chunk_size <= embedder.max_tokens
    assert all(chunk.strip() == chunk and chunk for chunk in chunks)


FILLED = ["prose with paragraphs", "a table, one short row per line", "one endless sentence"]


@pytest.mark.parametrize(("size", "overlap"), [(200, 30), (256, 0), (100, 10)])
@pytest.mark.parametrize("name", FILLED)
def test_chunks_fill_the_configured_size(embedder, name: str, size: int, overlap: int) -> None:
    """[CLS]/[SEP] come once per chunk: counting them per piece made chunks up to four times too short."""
    chunker = Chunker(embedder.count_tokens, chunk_size=size, chunk_overlap=overlap, max_tokens=embedder.max_tokens)

    chunks = chunker.split_text(TEXTS[name])

    sizes = [embedder.count_tokens(chunk) for chunk in chunks]
    assert len(chunks) > 3
    assert all(0.9 * size <= tokens <= size for tokens in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= size


def shared_edge(before: str, after: str) -> str:
    """The longest end of ``before`` that ``after`` starts with."""
    return next((after[:k] for k in range(min(len(before), len(after)), 0, -1) if before.endswith(after[:k])), "")


@pytest.mark.parametrize("name", FILLED)
def test_overlap_is_as_configured(embedder, chunker: Chunker, name: str) -> None:
    chunks = chunker.split_text(TEXTS[name] if name != "one endless sentence" else prose(60, 7).replace(".", ""))

    overlaps = [embedder.count_tokens(shared_edge(a, b)) - 2 for a, b in itertools.pairwise(chunks)]
    assert len(overlaps) > 3
    assert all(30 - 200 // 10 <= tokens <= 30 for tokens in overlaps), overlaps


def test_chunks_end_at_the_best_boundary_near_their_end(chunker: Chunker) -> None:
    chunks = chunker.split_text(TEXTS["a table, one short row per line"])

    assert len(chunks) > 3
    assert all(chunk.endswith(("yes", "no")) for chunk in chunks)  # a chunk ends after a whole row


def test_signature_names_the_chunking(embedder, chunker: Chunker) -> None:
    other = Chunker(embedder.count_tokens, chunk_size=128, chunk_overlap=30, max_tokens=embedder.max_tokens)

    assert chunker.signature == "tokens-v2:200/30"
    assert other.signature == "tokens-v2:128/30"


@pytest.mark.parametrize("name", ["no separators at all", "Korean without spaces", "prose with paragraphs"])
def test_a_chunk_as_large_as_the_window_still_fits(embedder, name: str) -> None:
    chunker = Chunker(embedder.count_tokens, chunk_size=256, chunk_overlap=0, max_tokens=embedder.max_tokens)

    chunks = chunker.split_text(TEXTS[name])

    assert max(embedder.count_tokens(chunk) for chunk in chunks) <= embedder.max_tokens
    # Without overlap nothing is lost or repeated: only whitespace between chunks goes.
    assert "".join(chunks).replace(" ", "").replace("\n", "") == TEXTS[name].replace(" ", "").replace("\n", "")


def test_overlap_repeats_the_end_of_the_previous_chunk(chunker: Chunker) -> None:
    chunks = chunker.split_text(TEXTS["one endless sentence"])

    assert len(chunks) > 3
    for before, after in itertools.pairwise(chunks):
        assert after.split()[0] in before.split()[-12:]


def test_korean_pdf_chunks_fit(embedder, chunker: Chunker, pdfs: Path) -> None:
    document = load_document(pdfs / "korean-text-with-tables.pdf")

    chunks = chunker.split_document(document)

    assert chunks
    assert max(embedder.count_tokens(chunk.text) for chunk in chunks) <= embedder.max_tokens


def test_chunks_carry_their_page_and_a_deterministic_id(chunker: Chunker) -> None:
    document = LoadedDocument(
        source="docs/paper.pdf",
        title="paper.pdf",
        content_hash="ab" * 32,
        size_bytes=1234,
        pages=[Page(prose(40, 1), 1), Page(prose(3, 2), 3)],
        page_total=3,
    )

    chunks = chunker.split_document(document)

    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert {chunk.count for chunk in chunks} == {len(chunks)}
    assert chunks[0].page == 1 and chunks[-1].page == 3
    assert all(chunk.page in (1, 3) for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == len(chunks)
    assert chunks[0].id == chunk_id("docs/paper.pdf", "ab" * 32, 0)
    assert chunk_id("docs/paper.pdf", "cd" * 32, 0) != chunks[0].id  # a new version gets new ids
    assert all(
        (chunk.source, chunk.title, chunk.doc_pages, chunk.doc_bytes) == ("docs/paper.pdf", "paper.pdf", 3, 1234)
        for chunk in chunks
    )


@pytest.mark.parametrize(("size", "overlap"), [(100, 100), (100, 150)])
def test_overlap_not_smaller_than_chunk_fails_clearly(embedder, size: int, overlap: int) -> None:
    expected = rf"chunk_overlap \({overlap}\) must be smaller than chunk_size \({size}\)"

    with pytest.raises(ValidationError, match=expected):
        Settings(chunk_size=size, chunk_overlap=overlap)
    with pytest.raises(ChunkSizeError, match=expected):
        Chunker(embedder.count_tokens, chunk_size=size, chunk_overlap=overlap, max_tokens=embedder.max_tokens)


def test_chunk_larger_than_the_window_fails_clearly(embedder) -> None:
    with pytest.raises(ChunkSizeError) as caught:
        Chunker(embedder.count_tokens, chunk_size=512, chunk_overlap=30, max_tokens=embedder.max_tokens)

    assert str(caught.value) == (
        "chunk_size 512 is larger than the embedding model's window of 256 tokens; set RAG_CHUNK_SIZE to 256 or less"
    )


def test_ingest_with_a_chunk_larger_than_the_window_fails_before_any_file(
    tmp_path: Path, embedder, store, settings: Settings
) -> None:
    path = tmp_path / "a.txt"
    path.write_text(prose(20))
    too_big = settings.model_copy(update={"chunk_size": 300})

    with pytest.raises(ChunkSizeError, match="window of 256 tokens"):
        Ingestor(too_big, embedder, store).ingest([path])

    assert store.count() == 0
