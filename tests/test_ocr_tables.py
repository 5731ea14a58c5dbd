"""Tables on OCR'd pages: each row is written with its label and column headers.

harbour-fees-scan.pdf is harbour-fees.pdf (a born-digital table, tests/data/ocr/make_fixtures.py)
rendered, turned by 0.4 degrees, speckled and saved as a JPEG page with no text layer: a table
that exists only as a picture. The boxes in the geometry tests below are laid out as the OCR
engine found them on a real scanned table (a usability study's results: a header wrapped over
three lines, a cell on two lines), with the words changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering import Source
from rag.embedding import Embedder
from rag.grounding import GroundingChecker
from rag.loading import load_document
from rag.readers.base import normalise_text
from rag.readers.ocr_tables import TextBox, page_text

SCAN = Path(__file__).resolve().parent / "data" / "ocr" / "harbour-fees-scan.pdf"
ROW = "Vessel class: Cargo barge; Berth fee per day: 95.00; Pilotage fee: 120.00; Waste levy: 14.50; Winter rate: 71.25"


@pytest.fixture(scope="module")
def scanned_page() -> str:
    document = load_document(SCAN)
    assert document.ocr_pages == (1,)
    [page] = document.pages
    return page.text


@pytest.mark.slow
def test_a_scanned_table_is_read_row_by_row_between_its_paragraphs(scanned_page: str) -> None:
    lines = scanned_page.split("\n")
    assert ROW in lines
    assert sum(1 for line in lines if line.startswith("Vessel class: ")) == 12
    assert lines[0].startswith("Saltmere Harbour: schedule of fees The harbour board sets these fees")
    assert lines[-1].startswith("Pilotage is compulsory for vessels over twenty metres.")
    assert len(lines) == 14  # the paragraphs stay whole: nothing of them is taken for the table


@pytest.mark.slow
def test_a_figure_from_another_row_or_column_of_a_scanned_table_is_marked(
    scanned_page: str, embedder: Embedder
) -> None:
    """The trust gap this closes: read as one run of cells, the scan let a wrong row's figure pass
    and marked the right one; read as rows, each figure keeps its row and column."""
    checker = GroundingChecker(embedder, threshold=0.45)
    question = "What is the berth fee per day for a cargo barge?"
    sources = [
        Source(n=1, text=scanned_page, source="harbour-fees-scan.pdf", title="harbour-fees-scan.pdf", page=1, score=0.8)
    ]
    right, other_row, other_column = checker.check(
        [
            "The berth fee per day for a cargo barge is 95.00 [1].",
            "The berth fee per day for a cargo barge is 130.00 [1].",
            "The winter rate for a tall ship is 7.70 [1].",
        ],
        sources,
        question,
    )
    assert right.supported
    assert not other_row.supported and "“Passenger ferry”, not “Cargo barge”" in other_row.reason
    assert not other_column.supported and "“Waste levy”, not “Winter rate”" in other_column.reason


def box(left: float, top: float, right: float, bottom: float, text: str) -> TextBox:
    return TextBox(left, top, right, bottom, text)


# A results table as the engine saw it: the headers stand at different heights and wrap over up
# to three lines, a title reaches over two columns, and one row has a second line of cells.
RESULTS = [
    box(2938, 114, 3238, 215, "Results"),
    box(1881, 172, 2170, 273, "Trials"),
    box(173, 226, 555, 335, "Ferry"),
    box(1324, 225, 1615, 329, "Trips"),
    box(769, 287, 1249, 387, "Crew"),
    box(1881, 283, 2379, 387, "cancelled/"),
    box(173, 347, 541, 453, "Route"),
    box(1324, 339, 1771, 450, "Completed"),
    box(2567, 329, 2942, 432, "On time"),
    box(3204, 325, 3524, 424, "Delay"),
    box(1877, 397, 2352, 498, "delayed"),
    box(3171, 455, 3557, 562, "average"),
    box(171, 663, 375, 760, "North"),
    box(981, 669, 1052, 758, "5"),
    box(1540, 669, 1609, 760, "1"),
    box(2128, 671, 2199, 756, "4"),
    box(2554, 669, 2955, 760, "34.5%, n=1"),
    box(3119, 665, 3611, 762, "1199 sec, n=1"),
    box(171, 865, 564, 960, "Harbour Loop"),
    box(981, 868, 1052, 958, "5"),
    box(1538, 868, 1611, 958, "2"),
    box(2124, 868, 2197, 958, "3"),
    box(2566, 870, 2943, 956, "98.3% n=2"),
    box(3119, 865, 3611, 962, "1716 sec, n=3"),
    box(2529, 1059, 2980, 1157, "(97.7%, n=3)"),
    box(3096, 1060, 3636, 1157, "(1934 sec, n=2)"),
    box(177, 1264, 514, 1357, "Island"),
    box(979, 1262, 1050, 1353, "5"),
    box(1538, 1264, 1609, 1351, "4"),
    box(2128, 1264, 2199, 1355, "1"),
    box(2552, 1262, 2957, 1353, "98.3%, n=4"),
    box(3090, 1266, 3641, 1351, "1672.1 sec, n=4"),
    box(169, 1456, 485, 1561, "Estuary"),
    box(981, 1464, 1052, 1553, "3"),
    box(1536, 1464, 1607, 1553, "3"),
    box(2128, 1464, 2197, 1555, "0"),
    box(2552, 1462, 2955, 1555, "95.4%, n=3"),
    box(3121, 1464, 3611, 1555, "1416 sec, n=3"),
]


def test_a_header_wrapped_over_lines_heads_its_column_and_a_two_line_cell_stays_in_its_row() -> None:
    lines = page_text(RESULTS).split("\n")
    assert lines[0] == "Results"  # the title over two columns is no column's header
    assert lines[1:] == [
        "Ferry Route: North; Crew: 5; Trips Completed: 1; Trials cancelled/ delayed: 4; On time: 34.5%, n=1; "
        "Delay average: 1199 sec, n=1",
        "Ferry Route: Harbour Loop; Crew: 5; Trips Completed: 2; Trials cancelled/ delayed: 3; "
        "On time: 98.3% n=2 (97.7%, n=3); Delay average: 1716 sec, n=3 (1934 sec, n=2)",
        "Ferry Route: Island; Crew: 5; Trips Completed: 4; Trials cancelled/ delayed: 1; On time: 98.3%, n=4; "
        "Delay average: 1672.1 sec, n=4",
        "Ferry Route: Estuary; Crew: 3; Trips Completed: 3; Trials cancelled/ delayed: 0; On time: 95.4%, n=3; "
        "Delay average: 1416 sec, n=3",
    ]


def test_a_slightly_turned_table_still_reads_by_rows() -> None:
    """A scan turned by about a degree: each row's right end sits 40 pixels higher than its left."""
    turned = [box(b.left, b.top - b.left / 90, b.right, b.bottom - b.left / 90, b.text) for b in RESULTS]
    assert page_text(turned) == page_text(RESULTS)


