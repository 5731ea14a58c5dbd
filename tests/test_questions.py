"""Questions that ask for a figure, and answers that give none (``rag.questions``)."""

from __future__ import annotations

import pytest

from app_pages.render import answer_html
from rag.answering import Answer, SentenceCheck
from rag.questions import asked_figure_kind, asks_for_figure, is_of_kind, missing_figure_warning, new_figures


@pytest.mark.parametrize(
    "question",
    [
        "How many passages did DPR split Wikipedia into?",
        "How long does building the index take?",
        "What is the top-20 retrieval accuracy of BM25 on Natural Questions?",
        "What was the net revenue in the third quarter?",
        "When was the module designed?",
        "In which year did the war end?",
        "What percentage of cases recovered?",
        "What batch size is the model trained with?",
        "Which earlier version of the manual does it supersede?",
        "What total amount was paid?",
    ],
)
def test_questions_that_ask_for_a_figure(question: str) -> None:
    assert asks_for_figure(question)


@pytest.mark.parametrize(
    "question",
    [
        "What is dense passage retrieval?",
        "Who designed the module?",
        "Which backbone does the base model use?",
        "Summarise the report.",
        "What does the warranty cover?",
        "Why did revenue fall?",
    ],
)
def test_questions_that_do_not(question: str) -> None:
    assert not asks_for_figure(question)


def test_an_answer_without_a_figure_to_a_figure_question_is_warned() -> None:
    question = "What is the top-20 retrieval accuracy of BM25 on Natural Questions?"
    vague = ["BM25 has significantly higher performance than the other methods [2]."]
    assert missing_figure_warning(question, vague) is not None
    assert missing_figure_warning(question, ["BM25 reaches 59.1% top-20 accuracy [2]."]) is None
    # restating the question's own numbers is not an answer
    assert missing_figure_warning(question, ["The top-20 accuracy is discussed in Table 2 [2]."]) is not None
    assert missing_figure_warning("Who wrote it?", vague) is None


def test_the_warning_reaches_json_and_the_page() -> None:
    warning = "The question asks for a figure and the answer gives none: check the key sentence and the sources."
    answer = Answer(
        "It is high.", False, [], [SentenceCheck("It is high.", True, 0.9)], "How high?", warnings=[warning]
    )
    assert answer.to_dict()["warnings"] == [warning]
    html = answer_html(answer)
    assert 'class="rag-warning"' in html and "gives none" in html
    assert 'class="rag-warning"' not in answer_html(Answer("It is high.", False, [], answer.sentences, "How high?"))


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How long does building the index take?", "duration"),
        ("For how long were the encoders trained?", "duration"),
        ("How many hours does the battery last?", "duration"),
        ("In which year was the bank founded?", "year"),
        ("When did the smelter close?", "year"),
        ("What percentage of deposits is insured?", "percent"),
        ("How long is the river?", None),  # a length, not a duration
        ("How many branches does the bank have?", None),
        ("Who founded the bank?", None),
    ],
)
def test_the_asked_kind_of_figure(question: str, kind: str | None) -> None:
    assert asked_figure_kind(question) == kind


def test_figures_that_could_answer_leave_out_references_and_the_questions_own() -> None:
    found = new_figures("Table 2 shows that in 2019 the 3 plants made 40 tonnes.", "What did the 3 plants make?")
    assert [n.text for n in found] == ["2019", "40 tonnes"]
    [years] = new_figures("It lasted 70 years.", "How long did it last?")
    assert is_of_kind(years, "duration") and not is_of_kind(years, "year")
    [year] = new_figures("It ended in 1887.", "When did it end?")
    assert is_of_kind(year, "year") and not is_of_kind(year, "duration")


def test_a_headings_section_number_is_no_figure() -> None:
    assert new_figures("3 Dense Passage Retriever (DPR) We focus on the retriever.", "What does DPR reach?") == []
    heading = "4.1 Wikipedia Data Following Lee, we use the dump from Dec. 20, 2018."
    assert [n.text for n in new_figures(heading, "Which dump?")] == ["20", "2018"]
    assert [n.text for n in new_figures("12 people signed the order.", "How many signed?")] == ["12 people"]
