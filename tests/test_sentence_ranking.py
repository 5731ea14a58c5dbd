"""Ranking the passages' sentences for a question, and the focused prompt built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_answering import SpyGenerator

from rag.answering import AnswerPipeline, Source
from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import Ingestor
from rag.retrieval import Retriever
from rag.sentence_ranking import focus_row, focus_sources, key_sentence, rank_sentences

BANK = (
    "Northbank was founded in 1911 in Halifax. The bank served 1,234 branches across Canada. "
    "Its logo is a blue heron. Deposits grew by 4.5% in 2023. The head office moved to Toronto in 1960."
)
SOLAR = (
    "The SolarMax 400 is a mono-crystalline module. The maximum module efficiency is 21.0 %. "
    "It weighs 21.5 kg. The warranty covers 25 years of power output."
)
RIVERS = "The Zenda river floods every spring. Its delta holds three villages."


def sources() -> list[Source]:
    return [
        Source(1, "/docs/bank.pdf", "bank.pdf", 3, 0.8, BANK),
        Source(2, "/docs/solar.pdf", "solar.pdf", 1, 0.7, SOLAR),
        Source(3, "/docs/rivers.txt", "rivers.txt", None, 0.5, RIVERS),
    ]


def test_ranking_puts_the_answering_sentence_first_and_keeps_every_sentence(embedder: Embedder) -> None:
    given = sources()
    ranked = rank_sentences("How many branches did Northbank serve?", given, embedder)
    assert ranked[0].sentence.text == "The bank served 1,234 branches across Canada."
    assert ranked[0].sentence.n == 1 and ranked[0].index == 1
    assert len(ranked) == 5 + 4 + 2  # every sentence once
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    key = key_sentence("How many branches did Northbank serve?", given, embedder, ranked)
    assert key is not None and key.text == ranked[0].sentence.text and (key.source, key.page) == ("/docs/bank.pdf", 3)


def test_focused_sources_keep_their_numbers_the_sentence_before_and_mark_gaps(embedder: Embedder) -> None:
    given = sources()
    ranked = rank_sentences("What is the maximum efficiency of the SolarMax module?", given, embedder)
    assert ranked[0].sentence.text == "The maximum module efficiency is 21.0 %."

    [solar] = focus_sources(given, ranked, 1)
    # the best sentence with the one before it, under the passage's own number; other passages left out
    assert (solar.n, solar.source, solar.page) == (2, "/docs/solar.pdf", 1)
    assert solar.text == "The SolarMax 400 is a mono-crystalline module. The maximum module efficiency is 21.0 %."

    focused = focus_sources(given, ranked, 4)
    assert 1 <= len(focused) <= 3
    assert [s.n for s in focused] == sorted(s.n for s in focused)  # the retrieval order stays
    for source in focused:
        original = given[source.n - 1]
        assert len(source.text) < len(original.text) or source.text == original.text
        for piece in source.text.split(" … "):  # each run of sentences is verbatim from its passage
            assert piece in original.text


def test_focus_marks_a_gap_between_sentences_that_are_not_adjacent() -> None:
    from rag.grounding import PassageSentence
    from rag.sentence_ranking import RankedSentence

    given = sources()
    first = PassageSentence(1, 0, 0, "Northbank was founded in 1911 in Halifax.")
    fourth = PassageSentence(1, 0, 0, "The head office moved to Toronto in 1960.")
    ranked = [RankedSentence(fourth, 4, 0.9), RankedSentence(first, 0, 0.8)]
    [bank] = focus_sources(given, ranked, 2)
    assert bank.text == (
        "Northbank was founded in 1911 in Halifax. … Deposits grew by 4.5% in 2023. "
        "The head office moved to Toronto in 1960."
    )


@pytest.mark.slow
def test_a_focused_prompt_holds_the_best_sentences_and_the_answer_keeps_whole_passages(
    settings: Settings, embedder: Embedder, store, generator, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "bank.txt").write_text(BANK)
    (folder / "solar.txt").write_text(SOLAR)
    report = Ingestor(settings, embedder, store).ingest([folder])
    assert not report.failed
    focused = settings.model_copy(update={"max_new_tokens": 32, "prompt_sentences": 1})
    recorder = SpyGenerator(generator)
    pipeline = AnswerPipeline(focused, Retriever(focused, embedder, store), recorder)

    answer = pipeline.answer("How many branches did Northbank serve?")

    [prompt] = recorder.prompts
    assert "The bank served 1,234 branches across Canada." in prompt
    assert "Its logo is a blue heron." not in prompt and "warranty" not in prompt  # the rest is left out
    assert any(s.text == BANK.strip() or "blue heron" in s.text for s in answer.sources)  # shown whole
    assert (
        answer.key_sentence is not None and answer.key_sentence.text == "The bank served 1,234 branches across Canada."
    )


LIGHTHOUSE = Source(
    1,
    "/docs/coast.pdf",
    "coast.pdf",
    12,
    0.8,
    "Chapter 3 The Lighthouse of Carrick. The keepers rebuilt the tower stone by stone over forty-one years, "
    "finishing in 1887. That is how long it took to raise a light on the reef. "
    "Volume 2 of the harbour records lists 14 keepers.",
)


def test_the_key_sentence_prefers_a_figure_of_the_asked_kind_over_references(embedder: Embedder) -> None:
    key = key_sentence("In which year did the keepers finish the Carrick lighthouse?", [LIGHTHOUSE], embedder)
    assert key is not None and "1887" in key.text
    assert not key.text.startswith("Chapter 3")  # "Chapter 3" is a reference, not an answer


def test_a_key_sentence_that_leans_on_the_one_before_quotes_both(embedder: Embedder) -> None:
    question = "How long did it take to raise a light on the Carrick reef?"
    ranked = rank_sentences(question, [LIGHTHOUSE], embedder)
    assert ranked[0].sentence.text == "That is how long it took to raise a light on the reef."
    key = key_sentence(question, [LIGHTHOUSE], embedder, ranked)
    assert key is not None
    assert key.text == (
        "The keepers rebuilt the tower stone by stone over forty-one years, finishing in 1887. "
        "That is how long it took to raise a light on the reef."
    )
    assert key.text in LIGHTHOUSE.text  # still the passage's own words, one stretch of it


def test_a_focused_prompt_is_the_default_for_the_bundled_model_only() -> None:
    assert Settings().focused_sentences == 1  # measured more accurate for the bundled 135M model
    assert Settings(llm_model="Qwen/Qwen2.5-1.5B-Instruct").focused_sentences == 0  # whole passages
    assert Settings(llm_base_url="http://gpu-box:8000/v1").focused_sentences == 0
    assert Settings(prompt_sentences=0).focused_sentences == 0
    assert Settings(llm_model="Qwen/Qwen2.5-1.5B-Instruct", prompt_sentences=3).focused_sentences == 3
    with pytest.raises(ValueError):
        Settings(prompt_sentences=-1)


def test_the_key_sentence_is_the_table_row_the_question_names_by_its_figure(embedder: Embedder) -> None:
    header = "Inhibitor concentration (g); bc (V/dec); ba (V/dec); Ecorr (V); Polarization resistance (Ω); Rate"
    values = [
        ("0", "0.0335", "0.0409", "0.9393", "24.0910", "2.8163"),
        ("2", "1.9460", "0.0596", "0.8276", "121.440", "1.5054"),
        ("4", "0.0163", "0.2369", "0.8825", "42.121", "0.9476"),
        ("6", "0.3233", "0.0540", "0.8027", "373.180", "0.4318"),
        ("8", "0.1240", "0.0556", "0.5896", "305.650", "0.3772"),
    ]
    names = header.split("; ")
    rows = "\n".join("; ".join(f"{n}: {v}" for n, v in zip(names, row, strict=True)) for row in values)
    text = "The strong correlation reveals that egg shell adsorption follows the Langmuir isotherm.\n" + rows
    table = Source(1, "/docs/corrosion.pdf", "corrosion.pdf", 4, 0.8, text)
    for grams, resistance in [("6", "373.180"), ("0", "24.0910"), ("2", "121.440")]:
        question = f"What is the polarization resistance for stainless steel with {grams} g of egg shell inhibitor?"
        key = key_sentence(question, [table], embedder)
        assert key is not None and resistance in key.text, (grams, key)


def test_a_table_row_is_cut_to_its_label_and_the_columns_the_question_names(embedder: Embedder) -> None:
    """The focused prompt gives the model the asked cell of a row, not every figure of it (and of
    the row before it); the answer's sources and the grounding check keep the whole passage."""
    from rag.readers.tables import table_lines

    fees = "\n".join(
        table_lines(
            [
                ["Vessel class", "Berth fee per day", "Pilotage fee", "Waste levy", "Winter rate"],
                ["Bulk carrier", "410.00", "380.00", "66.00", "305.00"],
                ["Cruise ship", "875.00", "520.00", "140.00", "655.00"],
            ]
        )
    )
    given = [Source(1, "/docs/harbour.pdf", "harbour.pdf", 1, 0.7, fees)]
    question = "What is the winter rate for a cruise ship?"
    ranked = rank_sentences(question, given, embedder)
    assert ranked[0].sentence.text.startswith("Vessel class: Cruise ship;")
    [focused] = focus_sources(given, ranked, 1, question)
    assert (
        focused.text == "Vessel class: Bulk carrier; Winter rate: 305.00 Vessel class: Cruise ship; Winter rate: 655.00"
    )
    assert given[0].text == fees  # the passage itself is untouched

    # no column named, or every one: the row stays whole; prose is never cut
    whole = "Vessel class: Cruise ship; Berth fee per day: 875.00; Pilotage fee: 520.00"
    assert focus_row(whole, "Tell me about cruise ships.") == whole
    assert focus_row(whole, "What are the berth and pilotage fees of a cruise ship?") == whole
    # a cell named by its value stays: the notes that say what a dataset holds
    zoo = "Dataset: HJDataset; Base Model: F / M; Large Model: -; Notes: Layouts of history Japanese documents"
    assert focus_row(zoo, "Which dataset of the model zoo holds Japanese documents?") == zoo
    assert (
        focus_row(zoo, "What do the notes say of HJDataset?")
        == "Dataset: HJDataset; Notes: Layouts of history Japanese documents"
    )
    assert (
        focus_row("The winter rate: 655.00 for cruise ships.", question) == "The winter rate: 655.00 for cruise ships."
    )
