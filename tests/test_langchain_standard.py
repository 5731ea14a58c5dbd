"""LangChain's own standard tests (the ``langchain-tests`` package) against our LangChain faces.

``DocumentRetriever`` runs ``RetrieversIntegrationTests`` and ``DocumentStore.as_vectorstore()``
runs ``VectorStoreIntegrationTests``, both on real Milvus Lite and the real bundled embedder.
The tests below them check what the suites cannot see: documents added through LangChain are
found by the product's own search, and chunks of the ingest pipeline read back with their
provenance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from rag.config import Settings
from rag.langchain_vectorstore import DocumentVectorStore
from rag.pipeline import Ingestor
from rag.retrieval import DocumentRetriever, Retriever
from rag.store import DocumentStore

VOLCANO_FACTS = {
    "etna.txt": "Mount Etna in Sicily is one of the most active volcanoes in the world; its lava flows reach villages.",
    "fuji.txt": "Mount Fuji is a dormant volcano in Japan; the volcano last erupted in 1707.",
    "krakatoa.txt": "The Krakatoa volcano erupted in 1883; the eruption of the volcano was heard thousands of km away.",
    "vesuvius.txt": "Vesuvius, the volcano near Naples, buried Pompeii under volcanic ash in the year 79.",
    "kilauea.txt": "Kilauea on Hawaii is a shield volcano whose lava lakes have erupted for decades.",
}
VOLCANO_QUERY = "Which volcano erupted?"


@pytest.fixture(scope="module")
def lite_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Milvus Lite folder for the module; each test gets its own collection in it."""
    return tmp_path_factory.mktemp("langchain") / "data"


def open_store(folder: Path, embedder) -> DocumentStore:
    settings = Settings(data_dir=folder, collection=f"lc_{uuid.uuid4().hex[:12]}")
    return DocumentStore(settings, embedder).open()


@pytest.fixture()
def fresh_store(lite_folder: Path, embedder) -> Iterator[DocumentStore]:
    store = open_store(lite_folder, embedder)
    yield store
    store.close()


@pytest.fixture(scope="module")
def volcano_retriever(lite_folder: Path, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retriever]:
    """Five one-chunk documents, ingested by the product's pipeline, all about erupting volcanoes."""
    store = open_store(lite_folder, embedder)
    folder = tmp_path_factory.mktemp("volcanoes")
    for name, text in VOLCANO_FACTS.items():
        (folder / name).write_text(text)
    report = Ingestor(store.settings, embedder, store).ingest([folder])
    assert not report.failed, report.to_dict()
    yield Retriever(store.settings, embedder, store)
    store.close()


class TestDocumentRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _library(self, volcano_retriever: Retriever) -> None:
        self.library = volcano_retriever

    @property
    def retriever_constructor(self) -> type[DocumentRetriever]:
        return DocumentRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": self.library}

    @property
    def retriever_query_example(self) -> str:
        return VOLCANO_QUERY


@pytest.fixture(scope="module")
def standard_store(lite_folder: Path, embedder) -> Iterator[DocumentStore]:
    """One collection for the vector-store suite, emptied after each test (creating one per test is slow)."""
    store = open_store(lite_folder, embedder)
    yield store
    store.close()


class TestDocumentVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, standard_store: DocumentStore) -> Iterator[DocumentVectorStore]:  # type: ignore[override]
        """An empty collection of the product's schema, seen through ``as_vectorstore()``."""
        vectorstore = standard_store.as_vectorstore()
        yield vectorstore
        vectorstore.delete(expr='id != ""')  # the suite's *_still_empty tests check this


# What the standard suites cannot see -------------------------------------------------------


def test_call_time_arguments_override_the_fields(volcano_retriever: Retriever) -> None:
    retriever = DocumentRetriever(retriever=volcano_retriever, k=4)
    assert len(retriever.invoke(VOLCANO_QUERY)) == 4
    assert len(retriever.invoke(VOLCANO_QUERY, k=2)) == 2
    sources = sorted({d.metadata["source"] for d in retriever.invoke(VOLCANO_QUERY, k=5)})
    assert len(sources) == 5
    narrowed = retriever.invoke(VOLCANO_QUERY, sources=sources[:1])
    assert [d.metadata["source"] for d in narrowed] == sources[:1]


