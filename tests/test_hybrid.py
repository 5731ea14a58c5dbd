"""Hybrid dense + BM25 search in Milvus, and the BEIR evaluation command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from store_contract import make_document, vectors_for

import rag.milvus
from rag.eval.beir import BeirDataset, ingest_corpus, load_beir, search_documents
from rag.eval.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k
from rag.milvus import CollectionSpec, MilvusCollection
from rag.store import DocumentStore

REPO = Path(__file__).resolve().parents[1]

# The charger note is the closest in meaning to "XQ-7731-B overheating" but shares no word
# with it ("overheats" is another token); only the firmware note holds the product code.
DOCS = {
    "charger.txt": "When the charger overheats, unplug it at once and let it cool down before charging again.",
    "firmware.txt": "XQ-7731-B firmware notes: version 2.1 changes the display font and the menu colours.",
    "returns.txt": "Returns are accepted within thirty days when the original receipt is shown at the till.",
    "warranty.txt": "The warranty covers manufacturing defects for two years from the date of purchase.",
    "shipping.txt": "Parcels leave the warehouse within one working day and arrive in three to five days.",
    "cleaning.txt": "Wipe the case with a dry cloth; never use solvents or spray cleaners on the screen.",
    "pairing.txt": "To pair the headset, hold the power key for five seconds until the light flashes blue.",
    "storage.txt": "Store the device in a cool, dry place away from direct sunlight when not in use.",
    "recycling.txt": "Old devices can be dropped at any recycling point; remove the batteries first.",
    "support.txt": "Our support line answers calls on weekdays between nine in the morning and five.",
}
CODE_QUERY = "XQ-7731-B overheating"


def write_docs(store: DocumentStore, embedder, docs: dict[str, str]) -> None:
    """One single-chunk document per entry."""
    for source, text in docs.items():
        chunks = make_document(source, [text])
        store.write(chunks, vectors_for(embedder, chunks))


def top_sources(store: DocumentStore, embedder, query: str, mode: str, k: int = 5) -> list[str]:
    return [h.source for h in store.search(query, embedder.embed_query(query), k=k, mode=mode)]


# Hybrid search -----------------------------------------------------------------------------


def test_exact_term_found_by_bm25_and_hybrid_but_not_dense(store: DocumentStore, embedder) -> None:
    assert store.hybrid_available
    write_docs(store, embedder, DOCS)

    assert top_sources(store, embedder, CODE_QUERY, "dense")[0] != "firmware.txt"
    assert top_sources(store, embedder, CODE_QUERY, "bm25")[0] == "firmware.txt"
    hybrid = store.search(CODE_QUERY, embedder.embed_query(CODE_QUERY), k=5, mode="hybrid")
    assert hybrid[0].source == "firmware.txt"
    # Whatever the fusion, the score stays the cosine similarity (one relevance threshold).
    firmware = embedder.encode([DOCS["firmware.txt"]])[0]
    assert hybrid[0].score == pytest.approx(float(firmware @ embedder.encode([CODE_QUERY])[0]), abs=1e-4)


def test_hybrid_fills_k_from_dense_when_bm25_finds_few(store: DocumentStore, embedder) -> None:
    write_docs(store, embedder, DOCS)
    vector = embedder.embed_query(CODE_QUERY)
    assert len(store.search(CODE_QUERY, vector, k=10, mode="bm25")) == 1
    hits = store.search(CODE_QUERY, vector, k=10, mode="hybrid", fetch=40)
    assert len({h.source for h in hits}) == len(DOCS)


def test_bm25_matches_other_forms_of_a_word(store: DocumentStore, embedder) -> None:
    write_docs(store, embedder, DOCS)
    # Stems: "purchased" ~ "purchase", "flashing lights" ~ "the light flashes", "removed" ~ "remove".
    assert top_sources(store, embedder, "purchased", "bm25") == ["warranty.txt"]
    assert top_sources(store, embedder, "flashing lights", "bm25") == ["pairing.txt"]
    assert top_sources(store, embedder, "batteries removed", "bm25") == ["recycling.txt"]


def test_query_of_stop_words_only(store: DocumentStore, embedder) -> None:
    write_docs(store, embedder, DOCS)
    query = "is it not there?"
    vector = embedder.embed_query(query)
    assert store.search(query, vector, k=3, mode="bm25") == []
    assert len(store.search(query, vector, k=3, mode="hybrid")) == 3  # dense alone fills it


def create_schema_1_collection(settings, embedder) -> None:
    """A collection as the first release made it: BM25 read the text field itself, no chunking record."""
    collection = MilvusCollection(settings).connect()
    meta = {"rag.schema": "1", "rag.embedding_model": embedder.model_name, "rag.dimension": str(embedder.dimension)}
    spec = CollectionSpec(
        embedder.dimension, meta, bm25=True, keyword_field=False, chunking_field=False, dynamic_field=False
    )
    try:
        collection.create(spec)
    finally:
        collection.close()


def test_collection_of_schema_1_keeps_working(settings, embedder) -> None:
    create_schema_1_collection(settings, embedder)
    old = DocumentStore(settings, embedder).open()
    try:
        assert old.hybrid_available and not old.keyword_field and not old.chunking_field
        assert any("predates chunking records" in notice for notice in old.notices)
        write_docs(old, embedder, DOCS)
        assert top_sources(old, embedder, CODE_QUERY, "bm25") == ["firmware.txt"]  # raw words, no stems
        assert top_sources(old, embedder, CODE_QUERY, "hybrid")[0] == "firmware.txt"
    finally:
        old.close()


def test_hybrid_falls_back_to_dense_without_bm25_field(settings, embedder, monkeypatch) -> None:
    monkeypatch.setattr(rag.milvus, "supports_bm25", lambda version: False)
    store = DocumentStore(settings, embedder).open()
    try:
        assert not store.hybrid_available
        write_docs(store, embedder, DOCS)
        dense = top_sources(store, embedder, CODE_QUERY, "dense")
        assert top_sources(store, embedder, CODE_QUERY, "hybrid") == dense
        assert top_sources(store, embedder, CODE_QUERY, "bm25") == dense
    finally:
        store.close()
    monkeypatch.undo()
    reopened = DocumentStore(settings, embedder).open()  # a collection made without BM25 stays so
    try:
        assert not reopened.hybrid_available
        assert any("BM25" in notice for notice in reopened.notices)
        assert top_sources(reopened, embedder, CODE_QUERY, "hybrid") == dense
    finally:
        reopened.close()


# Metrics -----------------------------------------------------------------------------------


def test_metrics_match_a_hand_computed_example() -> None:
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"z": 1}, "q3": {"n": 0}}
    ranked = ["x", "b", "a", "y"]
    # DCG = 1/log2(3) + 2/log2(4); ideal DCG = 2/log2(2) + 1/log2(3)
    expected_ndcg = (1 / math.log2(3) + 1) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, qrels["q1"], 10) == pytest.approx(expected_ndcg)
    assert expected_ndcg == pytest.approx(0.61991, abs=1e-5)
    assert ndcg_at_k(ranked, qrels["q1"], 2) == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert recall_at_k(ranked, qrels["q1"], 100) == 1.0
    assert recall_at_k(ranked, qrels["q1"], 2) == 0.5
    assert mrr_at_k(ranked, qrels["q1"], 10) == 0.5
    assert mrr_at_k(ranked, qrels["q1"], 1) == 0.0

    # q2 retrieves nothing and scores zero; q3 has no relevant document and is not counted.
    scores = evaluate({"q1": ranked, "q2": []}, qrels, recall_k=100)
    assert scores == {
        "ndcg@10": pytest.approx(expected_ndcg / 2),
        "recall@100": pytest.approx(0.5),
        "mrr@10": pytest.approx(0.25),
    }


# BEIR evaluation ---------------------------------------------------------------------------


def make_beir(folder: Path) -> Path:
    """Six documents, three judged queries (one with two relevant documents), a header line."""
    corpus = [
        {"_id": "d1", "title": "Vitamin D", "text": "Vitamin D deficiency is linked to weaker bones in the elderly."},
        {"_id": "d2", "title": "Statins", "text": "Statins lower LDL cholesterol and the risk of heart attack."},
        {"_id": "d3", "title": "Malaria", "text": "Artemisinin combination therapy cures most malaria infections."},
        {"_id": "d4", "title": "Sleep", "text": "Adults who sleep less than six hours report poorer memory."},
        {"_id": "d5", "title": "Bone density", "text": "Calcium and vitamin D supplements slow bone loss."},
        {"_id": "d6", "title": "Coffee", "text": "Moderate coffee drinking is not associated with arrhythmia."},
    ]
    queries = [
        {"_id": "1", "text": "vitamin D and bone health"},
        {"_id": "2", "text": "cholesterol lowering drugs prevent heart attacks"},
        {"_id": "3", "text": "treatment for malaria"},
        {"_id": "4", "text": "an unjudged query"},
    ]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td5\t2\n2\td2\t1\n3\td3\t1\n")
    return folder


def test_load_beir_keeps_judged_queries(tmp_path: Path) -> None:
    dataset = load_beir(make_beir(tmp_path / "tiny"), limit_queries=2)
    assert dataset.name == "tiny"
    assert list(dataset.queries) == ["1", "2"]
    assert dataset.qrels == {"1": {"d1": 1, "d5": 2}, "2": {"d2": 1}}
    assert len(dataset.corpus) == 6
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path)


def test_documents_rank_by_their_best_chunk(settings, embedder, tmp_path: Path) -> None:
    """Long documents split into several chunks still come back once each."""
    settings = settings.model_copy(update={"chunk_size": 24, "chunk_overlap": 4})
    sentence = "Vitamin D deficiency is linked to weaker bones. "
    dataset = BeirDataset(
        name="split",
        corpus={f"d{i}": (f"Title {i}", sentence * (i + 2)) for i in range(4)},
        queries={"q": "vitamin D and bones"},
        qrels={"q": {"d0": 1}},
    )
    store = DocumentStore(settings, embedder).open()
    try:
        chunks, _ = ingest_corpus(dataset, settings, embedder, store)
        assert chunks > len(dataset.corpus)
        for mode in ("dense", "bm25", "hybrid"):
            ranked = search_documents(store, "vitamin D and bones", embedder.embed_query("vitamin D"), k=3, mode=mode)
            assert len(ranked) == 3 == len(set(ranked))
            ranked = search_documents(store, "vitamin D and bones", embedder.embed_query("vitamin D"), k=10, mode=mode)
            assert sorted(ranked) == sorted(dataset.corpus)
    finally:
        store.close()


@pytest.mark.slow
def test_eval_command_writes_json_report(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "tiny")
    out = tmp_path / "out.json"
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "rag.eval", "beir", str(folder), "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| hybrid |" in done.stdout
    report = json.loads(out.read_text())
    assert report["dataset"] == "tiny"
    assert (report["documents"], report["queries"], report["k"]) == (6, 3, 100)
    assert report["chunks"] >= 6
    assert set(report["results"]) == {"dense", "bm25", "hybrid"}
    for scores in report["results"].values():
        assert set(scores) == {"ndcg@10", "recall@100", "mrr@10", "ms_per_query"}
        for name in ("ndcg@10", "recall@100", "mrr@10"):
            assert 0.0 <= scores[name] <= 1.0
        assert scores["recall@100"] == 1.0  # six documents, all retrieved
    assert {"chunk", "embed", "store"} <= set(report["seconds"])


# Reranking ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder folder made from the bundled MiniLM with a seeded, untrained scoring head.

    No trained cross-encoder ships with the product (nor can one be downloaded here); the test
    checks that the configured model decides the order, not how good that order is.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from rag.config import bundled_embedding_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(bundled_embedding_model(), num_labels=1).save_pretrained(str(folder))
    return folder


def test_reranking_orders_the_top_n_by_the_cross_encoder(settings, embedder, store, cross_encoder_folder) -> None:
    from sentence_transformers import CrossEncoder

    from rag.retrieval import Retriever

    write_docs(store, embedder, DOCS)
    query = "What should I do when the device gets hot?"
    plain = Retriever(settings, embedder, store).retrieve(query, k=10, threshold=-1)
    reranking = settings.model_copy(update={"reranker_model": str(cross_encoder_folder), "rerank_top_n": 10})
    reranked = Retriever(reranking, embedder, store).retrieve(query, k=3, threshold=-1)

    scores = CrossEncoder(str(cross_encoder_folder)).predict([(query, h.text) for h in plain.closest])
    expected = [plain.closest[int(i)].source for i in np.argsort(-scores)[:3]]
    assert [h.source for h in reranked.closest] == expected
    assert expected != [h.source for h in plain.closest[:3]]  # the cross-encoder, not the search, decided
    cosine = {h.source: h.score for h in plain.closest}
    assert all(h.score == pytest.approx(cosine[h.source]) for h in reranked.closest)  # one threshold scale
