"""Figures paired with the wrong item: "respectively" lists and table rows (``rag.relations``).

The first sentence is quoted from the LayoutParser paper (arXiv 2103.15348, CC BY 4.0; its PDF
is in tests/data); the rest are written for these tests, except the last test, which reads the
DPR paper, the spreadsheet and the web page of tests/data as they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering import Source
from rag.embedding import Embedder
from rag.grounding import GroundingChecker
from rag.loading import load_document
from rag.readers.base import ReadOptions
from rag.readers.tables import table_lines
from rag.relations import name_pairings, respectively_pairings, swapped_pairing, table_pairings, table_rows
from rag.sentences import split_sentences

TEST_DATA = Path(__file__).resolve().parent / "data"
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


def test_a_row_named_by_any_of_its_cells_or_a_source_sentence_quoted_is_not_a_swap() -> None:
    # the first column repeats ("Single"), the model names the row; a merged cell leaves "BM25+DPR" as a label
    runs = "\n".join(
        table_lines(
            [
                ["Training", "Model", "NQ", "TriviaQA"],
                ["Single", "BM25", 32.6, 52.4],
                ["Single", "DPR", 41.5, 56.8],
                ["", "BM25+DPR", 39.0, 57.0],
            ]
        )
    )
    assert swapped_pairing("DPR reaches 41.5 on NQ.", [runs]) is None
    assert swapped_pairing("BM25 reaches 41.5 on NQ.", [runs]) is not None  # BM25 has 32.6
    source = EARNINGS + " Net income was $2.1 billion, and cash rose to $15.4 billion."
    for sentence in split_sentences(source):
        assert swapped_pairing(sentence, [source]) is None, sentence
    assert swapped_pairing("Net income was $15.4 billion.", [EARNINGS]) is not None
    assert swapped_pairing("Net income was $15.4 billion.", [EARNINGS, "In 2023 net income was $15.4 billion."]) is None


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


# Columns of a row-written table: a figure of the named row under another column's header.
MODELS = "\n".join(
    table_lines(
        [
            ["Model", "Backbone", "AP", "Params (M)"],
            ["base", "ResNet 50", 72.3, 44],
            ["large", "ResNet 101", 75.1, 63],
        ]
    )
)
REVENUE = "\n".join(table_lines([["Segment", "2022", "2023"], ["Cloud", 5.1, 6.3], ["Devices", 2.4, 2.2]]))
DETECTION = "\n".join(table_lines([["Model", "Box AP", "Mask AP"], ["base", 41.2, 37.1], ["large", 44.0, 39.3]]))
TRIALS = "\n".join(
    table_lines(
        [
            ["Route", "Crew", "Trips completed", "Time to complete"],
            ["North", 5, 1, "1199 sec"],
            ["Island", 3, 4, "1672 sec"],
        ]
    )
)


def test_table_rows_keep_each_figure_with_its_column() -> None:
    base, large = table_rows(MODELS)
    assert (base.label, large.label) == ("base", "large")
    assert [(c.header, [v.text for v in c.values]) for c in base.cells] == [
        ("Backbone", ["50"]),
        ("AP", ["72.3"]),
        ("Params (M)", ["44"]),
    ]
    assert base.cells[0].words == {"resnet"}  # the cell's own words name its column too
    assert table_rows("Segment: Cloud; 2022: 5.1; 2023: 6.3")[0].keys == {"cloud"}  # a lone row: all its label
    assert table_rows("Model: base; Comment: fast\nModel: large; Comment: slow") == []  # no figures in its cells


@pytest.mark.parametrize(
    ("sentence", "source", "swap"),
    [
        ("The base model's AP is 50.", MODELS, ("50", "AP", "Backbone")),
        ("The large model's AP is 63 [1].", MODELS, ("63", "AP", "Params (M)")),
        ("The 2023 revenue of Cloud was 5.1 billion.", REVENUE, ("5.1 billion", "2023", "2022")),
        ("Devices revenue was 2.4 in 2023.", REVENUE, ("2.4", "2023", "2022")),
        # headers that share a word: the word they share names neither
        ("The base model's Box AP is 37.1.", DETECTION, ("37.1", "Box AP", "Mask AP")),
    ],
)
def test_a_figure_under_another_column_of_the_named_row_is_a_swap(
    sentence: str, source: str, swap: tuple[str, str, str]
) -> None:
    found = swapped_pairing(sentence, [source])
    assert found is not None
    assert (found.value, found.said, found.source_says) == swap


@pytest.mark.parametrize(
    ("sentence", "source"),
    [
        # the right column
        ("The base model's AP is 72.3.", MODELS),
        ("The large model has 63 M parameters and an AP of 75.1.", MODELS),
        ("Cloud revenue was 6.3 in 2023.", REVENUE),
        # the other column's own figure is there, or the figure's own cell is named
        ("The base model reaches an AP of 72.3 with a ResNet 50 backbone.", MODELS),
        ("The base model uses ResNet 50 and has the best AP.", MODELS),
        ("In 2023, Cloud revenue was 6.3, up from 5.1.", REVENUE),
        ("Cloud revenue rose from 5.1 to 6.3 in 2023.", REVENUE),
        # no column named, or no row named
        ("The base model scores 50.", MODELS),
        ("An AP of 50 is reported.", MODELS),
        ("Revenue was 5.1 in 2023.", REVENUE),
        # a header word in another clause than the figure
        ("The base model is small at 44, its AP the best of the two.", MODELS),
        # a negation: "not 50" is true
        ("The base model's AP is not 50.", MODELS),
        # prose with the same words, not a table
        ("The base model: AP 72.3, and it uses 50 layers.", MODELS.replace("; ", ", ")),
        # the passage says so outside the table
        ("The base model's AP is 50.", MODELS + "\nAfter tuning, the AP of the base model rose to 50."),
        # the figure's own column is named too, if further from it than another's
        ("The North route's crew took 1199 seconds to complete.", TRIALS),
    ],
)
def test_a_figure_under_its_own_column_or_with_no_column_named_is_not_a_swap(sentence: str, source: str) -> None:
    assert swapped_pairing(sentence, [source]) is None


# "respectively" with names as the paired values.
OFFICES = "Alice and Bob lead the Paris and Rome offices, respectively."
CORPORA = "The encoders BERT and RoBERTa were trained on “Wikipedia” and “CommonCrawl”, respectively [2]."


def test_a_respectively_sentence_pairs_two_name_lists_in_order() -> None:
    assert [(p.subject, p.value) for p in name_pairings(OFFICES)] == [("Alice", "Paris"), ("Bob", "Rome")]
    assert [(p.subject, p.value) for p in name_pairings(CORPORA)] == [
        ("BERT", "Wikipedia"),
        ("RoBERTa", "CommonCrawl"),
    ]
    three = "Alice, Bob, and Carol lead the Paris, the Rome and the Oslo offices, respectively."
    assert [p.value for p in name_pairings(three)] == ["Paris", "Rome", "Oslo"]
    assert name_pairings("Alice, Bob and Carol lead the Paris and Rome offices, respectively.") == []  # 3 to 2
    assert name_pairings("Alice and Bob lead the Paris and Rome offices.") == []  # no "respectively"
    assert name_pairings("Alice and the team lead the Paris and Rome offices, respectively.") == []  # one name list
    assert name_pairings(LAYOUTPARSER.split(". ")[1]) == []  # figures: respectively_pairings has it


@pytest.mark.parametrize(
    ("sentence", "source", "swap"),
    [
        ("Alice leads the Rome office.", OFFICES, ("Rome", "Alice", "Bob")),
        ("The Paris office is led by Bob [1].", OFFICES, ("Paris", "Bob", "Alice")),
        ("RoBERTa was trained on Wikipedia.", CORPORA, ("Wikipedia", "RoBERTa", "BERT")),
    ],
)
def test_a_name_given_for_another_item_is_a_swap(sentence: str, source: str, swap: tuple[str, str, str]) -> None:
    found = swapped_pairing(sentence, [source])
    assert found is not None
    assert (found.value, found.said, found.source_says) == swap


@pytest.mark.parametrize(
    ("sentence", "source"),
    [
        ("Alice leads the Paris office.", OFFICES),
        ("Bob leads the Rome office [1].", OFFICES),
        ("Alice leads the Paris office and Bob the Rome office.", OFFICES),
        ("BERT was trained on Wikipedia.", CORPORA),
        ("The Rome office is one of two.", OFFICES),  # names no item
        ("Alice leads an office.", OFFICES),  # names no paired name
        ("Alice does not lead the Rome office.", OFFICES),  # a negation: true
        ("Alice works with the Paris office and the Rome office.", OFFICES),  # her own name is there too
        ("Alice moved to Rome.", OFFICES + " In 2024 Alice moved to Rome."),  # the source says so elsewhere
        ("Alice leads the Rome office.", "Alice and Bob visited the Paris and Rome offices."),  # no pairing
        ("Alice leads the Rome office.", "Alice, Bob and Carol lead the Paris and Rome offices, respectively."),
    ],
)
def test_a_name_with_its_own_item_or_no_pairing_is_not_a_swap(sentence: str, source: str) -> None:
    assert swapped_pairing(sentence, [source]) is None


def test_another_cited_source_that_says_so_cancels_a_swap() -> None:
    tuned = "After tuning, the AP of the base model rose to 50."
    assert swapped_pairing("The base model's AP is 50 [1][2].", [MODELS, tuned]) is None
    assert swapped_pairing("The base model's AP is 50 [1][2].", [MODELS, "The base model is fast."]) is not None
    moved = "In 2024 Alice moved to Rome."
    assert swapped_pairing("Alice moved to Rome [1][2].", [OFFICES, moved]) is None
    assert swapped_pairing("Alice moved to Rome [1][2].", [OFFICES, "Carol moved to Rome."]) is not None


def test_the_checker_marks_a_swapped_column_and_a_swapped_name_with_their_reasons(embedder: Embedder) -> None:
    checker = GroundingChecker(embedder, threshold=0.45)
    table = [Source(1, "docs/models.xlsx", "models.xlsx", 1, 0.8, MODELS)]
    wrong, right = checker.check(["The base model's AP is 50 [1].", "The base model's AP is 72.3 [1]."], table, "")
    assert not wrong.supported
    assert wrong.reason == "source [1] gives 50 for “Backbone”, not “AP”"
    assert right.supported, right.reason
    offices = [Source(1, "docs/staff.md", "staff.md", 1, 0.8, OFFICES + " Both offices opened in 2019.")]
    question = "Who leads the Rome office?"
    wrong, right = checker.check(
        ["Alice leads the Rome office [1].", "Bob leads the Rome office [1]."], offices, question
    )
    assert not wrong.supported
    assert wrong.reason == "source [1] gives Rome for “Bob”, not “Alice”"
    assert right.supported, right.reason


# Real files: the DPR paper (tests/data/pdfs, see its README) and the invented spreadsheet and web page.
def _pages(path: Path) -> list[str]:
    return [page.text for page in load_document(path, options=ReadOptions(ocr="off")).pages]


def test_real_documents_pair_names_and_columns_and_their_own_sentences_are_no_swap() -> None:
    paper = _pages(TEST_DATA / "pdfs" / "multi-column.pdf")
    budget, ferry = _pages(TEST_DATA / "formats" / "budget.xlsx"), _pages(TEST_DATA / "formats" / "ferry.html")
    for text in [*paper, *budget, *ferry]:
        for sentence in split_sentences(text):
            assert swapped_pairing(sentence, [text]) is None, sentence
    # "REALMWiki and REALMNews are the same model but pretrained on Wikipedia and CC-News, respectively."
    [realm] = [text for text in paper if "REALMNews are the same model" in text]
    found = swapped_pairing("REALMNews was pretrained on Wikipedia [1].", [realm])
    assert found is not None
    assert (found.value, found.said, found.source_says) == ("Wikipedia", "REALMNews", "REALMWiki")
    assert swapped_pairing("REALMWiki was pretrained on Wikipedia [1].", [realm]) is None
    people = budget[0]  # Name: Grace Hopper; Born: 1906; Team: Compilers; Salary: 6100; ...
    found = swapped_pairing("Grace Hopper's salary is 1906.", [people])
    assert found is not None
    assert (found.value, found.said, found.source_says) == ("1906", "Salary", "Born")
    assert swapped_pairing("Grace Hopper's salary is 6100.", [people]) is None
    assert swapped_pairing("Grace Hopper, born in 1906, earns a salary of 6100.", [people]) is None
    assert swapped_pairing("The salary of 1906 is not listed.", [people]) is None


@pytest.mark.parametrize(
    ("sentence", "question", "swap"),
    [
        # the answer's sentence names no row: it speaks of the one the question names
        ("The pilotage fee is 120.00 [1].", "What are the fees for a passenger ferry?", ("120.00", "Passenger ferry")),
        ("It uses ResNet 50.", "Which backbone does the large model use?", ("50", "large model")),
        # its own row's figure, or a row named in the sentence, or no single row asked about
        ("The pilotage fee is 145.00 [1].", "What are the fees for a passenger ferry?", None),
        ("The cargo barge pays 120.00 [1].", "What are the fees for a passenger ferry?", None),
        ("The pilotage fee is 120.00 [1].", "Which fees do the passenger ferry and the cargo barge pay?", None),
        ("The pilotage fee is 120.00 [1].", "Which vessel pays the highest pilotage fee?", None),
        ("It uses ResNet 50.", "", None),
    ],
)
def test_a_sentence_naming_no_row_is_read_as_about_the_row_the_question_names(
    sentence: str, question: str, swap: tuple[str, str] | None
) -> None:
    fees = "\n".join(
        table_lines(
            [
                ["Vessel class", "Berth fee per day", "Pilotage fee"],
                ["Cargo barge", "95.00", "120.00"],
                ["Passenger ferry", "130.00", "145.00"],
            ]
        )
    )
    source = LAYOUTPARSER if "ResNet" in sentence else fees
    found = swapped_pairing(sentence, [source], question=question)
    assert (found and (found.value, found.said)) == (swap or None)
