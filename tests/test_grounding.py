"""Fact-level grounding marks, evidence, the key sentence and ``rag check``, with the real embedder.

The passages are short texts written for these tests (no licence needed); ``rag check`` runs
on a real Milvus Lite store filled by the real ingest command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ingest.cli import main as ingest_main
from rag.answering import Source
from rag.cli import main as rag_main
from rag.embedding import Embedder
from rag.facts import TextFacts, extract_facts
from rag.grounding import GroundingChecker, find_sentence
from rag.sentence_ranking import key_sentence
from rag.sentences import split_sentences
from rag.services import Services

DATASHEET = (
    "SolarMax M385 monocrystalline module datasheet. The maximum module efficiency is 21.0 %. "
    "Power output range: 360-385 W at standard test conditions. "
    "The module weighs 19.5 kg and carries a product warranty of 12 years. "
    "It was designed by Dr. Maria Keller at the Freiburg laboratory in March 2019."
)
EARNINGS = (
    "Northbank quarterly report. Net revenue was $15.4 billion in the third quarter, up 8 percent. "
    "The bank served 1,234 branches across Canada."
)
DPR = (
    "Dense Passage Retrieval (DPR) uses two independent BERT networks as encoders for questions and passages. "
    "The encoders were trained with a batch size of 128 on Natural Questions."
)


@pytest.fixture(scope="module")
def checker(embedder: Embedder) -> GroundingChecker:
    return GroundingChecker(embedder, threshold=0.45)


def sources() -> list[Source]:
    return [
        Source(1, "docs/solarmax.pdf", "solarmax.pdf", 2, 0.8, DATASHEET),
        Source(2, "docs/northbank.pdf", "northbank.pdf", 1, 0.7, EARNINGS),
        Source(3, "docs/dpr.pdf", "dpr.pdf", 3, 0.6, DPR),
    ]


def check_one(checker: GroundingChecker, sentence: str, question: str = ""):
    given = sources()
    [result] = checker.check([sentence], given, question)
    return result, given


# Sentence splitting -------------------------------------------------------------------------


def test_abbreviations_decimals_and_lists_do_not_split_a_sentence() -> None:
    text = (
        "Dr. A. Smith et al. measured 2.5 kW in the U.S. in 2019, e.g. in Fig. 3 and No. 4, i.e. twice [1]. "
        "Mr. Jones agreed [2].\n1. Mix the flour.\n2. Bake it."
    )
    assert split_sentences(text) == [
        "Dr. A. Smith et al. measured 2.5 kW in the U.S. in 2019, e.g. in Fig. 3 and No. 4, i.e. twice [1].",
        "Mr. Jones agreed [2].",
        "1. Mix the flour.",
        "2. Bake it.",
    ]


def test_a_citation_after_the_full_stop_stays_with_its_sentence() -> None:
    assert split_sentences("It rose 2.5%. [1] Then it fell [2].") == ["It rose 2.5%. [1]", "Then it fell [2]."]
    assert split_sentences("One [1]. Two? Three!\nFour") == ["One [1].", "Two?", "Three!", "Four"]


# Facts and their normal forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "sentence"),
    [
        ("efficiency 21.0 %", "It is 21.0% efficient."),
        ("efficiency 21.0 %", "It is 21 percent efficient."),
        ("efficiency 21%", "It is 21.0 % efficient."),
        ("revenue was 15.4 billion", "Revenue was $15.4 billion."),
        ("revenue was $15,400 million", "Revenue was 15.4 billion dollars."),
        ("it has 1234 branches", "It has 1,234 branches."),
        ("output range: 360-385 W", "The output is at most 385 watts."),
        ("founded on 2019-03-05", "It was founded on March 5, 2019."),
        ("a BERT encoder", "It uses BERT encoders."),
        ("Corrosion rate (mm/year) 10 0.0919", "The corrosion rate was 0.0919 mm/year."),  # unit in the header
        ("an area of 12 m²", "The area is 12 m^2."),
        ("top speed 60 km/h", "It reaches 60 km/h."),
    ],
)
def test_the_same_fact_in_another_format_is_found(source: str, sentence: str) -> None:
    facts = extract_facts(sentence)
    assert facts, sentence
    assert TextFacts(source).missing(facts) == []


@pytest.mark.parametrize(
    ("source", "sentence", "missing"),
    [
        ("efficiency 21.0 %", "It is 2.0% efficient.", "2.0%"),
        ("efficiency 21.0 %", "It is 21.0 W.", "21.0 W"),
        ("revenue was 15.4 billion", "Revenue was $15.4 million.", "$15.4 million"),
        ("output range: 360-385 W", "The output is 21.0 watts.", "21.0 watts"),
        ("founded in March 2019", "It was founded in May 2019.", "May"),
        ("a BERT encoder", "It uses an MLP encoder.", "MLP"),
        ("Corrosion rate (mm/year) 4 0.0163 length 5 m", "The rate was 0.0163 m^2/sec.", "0.0163 m^2/sec"),
        ("top speed 60 km/h", "It reaches 60 m/s.", "60 m/s"),
    ],
)
def test_a_changed_fact_is_missing(source: str, sentence: str, missing: str) -> None:
    assert [f.text for f in TextFacts(source).missing(extract_facts(sentence))] == [missing]


def test_sentence_initial_and_common_capitalised_words_are_not_names(checker: GroundingChecker) -> None:
    facts = extract_facts(
        "The module is light. It weighs little. However, This is fine.", vocabulary=checker.vocabulary
    )
    assert facts == []


# The check ---------------------------------------------------------------------------------


def test_a_wrong_figure_is_unsupported_with_its_reason(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "The maximum efficiency of the module is approximately 2.0% [1].")
    assert not result.supported
    assert result.reason == "2.0% is not in source [1]"
    assert result.missing == ["2.0%"] and result.evidence == []
    assert result.closest and result.closest[0].text == "The maximum module efficiency is 21.0 %."


def test_a_wrong_unit_and_several_missing_facts_are_listed(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "The power output is 21.0 watts and it weighs 25 kg [1].")
    assert not result.supported
    assert result.reason == "21.0 watts and 25 kg are not in source [1]"


def test_a_correct_figure_in_another_format_is_supported_with_verbatim_evidence(checker: GroundingChecker) -> None:
    result, given = check_one(checker, "The maximum efficiency of the module is 21 percent [1].")
    assert result.supported and result.reason is None
    [evidence] = result.evidence
    assert (evidence.n, evidence.source, evidence.page) == (1, "docs/solarmax.pdf", 2)
    assert evidence.text == "The maximum module efficiency is 21.0 %."
    assert find_sentence(given[0].text, evidence.text) is not None


def test_facts_spread_over_two_source_sentences_quote_both(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "The 385 W module weighs 19.5 kg [1].")
    assert result.supported
    quoted = [e.text for e in result.evidence]
    assert quoted[0].startswith("The module weighs 19.5 kg")
    assert "Power output range: 360-385 W at standard test conditions." in quoted


def test_a_swapped_name_is_unsupported(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "DPR is based on a multi-layer perceptron (MLP) encoder [3].")
    assert not result.supported and "perceptron and MLP are not in source [3]" in (result.reason or "")

    person, _ = check_one(checker, "The module was designed by Dr. Maria Schmidt [1].")
    assert not person.supported and person.reason == "Maria Schmidt is not in source [1]"

    right, _ = check_one(checker, "The module was designed by Dr. Maria Keller [1].")
    assert right.supported, right.reason


def test_an_uncited_sentence_is_checked_against_its_best_passage(checker: GroundingChecker) -> None:
    wrong, given = check_one(checker, "Net revenue was $14.5 billion in the third quarter.")
    assert not wrong.supported and wrong.citations == [] and not wrong.inferred
    assert wrong.reason == "$14.5 billion is not in source [2]"
    assert not given[1].cited

    right, given = check_one(checker, "Net revenue was $15.4 billion in the third quarter.")
    assert right.supported and right.inferred and right.citations == [2]
    assert right.text == "Net revenue was $15.4 billion in the third quarter [2]."
    assert given[1].cited


def test_numbers_that_restate_the_question_do_not_count(checker: GroundingChecker) -> None:
    sentence = "The warranty of the 400 W model is 12 years [1]."
    asked, _ = check_one(checker, sentence, question="How long is the warranty of the 400 W model?")
    assert asked.supported, asked.reason
    not_asked, _ = check_one(checker, sentence, question="How long is the warranty?")
    assert not not_asked.supported and not_asked.reason == "400 W is not in source [1]"


def test_rare_words_that_restate_the_question_do_not_count_but_names_do(checker: GroundingChecker) -> None:
    sentence = "The photovoltaic warranty of the SolarMax module is 12 years [1]."
    asked, _ = check_one(checker, sentence, question="How long is the photovoltaic warranty?")
    assert asked.supported, asked.reason
    not_asked, _ = check_one(checker, sentence, question="How long is the warranty?")
    assert not not_asked.supported and not_asked.reason == "photovoltaic is not in source [1]"
    named, _ = check_one(checker, "The Zenda module carries a warranty of 12 years [1].", "What warranty has Zenda?")
    assert not named.supported and named.reason == "Zenda is not in source [1]"


def test_an_unrelated_sentence_is_not_similar_enough(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "Quantum chromodynamics describes gluons [1].")
    assert not result.supported
    assert result.reason.startswith("not similar enough to source [1]")


def test_an_inserted_negation_is_caught(checker: GroundingChecker) -> None:
    result, _ = check_one(checker, "The maximum module efficiency is not 21.0 % [1].")
    assert not result.supported and result.reason == 'says "not" where source [1] does not'


def test_the_similarity_only_check_passes_the_wrong_figure(embedder: Embedder) -> None:
    """The check before issue 11, kept for the benchmark: this is the failure the facts fix."""
    old = GroundingChecker.similarity_only(embedder, threshold=0.45)
    [result] = old.check(["The maximum efficiency of the module is approximately 2.0% [1]."], sources())
    assert result.supported


# The key sentence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the maximum efficiency of the SolarMax module?", "The maximum module efficiency is 21.0 %."),
        ("What batch size were the DPR encoders trained with?", DPR.split(". ")[1]),
        ("How many branches does Northbank have?", "The bank served 1,234 branches across Canada."),
    ],
)
def test_key_sentence_is_the_answering_sentence_verbatim(embedder: Embedder, question: str, expected: str) -> None:
    given = sources()
    key = key_sentence(question, given, embedder)
    assert key is not None and key.text == expected
    origin = given[key.n - 1]
    assert (key.source, key.page) == (origin.source, origin.page) and key.text in origin.text


# rag check, end to end on a real store --------------------------------------------------------


@pytest.fixture()
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedder: Embedder):
    """``python -m ingest`` / ``python -m rag`` as calls in ``tmp_path``, sharing the session's embedder."""
    for name in [k for k in os.environ if k.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(Services, "embedder", property(lambda services: embedder))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAG_COLLECTION", "check_docs")

    def run(main, *args: str) -> tuple[int, str]:
        status = main(list(args))
        out, _ = capsys.readouterr()
        return status, out

    (tmp_path / "solarmax.txt").write_text(DATASHEET)
    (tmp_path / "northbank.txt").write_text(EARNINGS)
    assert run(ingest_main, "solarmax.txt", "northbank.txt")[0] == 0
    return run


def test_rag_check_gives_all_three_verdicts(command) -> None:
    status, out = command(rag_main, "check", "--json", "The maximum module efficiency is 21 percent.")
    assert status == 0
    supported = json.loads(out)
    assert supported["verdict"] == "supported" and supported["reason"] == "source [1] says so"
    quote = supported["evidence"][0]
    assert quote["source"] == "solarmax.txt" and quote["quote"] == "The maximum module efficiency is 21.0 %."
    assert quote["quote"] in quote["text"] and set(quote) == {"source", "page", "text", "quote"}

    status, out = command(rag_main, "check", "--json", "The maximum module efficiency is 2.0 %.")
    unsupported = json.loads(out)
    assert status == 0 and unsupported["verdict"] == "unsupported"
    assert unsupported["reason"] == "2.0 % is not in source [1]"
    assert unsupported["evidence"][0]["quote"] == "The maximum module efficiency is 21.0 %."

    status, out = command(rag_main, "check", "--json", "Penguins migrate across the Sahara desert every winter.")
    assert status == 0 and json.loads(out) == {
        "claim": "Penguins migrate across the Sahara desert every winter.",
        "verdict": "no evidence",
        "reason": "no stored passage is relevant enough to this claim",
        "evidence": [],
    }


def test_rag_check_human_form_and_source_filter(command) -> None:
    status, out = command(rag_main, "check", "Net revenue was $15.4 billion.", "--source", "northbank.txt")
    assert status == 0
    assert out.startswith("supported: source [1] says so")
    assert "“Net revenue was $15.4 billion in the third quarter, up 8 percent.”\n  — northbank.txt" in out

    status, out = command(rag_main, "check", "Net revenue was $15.4 billion.", "--source", "solarmax.txt")
    assert status == 0 and out == "no evidence: no stored passage is relevant enough to this claim\n"


def test_a_name_from_the_question_that_the_same_document_holds_elsewhere_is_not_missing(
    checker: GroundingChecker,
) -> None:
    """A passage of a paper says "we"; another passage of the same paper names it. Another document's
    mention does not count, nor does a name the question did not give."""
    dump = "We use the English Wikipedia dump from Dec. 20, 2018 as the source documents for answering questions."
    question = "From which date is the English Wikipedia dump that DPR uses?"
    sentence = "DPR uses the English Wikipedia dump from Dec. 20, 2018 [1]."
    paper = [Source(1, "docs/dpr.pdf", "dpr.pdf", 4, 0.8, dump), Source(2, "docs/dpr.pdf", "dpr.pdf", 1, 0.6, DPR)]
    [same_paper] = checker.check([sentence], paper, question)
    assert same_paper.supported, same_paper.reason

    elsewhere = [paper[0], Source(2, "docs/survey.pdf", "survey.pdf", 1, 0.6, DPR)]
    [other_document] = checker.check([sentence], elsewhere, question)
    assert not other_document.supported and other_document.reason == "DPR is not in source [1]"

    [not_asked] = checker.check([sentence], paper, "From which date is the English Wikipedia dump?")
    assert not not_asked.supported and not_asked.reason == "DPR is not in source [1]"


@pytest.mark.parametrize(
    ("similarity", "shown"),
    [(0.31, "0.31"), (0.444, "0.44"), (0.449, "0.449"), (0.4496, "0.4496"), (0.44999999, "0.4499")],
)
def test_a_score_below_the_threshold_never_reads_as_the_threshold(similarity: float, shown: str) -> None:
    """A sentence marked 'not similar enough' must not say it scored what it needs."""
    from rag.grounding import _below

    assert _below(similarity, 0.45) == shown
    assert float(shown) < 0.45
