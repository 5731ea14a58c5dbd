"""Step 4 of ingest: the Milvus Lite collection (real store, real embedding model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from store_contract import make_document, rows_of

from rag.config import Settings, bundled_embedding_model
from rag.embedding import Embedder
from rag.milvus import MilvusCollection, dense_index_params
from rag.store import DocumentStore, EmbeddingModelMismatchError, StoreError

TOPICS = {
    "whales.txt": "Blue whales are the largest animals ever known; they feed on krill in cold oceans.",
    "rust.txt": "The Rust compiler's borrow checker rejects programs that alias mutable references.",
    "bread.txt": "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the dough.",
    "volcano.txt": "Basaltic lava from shield volcanoes flows far before it cools into black rock.",
}


@pytest.fixture(scope="module")
def topic_vectors(embedder: Embedder) -> np.ndarray:
    return embedder.encode(list(TOPICS.values()))


def fill(store: DocumentStore, vectors: np.ndarray) -> None:
    """One single-chunk document per topic, written in one call."""
    chunks = [chunk for source, text in TOPICS.items() for chunk in make_document(source, [text], page=1)]
    store.upsert(chunks, vectors)


INDEXES = list(itertools.product(["FLAT", "IVF_FLAT", "HNSW"], ["COSINE", "L2", "IP"]))


@pytest.mark.parametrize(("index_type", "metric"), INDEXES, ids=[f"{i}-{m}" for i, m in INDEXES])
def test_every_index_and_metric_ranks_the_right_document_first(
    settings: Settings, embedder: Embedder, topic_vectors: np.ndarray, index_type: str, metric: str
) -> None:
    configured = settings.model_copy(update={"index_type": index_type, "metric": metric})
    store = DocumentStore(configured, embedder).open()
    try:
        fill(store, topic_vectors)
        description = store.index_description
        question = "Which animal eats krill?"
        query = embedder.encode([question])[0]

        hits = store.search(question, query, k=4)

        assert (description["index_type"], description["metric_type"]) == (index_type, metric)
        assert hits[0].source == "whales.txt"
        assert len(hits) == 4
        assert all(-1.0 <= hit.score <= 1.0 for hit in hits)
        assert hits[0].score == max(hit.score for hit in hits) > 0.3
        assert hits[0].score == pytest.approx(float(np.dot(query, topic_vectors[0])), abs=1e-4)  # cosine
    finally:
        store.close()


def test_ivf_flat_with_l2_and_128_lists(settings: Settings, embedder: Embedder, topic_vectors: np.ndarray) -> None:
    configured = settings.model_copy(update={"index_type": "IVF_FLAT", "metric": "L2", "index_nlist": 128})
    store = DocumentStore(configured, embedder).open()
    try:
        assert dense_index_params(store.settings) == {
            "index_type": "IVF_FLAT",
            "metric_type": "L2",
            "params": {"nlist": 128},
        }
        fill(store, topic_vectors)
        question = "How is a sourdough loaf leavened?"

        hits = store.search(question, embedder.embed_query(question), k=2)

        assert [hit.source for hit in hits][:1] == ["bread.txt"]
        assert all(-1.0 <= hit.score <= 1.0 for hit in hits)
    finally:
        store.close()


def test_new_version_replaces_the_old_one_without_stale_or_duplicate_chunks(
    store: DocumentStore, embedder: Embedder
) -> None:
    old = make_document("doc.txt", [f"old paragraph {i} about whales" for i in range(5)], content_hash="1" * 64, page=1)
    new = make_document(
        "doc.txt", [f"new paragraph {i} about volcanoes" for i in range(3)], content_hash="2" * 64, page=1
    )
    store.write(old, embedder.encode([c.text for c in old]))
    store.write(old, embedder.encode([c.text for c in old]))  # the same version again: upsert, no duplicates
    assert store.version_state("doc.txt", "1" * 64) == (True, True)
    assert len(rows_of(store, "doc.txt")) == 5

    store.write(new, embedder.encode([c.text for c in new]))

    rows = rows_of(store, "doc.txt")
    assert sorted(r["chunk_index"] for r in rows) == [0, 1, 2]
    assert {r["doc_hash"] for r in rows} == {"2" * 64}
    assert store.version_state("doc.txt", "2" * 64) == (True, True)
    assert store.version_state("doc.txt", "1" * 64) == (True, False)
    assert store.version_state("other.txt", "1" * 64) == (False, False)


def test_a_torn_version_is_not_complete(store: DocumentStore, embedder: Embedder) -> None:
    chunks = make_document("torn.txt", ["one", "two", "three"], content_hash="a" * 64, page=1)
    store.upsert(chunks[:2], embedder.encode(["one", "two"]))  # as if killed before the last part

    assert store.version_state("torn.txt", "a" * 64) == (True, False)
    store.upsert(chunks[2:], embedder.encode(["three"]))
    store.remove_stale(chunks[0])
    assert store.version_state("torn.txt", "a" * 64) == (True, True)


def test_list_find_and_delete(store: DocumentStore, embedder: Embedder, topic_vectors: np.ndarray) -> None:
    fill(store, topic_vectors)
    texts = ["first part", "second part", "third part"]
    store.write(make_document("a/notes.txt", texts, page=1), embedder.encode(texts))
    store.write(make_document("b/notes.txt", texts[:1], page=1), embedder.encode(texts[:1]))

    listed = {d.source: d for d in store.list_documents()}

    assert set(listed) == {*TOPICS, "a/notes.txt", "b/notes.txt"}
    assert (listed["a/notes.txt"].chunks, listed["a/notes.txt"].pages, listed["a/notes.txt"].title) == (
        3,
        1,
        "notes.txt",
    )
    assert store.find_sources("whales.txt") == ["whales.txt"]
    assert store.find_sources("notes.txt") == ["a/notes.txt", "b/notes.txt"]  # ambiguous: both returned
    assert store.find_sources("a/notes.txt") == ["a/notes.txt"]
    assert store.find_sources("missing.txt") == []

    assert store.delete("a/notes.txt") == 3
    assert store.delete("a/notes.txt") == 0
    assert store.count() == len(TOPICS) + 1
    assert "a/notes.txt" not in {d.source for d in store.list_documents()}


def test_search_can_be_limited_to_sources(store: DocumentStore, embedder: Embedder, topic_vectors: np.ndarray) -> None:
    fill(store, topic_vectors)
    question = "Which animal eats krill?"

    hits = store.search(question, embedder.embed_query(question), k=4, sources=["rust.txt", "bread.txt"])

    assert {hit.source for hit in hits} == {"rust.txt", "bread.txt"}


def test_reset_empties_the_collection(store: DocumentStore, topic_vectors: np.ndarray) -> None:
    fill(store, topic_vectors)

    store.reset()

    assert store.count() == 0
    assert store.list_documents() == []


def other_model(settings: Settings, *, name: str | None = None, dimension: int | None = None) -> Embedder:
    """The same weights under another name or size: enough for the store's check, which compares both."""
    embedder = Embedder(settings).load()
    if name:
        embedder.model_name = name
    if dimension:
        embedder.dimension = dimension  # overrides the cached property on this instance only
    return embedder