def test_documents_added_through_langchain_are_found_by_the_product(fresh_store: DocumentStore, embedder) -> None:
    vectorstore = fresh_store.as_vectorstore()
    ids = vectorstore.add_documents(
        [
            Document("The turbine blades were inspected for fatigue cracks.", metadata={"source": "/x/turbines.pdf"}),
            Document("Lake Zenda is ninety-four metres deep.", metadata={"source": "lakes.md", "page": 3, "n": [1]}),
        ]
    )
    query = "How deep is Lake Zenda?"
    vector = embedder.embed_query(query)
    for mode in ("dense", "hybrid", "bm25") if fresh_store.hybrid_available else ("dense",):
        hit = fresh_store.search(query, vector, k=1, mode=mode)[0]
        assert (hit.ids, hit.title, hit.page) == ([ids[1]], "lakes.md", 3), mode
    # stems: "inspecting" and "crack" reach "inspected" and "cracks" only through the keyword field
    if fresh_store.hybrid_available:
        hit = fresh_store.search("inspecting crack", embedder.embed_query("x"), k=1, mode="bm25")[0]
        assert hit.ids == [ids[0]] and hit.title == "turbines.pdf" and hit.page is None
    # one whole document per id for the product's listing; the metadata comes back verbatim
    listed = {d.source: d for d in fresh_store.list_documents()}
    assert set(listed) == {f"langchain:{i}" for i in ids}
    assert vectorstore.get_by_ids([ids[1]])[0].metadata == {"source": "lakes.md", "page": 3, "n": [1]}
    assert fresh_store.delete(f"langchain:{ids[0]}") == 1
    assert vectorstore.get_by_ids(ids) == [vectorstore.get_by_ids([ids[1]])[0]]


def test_ingested_chunks_read_back_with_their_provenance(volcano_retriever: Retriever) -> None:
    vectorstore = volcano_retriever.store.as_vectorstore()
    kwargs = {"ranker_type": "rrf"} if volcano_retriever.store.hybrid_available else {}
    (found,) = vectorstore.similarity_search("Pompeii and Naples", k=1, **kwargs)
    assert found.id and found.page_content == VOLCANO_FACTS["vesuvius.txt"]
    assert found.metadata["title"] == "vesuvius.txt"
    assert (found.metadata["page"], found.metadata["chunk_index"], found.metadata["chunk_count"]) == (-1, 0, 1)
    assert vectorstore.get_by_ids([found.id]) == [found]
    assert vectorstore.similarity_search("the", k=2)  # stop words only: dense search still answers


def test_a_collection_without_dynamic_field_keeps_title_and_page(lite_folder: Path, embedder, caplog) -> None:
    """Collections made before the dynamic field: LangChain still adds and finds, metadata maps onto fields."""
    from rag.milvus import CollectionSpec, MilvusCollection

    settings = Settings(data_dir=lite_folder, collection=f"lc_{uuid.uuid4().hex[:12]}")
    meta = {"rag.schema": "3", "rag.embedding_model": embedder.model_name, "rag.dimension": str(embedder.dimension)}
    collection = MilvusCollection(settings).connect()
    try:
        collection.create(CollectionSpec(embedder.dimension, meta, bm25=True, dynamic_field=False))
    finally:
        collection.close()
    store = DocumentStore(settings, embedder).open()
    try:
        vectorstore = store.as_vectorstore()
        assert not vectorstore.keeps_metadata
        (key,) = vectorstore.add_documents(
            [Document("Lake Zenda is deep.", metadata={"source": "a/notes.md", "page": 2})]
        )
        assert "no dynamic field" in caplog.text
        (found,) = vectorstore.get_by_ids([key])
        assert (found.metadata["title"], found.metadata["page"], found.metadata["source"]) == (
            "notes.md",
            2,
            f"langchain:{key}",
        )
        assert vectorstore.similarity_search("How deep is Lake Zenda?", k=1) == [found]
    finally:
        store.close()