def test_prose_pages_read_as_before() -> None:
    """Lines of prose, and two or three columns of it side by side, are no table: the page reads
    as the engine's lines joined, as it did before tables were looked for."""
    prose = [box(100, 100 + 50 * i, 1500, 140 + 50 * i, f"Line {i} of a paragraph about the harbour") for i in range(8)]
    columns = [
        box(100 + 520 * c, 100 + 50 * i, 580 + 520 * c, 140 + 50 * i, f"column {c} line {i} of a newspaper story")
        for i in range(8)
        for c in range(3)
    ]
    for boxes in (prose, columns):
        assert page_text(boxes) == normalise_text("\n".join(b.text for b in boxes), join_lines=True)


def test_a_table_of_years_takes_them_as_its_header() -> None:
    """A year heading a column ('2023') is a header, not a figure of the first row."""
    rows = [["Item", "2022", "2023"], ["Fees", "4.1", "4.6"], ["Levies", "0.9", "1.2"], ["Grants", "2.0", "2.4"]]
    boxes = [
        box(100 + 400 * c, 100 + 60 * r, 300 + 400 * c, 140 + 60 * r, text)
        for r, row in enumerate(rows)
        for c, text in enumerate(row)
    ]
    assert page_text(boxes).split("\n") == [
        "Item: Fees; 2022: 4.1; 2023: 4.6",
        "Item: Levies; 2022: 0.9; 2023: 1.2",
        "Item: Grants; 2022: 2.0; 2023: 2.4",
    ]