@pytest.mark.parametrize(
    ("name", "dimension", "configured"),
    [("intfloat/e5-small-v2", None, "'intfloat/e5-small-v2' (384 dims)"), (None, 768, "(768 dims)")],
)
def test_collection_made_with_another_model_is_refused_with_advice(
    settings: Settings, embedder: Embedder, name: str | None, dimension: int | None, configured: str
) -> None:
    DocumentStore(settings, embedder).open().close()
    other = DocumentStore(settings, other_model(settings, name=name, dimension=dimension))

    with pytest.raises(EmbeddingModelMismatchError) as caught:
        other.open()

    message = str(caught.value)
    assert "indexed with embedding model 'sentence-transformers/all-MiniLM-L6-v2' (384 dims)" in message
    assert configured in message
    assert "python -m ingest --reset --yes PATHS" in message
    assert "RAG_EMBEDDING_MODEL" in message
    with pytest.raises(EmbeddingModelMismatchError):
        other.open()  # a second try checks again instead of handing out the unusable store


def test_the_bundled_folder_named_by_path_is_the_same_model(settings: Settings, embedder: Embedder) -> None:
    DocumentStore(settings, embedder).open().close()
    by_path = settings.model_copy(update={"embedding_model": bundled_embedding_model()})
    assert by_path.embedding_model_name == settings.embedding_model_name
    reopened = DocumentStore(by_path, Embedder(by_path)).open()  # no mismatch error
    reopened.close()


def test_reset_reindexes_a_collection_made_with_another_model(
    settings: Settings, embedder: Embedder, topic_vectors: np.ndarray
) -> None:
    first = DocumentStore(settings, embedder).open()
    fill(first, topic_vectors)
    first.close()
    renamed = other_model(settings, name="intfloat/e5-small-v2")

    store = DocumentStore(settings, renamed).open(check_model=False)
    store.reset()
    store.close()

    reopened = DocumentStore(settings, renamed).open()
    assert reopened.count() == 0
    reopened.close()
    with pytest.raises(EmbeddingModelMismatchError):
        DocumentStore(settings, embedder).open()


def test_a_foreign_collection_is_never_used_or_dropped(settings: Settings, embedder: Embedder) -> None:
    foreign = settings.model_copy(update={"collection": "foreign"})
    DocumentStore(settings, embedder).open().close()
    other_app = MilvusCollection(foreign).connect()
    other_app.create_quick(dimension=8)  # a collection of someone else's shape
    other_app.close()

    for check_model in (True, False):
        with pytest.raises(StoreError, match="was not made by this app; choose another with RAG_COLLECTION"):
            DocumentStore(foreign, embedder).open(check_model=check_model)


def test_listing_and_version_checks_read_every_page(settings: Settings, embedder: Embedder) -> None:
    """Reads go through query iterators: with a page of 4 rows, 30 documents and a 13-chunk one are all seen."""
    store = DocumentStore(settings, embedder, read_batch=4).open()
    try:
        texts = [f"note {i} about krill and whales" for i in range(30)]
        vectors = embedder.encode(texts)
        store.upsert([c for i, t in enumerate(texts) for c in make_document(f"n{i:02}.txt", [t], page=1)], vectors)
        long = make_document("long.txt", [f"part {i} of the long document" for i in range(13)], page=1)
        store.write(long, embedder.encode([c.text for c in long]))

        listed = store.list_documents()

        assert sorted(d.source for d in listed) == sorted([f"n{i:02}.txt" for i in range(30)] + ["long.txt"])
        assert store.count() == 43
        assert store.version_state("long.txt", long[0].content_hash) == (True, True)
        assert len(store.rows_of("long.txt", ["chunk_index"])) == 13
        store.milvus.delete(source="long.txt", chunk_indexes=[12])  # fault injection: lose the last chunk
        assert store.version_state("long.txt", long[0].content_hash) == (True, False)
    finally:
        store.close()
