"""Grounded answers with the real bundled models on a real Milvus Lite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rag.answering import (
    REFUSAL,
    AnswerPipeline,
    KeySentence,
    Source,
    build_messages,
    clean_citations,
    fit_sources,
    split_sentences,
)
from rag.config import Settings
from rag.generation import ChatMessage, TransformersGenerator
from rag.pipeline import Ingestor
from rag.retrieval import DocumentRetriever, Retriever, condense_question, join_overlapping

ROOT = Path(__file__).resolve().parents[1]

FREEDONIA = """Freedonia travel notes

The capital of Freedonia is Zenda. The city has 42 bridges over the river Sylvan.

Freedonia's national animal is the blue heron, protected since 1921.
"""
VOLCANO = """Mount Karthos geology report

Mount Karthos last erupted in 1987. Its crater lake is 212 metres deep and holds acidic water.
"""
EXPORTS = """Freedonia economy

Freedonia exported 3.2 million tonnes of copper in 2019. In 2020 copper exports fell to 2.1 million tonnes
because the Zenda smelter closed for repairs.
"""


class SpyGenerator:
    """The real generator, counting how often the pipeline asks it for text and keeping its prompts."""

    def __init__(self, real: TransformersGenerator) -> None:
        self.real = real
        self.calls = 0
        self.prompts: list[str] = []  # the last message of each request: the sources and the question

    @property
    def context_window(self) -> int:
        return self.real.context_window

    def load(self) -> None:
        self.real.load()

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.real.prompt_tokens(messages)

    def stream(self, messages: Sequence[ChatMessage], **kwargs) -> Iterator[str]:
        self.calls += 1
        self.prompts.append(messages[-1]["content"])
        return self.real.stream(messages, **kwargs)

    def generate(self, messages: Sequence[ChatMessage], **kwargs) -> str:
        return "".join(self.stream(messages, **kwargs))


@pytest.fixture()
def library(settings: Settings, embedder, store, tmp_path: Path) -> Retriever:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in {"freedonia.md": FREEDONIA, "volcano.txt": VOLCANO, "economy.txt": EXPORTS}.items():
        (folder / name).write_text(text)
    report = Ingestor(settings, embedder, store).ingest([folder])
    assert not report.failed, report.to_dict()
    return Retriever(settings, embedder, store)


@pytest.fixture()
def pipeline(settings: Settings, library: Retriever, generator) -> AnswerPipeline:
    fast = settings.model_copy(update={"max_new_tokens": 48})
    return AnswerPipeline(fast, library, SpyGenerator(generator))


@pytest.mark.slow
def test_answer_has_the_fact_and_a_correct_citation(pipeline: AnswerPipeline) -> None:
    stream = pipeline.stream("What is the capital of Freedonia?")
    assert stream.sources and stream.sources[0].title == "freedonia.md"  # known before the first token
    pieces = list(stream)
    answer = stream.answer()

    assert len(pieces) > 1, "the answer should stream in pieces"
    assert not answer.refused
    assert "Zenda" in answer.text
    cited = [s for s in answer.sources if s.cited]
    assert cited, f"no citation in {answer.text!r}"
    assert all(s.title == "freedonia.md" and s.page is None for s in cited)
    assert any(s.supported and "Zenda" in s.text for s in answer.sentences)


def test_unrelated_question_is_refused_without_calling_the_llm(pipeline: AnswerPipeline) -> None:
    answer = pipeline.answer("How do I replace the chain on a mountain bike?")

    assert answer.refused
    assert answer.text == REFUSAL
    assert pipeline.generator.calls == 0
    assert answer.sources, "the closest sources are still shown"
    assert all(s.score < pipeline.settings.relevance_threshold for s in answer.sources)


def test_follow_up_is_rewritten_and_retrieves_the_right_document(library: Retriever) -> None:
    history = ["How much copper did Freedonia export in 2019?"]
    query = condense_question("and in 2020?", history)

    assert "copper" in query and "2020" in query
    retrieval = library.retrieve(query)
    assert retrieval.hits[0].title == "economy.txt"
    # A standalone question is left alone, and history is bounded.
    assert condense_question("What is the depth of the crater lake on Mount Karthos?", history).startswith("What")
    assert condense_question("and then?", ["a"] * 10 + ["last question"], max_turns=2) == "last question and then?"


def test_retrieval_filters_by_document(library: Retriever) -> None:
    volcano = library.store.find_sources("volcano.txt")
    hits = library.retrieve("Zenda", sources=volcano, threshold=-1).hits
    assert hits and {h.title for h in hits} == {"volcano.txt"}


def test_context_never_overflows_the_window(settings: Settings, generator) -> None:
    small = TransformersGenerator(Settings(), max_context_tokens=600)
    small._model, small._tokenizer, small._device = generator._model, generator._tokenizer, generator._device
    long_text = "Freedonia copper exports grew steadily for many years. " * 60
    sources = [Source(n, f"doc{n}.txt", f"doc{n}.txt", None, 0.9, long_text) for n in range(1, 6)]

    kept, messages = fit_sources("How did exports grow?", sources, small, max_new_tokens=64)

    assert small.prompt_tokens(messages) + 64 <= small.context_window
    assert 1 <= len(kept) < len(sources)
    answer = small.generate(messages, max_new_tokens=8)  # runs without an error
    assert isinstance(answer, str)


def test_citations_to_unknown_sources_are_dropped() -> None:
    assert clean_citations("Zenda is the capital [1][7]. It has bridges [2, 9].", valid=2) == (
        "Zenda is the capital [1]. It has bridges [2]."
    )
    assert split_sentences("One [1]. Two? Three!\nFour") == ["One [1].", "Two?", "Three!", "Four"]


def test_grounding_marks_unsupported_sentences(pipeline: AnswerPipeline) -> None:
    sources = [Source(1, "freedonia.md", "freedonia.md", None, 0.8, FREEDONIA)]
    answer = pipeline.check(
        "The capital of Freedonia is Zenda. Quantum chromodynamics describes gluons [1]. [5]",
        sources,
        "q",
        "q",
    )
    marks = {s.text.split(" [")[0]: s for s in answer.sentences}
    assert marks["The capital of Freedonia is Zenda"].supported
    assert marks["The capital of Freedonia is Zenda"].inferred  # citation added from the passage
    assert not marks["Quantum chromodynamics describes gluons"].supported
    assert "[5]" not in answer.text


def test_neighbouring_chunks_are_joined_without_repeating_the_overlap() -> None:
    assert join_overlapping("alpha beta gamma delta", "gamma delta epsilon") == "alpha beta gamma delta epsilon"


def test_langchain_retriever_and_runnable(library: Retriever, pipeline: AnswerPipeline) -> None:
    documents = DocumentRetriever(retriever=library).invoke("Where is the crater lake?")
    assert documents[0].metadata["title"] == "volcano.txt"
    assert {"source", "page", "score"} <= set(documents[0].metadata)

    refused = pipeline.as_runnable().invoke({"question": "Who won the 1998 football world cup?"})
    assert refused["refused"] is True and refused["answer"] == REFUSAL


def test_prompt_numbers_sources_with_file_and_page() -> None:
    messages = build_messages("q?", [Source(1, "a.pdf", "a.pdf", 3, 0.9, "text")])
    assert "[1] (a.pdf, page 3)" in messages[1]["content"]
    assert "Most relevant" not in messages[1]["content"]


def test_prompt_puts_the_key_sentence_between_the_sources_and_the_question() -> None:
    sources = [
        Source(1, "a.pdf", "a.pdf", 3, 0.9, "Intro. The bridge is 42 m long."),
        Source(2, "b.md", "b.md", None, 0.5, "x"),
    ]
    key = KeySentence("The bridge is 42 m long.", "a.pdf", 3, 1, 0.8)
    content = build_messages("How long is the bridge?", sources, key)[1]["content"]
    hint = content.index('Most relevant sentence, from [1]: "The bridge is 42 m long."')
    assert content.index("[2] (b.md)") < hint < content.index("Question: How long is the bridge?")


@pytest.mark.slow
def test_ask_json_has_the_documented_shape(tmp_path: Path) -> None:
    (tmp_path / "freedonia.md").write_text(FREEDONIA)
    env = {**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MAX_NEW_TOKENS": "32"}
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 600}
    ingest = subprocess.run([sys.executable, "-m", "ingest", "freedonia.md"], **run)
    assert ingest.returncode == 0, ingest.stderr

    done = subprocess.run([sys.executable, "-m", "rag", "ask", "--json", "What is the capital of Freedonia?"], **run)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result["answer"], str) and result["refused"] is False
    source = result["sources"][0]
    assert set(source) >= {"n", "source", "page", "score", "text"}
    assert (source["n"], source["source"], source["page"]) == (1, "freedonia.md", None)
    assert isinstance(source["score"], float)
    key = result["key_sentence"]  # the source's own sentence that answers, quoted with file and page
    assert key == {"text": "The capital of Freedonia is Zenda.", "source": "freedonia.md", "page": None}
    assert key["text"] in source["text"]

    refused = subprocess.run([sys.executable, "-m", "rag", "ask", "--json", "How to tune a piano?"], **run)
    assert json.loads(refused.stdout)["refused"] is True
    assert json.loads(refused.stdout)["key_sentence"] is None


def test_store_as_langchain_vectorstore(library: Retriever) -> None:
    vectorstore = library.store.as_vectorstore()
    kwargs = {"k": 2, "ranker_type": "rrf"} if library.store.hybrid_available else {"k": 2}
    documents = vectorstore.as_retriever(search_kwargs=kwargs).invoke("How deep is the crater lake?")
    assert documents[0].metadata["title"] == "volcano.txt"
    assert documents[0].metadata["page"] == -1  # text files have no page; the product maps -1 to None


@pytest.mark.slow
def test_pubmedqa_command_on_a_small_real_subset(tmp_path: Path) -> None:
    """The evaluation command end to end on four real PubMedQA entries: ingest, ask two, score.

    The entries are committed in tests/data/pubmedqa (MIT licence, see tests/data/README.md).
    """
    folder = ROOT / "tests" / "data" / "pubmedqa"
    out = tmp_path / "out.json"

    done = subprocess.run(
        [sys.executable, "-m", "rag.eval", "pubmedqa", str(folder), "--limit", "2", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "RAG_DATA_DIR": str(tmp_path / "data"), "RAG_MAX_NEW_TOKENS": "48"},
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert (report["questions"], report["abstracts"], len(report["rows"])) == (2, 4, 2)
    assert report["retrieval_hit_rate"] == 1.0  # each question finds its own abstract among four
    for key in ("decision_accuracy", "rouge_l", "token_f1", "grounded_sentence_share"):
        assert 0.0 <= report[key] <= 1.0
    assert "retrieval_hit_rate" in done.stdout
