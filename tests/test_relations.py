"""Figures paired with the wrong item: "respectively" lists and table rows (``rag.relations``).

The first sentence is quoted from the LayoutParser paper (arXiv 2103.15348, CC BY 4.0; its PDF
is in tests/data); the rest are written for these tests.
"""

from __future__ import annotations

import pytest

from rag.answering import Source
from rag.embedding import Embedder
from rag.grounding import GroundingChecker
from rag.readers.tables import table_lines
from rag.relations import respectively_pairings, swapped_pairing, table_pairings

LAYOUTPARSER = (
    "The models are trained on the layout datasets listed below. "
    "For “base model” and “large model”, we refer to using the ResNet 50 or ResNet 101 backbones [13], "
    "respectively. One can train models of different architectures."
)
EARNINGS = "Revenue and net income were $15.4 billion and $2.1 billion, respectively."
THREE = "The accuracies on NQ, TriviaQA, and SQuAD are 41.5%, 56.8% and 29.8%, respectively."
TABLE = "\n".join(
    table_lines(
        [
            ["Model", "Backbone", "Box mAP", "Inference (ms)"],
            ["base", "ResNet 50", 72.1, 110],
            ["large", "ResNet 101", 75.3, 185],
            ["mobile", "MobileNet v3", 61.0, 35],
        ]
    )
)


def test_a_respectively_sentence_pairs_items_and_figures_in_order() -> None:
    sentence = LAYOUTPARSER.split(". ")[1]
    pairs = respectively_pairings(sentence)
    assert [(p.subject, p.values[0].text) for p in pairs] == [("base model", "50"), ("large model", "101")]
    assert [(p.subject, p.values[0].text) for p in respectively_pairings(THREE)] == [
        ("NQ", "41.5%"),
        ("TriviaQA", "56.8%"),
        ("SQuAD", "29.8%"),
    ]
    assert [p.subject for p in respectively_pairings(EARNINGS)] == ["Revenue", "net income"]


@pytest.mark.parametrize(
    ("sentence", "source", "swap"),
    [
        ("The base model of the model zoo uses the ResNet 101 backbone.", LAYOUTPARSER, ("101", "base model")),
        ("LayoutParser's large model uses the ResNet 50 backbone.", LAYOUTPARSER, ("50", "large model")),
        ("Net income was $15.4 billion.", EARNINGS, ("$15.4 billion", "net income")),
        ("On TriviaQA the accuracy is 41.5 %.", THREE, ("41.5 %", "TriviaQA")),
        ("The large model reaches a box mAP of 72.1.", TABLE, ("72.1", "large")),
        ("The mobile model takes 185 ms.", TABLE, ("185 ms", "mobile")),
    ],
)
def test_a_figure_given_for_another_item_is_a_swap(sentence: str, source: str, swap: tuple[str, str]) -> None:
    found = swapped_pairing(sentence, [source])
    assert found is not None
    assert (found.value, found.said) == swap


@pytest.mark.parametrize(
    ("sentence", "source"),
    [
        ("The base model uses the ResNet 50 backbone.", LAYOUTPARSER),
        ("The large model uses ResNet 101 [1].", LAYOUTPARSER),
        ("The base and large models use ResNet 50 and ResNet 101 respectively.", LAYOUTPARSER),
        ("Net income was $2.1 billion, against revenue of $15.4 billion.", EARNINGS),
        ("Revenue reached 15.4 billion dollars.", EARNINGS),
        ("The large model reaches a box mAP of 75.3 and takes 185 ms.", TABLE),
        ("A box mAP of 61.0 is reached by the mobile model.", TABLE),
        ("The models reach up to 75.3 box mAP.", TABLE),  # names no item: nothing to swap
        ("The base model uses ResNet 101.", "The base model uses ResNet 101 and ResNet 50 layers."),  # no pairing
    ],
)
def test_a_figure_with_its_own_item_or_no_item_is_not_a_swap(sentence: str, source: str) -> None:
    assert swapped_pairing(sentence, [source]) is None


def test_rows_without_a_named_label_or_a_single_row_give_no_pairing() -> None:
    assert table_pairings("Model: base; mAP: 72.1") == []  # one row: nothing to confuse it with
    assert table_pairings("Year: 2023; Revenue: 5\nYear: 2024; Revenue: 7") != []  # a year labels a row too
    assert table_pairings("plain text: with a colon; and more") == []


def test_the_checker_marks_a_swapped_figure_with_its_reason(embedder: Embedder) -> None:
    checker = GroundingChecker(embedder, threshold=0.45)
    given = [Source(1, "docs/layoutparser.pdf", "layoutparser.pdf", 5, 0.8, LAYOUTPARSER)]
    question = "Which backbone does the base model use?"
    wrong, right = checker.check(
        ["The base model uses the ResNet 101 backbone [1].", "The base model uses the ResNet 50 backbone [1]."],
        given,
        question,
    )
    assert not wrong.supported
    assert wrong.reason == "source [1] gives 101 for “large model”, not “base model”"
    assert right.supported, right.reason
    # the check before the pairing rule, on the same sentence: both figures are in the source
    [old] = GroundingChecker(embedder, 0.45, pairings=False).check([wrong.text], given, question)
    assert old.supported
