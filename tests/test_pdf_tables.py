"""Tables in PDFs: a cell value lands in the same chunk as its row label and column header.

harbour-fees.pdf is a born-digital table drawn by fpdf2 (tests/data/ocr/make_fixtures.py):
a header row, twelve rows and a paragraph before and after. The layouts below are what pypdf's
layout mode writes for such pages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pypdf import PdfReader

from rag.loading import load_document
from rag.pipeline import build_chunker
from rag.readers.base import normalise_text
from rag.readers.pdf_tables import find_tables, may_hold_table, rewrite_tables
from rag.records import LoadedDocument, Page

FEES = Path(__file__).resolve().parent / "data" / "ocr" / "harbour-fees.pdf"
ROW = "Vessel class: Cargo barge; Berth fee per day: 95.00; Pilotage fee: 120.00; Waste levy: 14.50; Winter rate: 71.25"


def words(text: str) -> set[str]:
    return set(text.replace(";", " ").replace(":", " ").split())


def test_table_rows_carry_their_headers_and_the_prose_stays() -> None:
    document = load_document(FEES)

    [page] = document.pages
    lines = page.text.split("\n")
    assert ROW in lines
    assert sum(1 for line in lines if line.startswith("Vessel class: ")) == 12
    assert lines[0].startswith("Saltmere Harbour: schedule of fees The harbour board sets these fees")
    assert lines[-1].startswith("Pilotage is compulsory for vessels over twenty metres.")
    plain = normalise_text(PdfReader(FEES).pages[0].extract_text(), join_lines=True)
    assert words(plain) <= words(page.text)  # nothing of the page is lost


HEADER = ["Berth fee per day", "Pilotage fee", "Waste levy", "Winter rate"]
ROWS = {  # row label: values under HEADER, as make_fixtures.py drew them
    "Rowing boat": ["4.50", "none", "0.80", "3.00"],
    "Fishing smack": ["18.00", "35.00", "2.60", "12.50"],
    "Pilot cutter": ["26.00", "exempt", "3.40", "19.00"],
    "Cargo barge": ["95.00", "120.00", "14.50", "71.25"],
    "Bulk carrier": ["410.00", "380.00", "66.00", "305.00"],
    "Research vessel": ["58.30", "62.00", "5.90", "41.10"],
    "Tall ship": ["64.00", "80.00", "7.70", "44.80"],
}


@pytest.mark.parametrize(("size", "overlap"), [(200, 30), (128, 30)])
def test_each_value_is_chunked_with_its_row_label_and_column_header(settings, embedder, size, overlap) -> None:
    """At the default chunk size and a smaller one. Much smaller chunks (64 tokens) can still cut
    a 38-token row: the chunker ends a chunk at a line only within its last tenth."""
    chunker = build_chunker(settings.model_copy(update={"chunk_size": size, "chunk_overlap": overlap}), embedder)
    document = load_document(FEES)
    plain = normalise_text(PdfReader(FEES).pages[0].extract_text(), join_lines=True)
    as_plain = dataclasses.replace(document, pages=[Page(text=plain, number=1)])

    def kept(doc: LoadedDocument) -> int:
        chunks = [chunk.text for chunk in chunker.split_document(doc)]
        assert len(chunks) >= 2
        return sum(
            any(label in chunk and header in chunk and value in chunk for chunk in chunks)
            for label, values in ROWS.items()
            for header, value in zip(HEADER, values, strict=True)
        )

    assert kept(document) == 4 * len(ROWS)
    assert kept(as_plain) < 4 * len(ROWS)  # pypdf's plain text leaves values far from their header


JUSTIFIED = """\
In  LayoutParser,  a  layout  model  takes  a  document  image  as  an  input  and
generates a list of rectangular boxes for the target content regions. Diﬀerent
name  and  model  name  lp://<dataset-name>/<model-architecture-name>.
"""

CODE = """\
   1  import layoutparser   as   lp
   2  image   =   cv2 . imread ("image_file") # load images
   3  model   =   lp. Detectron2LayoutModel (
   4            "lp://PubLayNet/faster_rcnn_R_50_FPN_3x/config")
   5  layout   =   model . detect ( image )
"""

TWO_COLUMNS = """\
negative passages for each question.                   Dataset              Train      Dev     Test
The trick of in-batch negatives has been used in       Natural Questions    79,168   8,757    3,610
the full batch setting (Yih et al.,2011) and more      TriviaQA             78,785   8,837   11,313
recently for mini-batch (Henderson et al.,2017;        WebQuestions          3,417     361    2,032
Gillick et al.,2019). It has been shown to be an       SQuAD                78,713   8,886   10,570
"""
TWO_COLUMNS_PLAIN = (
    "negative passages for each question. The trick of in-batch negatives has been used in the full batch "
    "setting (Yih et al., 2011) and more recently for mini-batch (Henderson et al., 2017; Gillick et al., 2019). "
    "It has been shown to be an effective strategy. Dataset Train Dev Test Natural Questions 79,168 8,757 3,610 "
    "TriviaQA 78,785 8,837 11,313 WebQuestions 3,417 361 2,032 SQuAD 78,713 8,886 10,570 Table 1: datasets."
)


def test_prose_and_code_with_wide_gaps_are_not_tables() -> None:
    assert find_tables(JUSTIFIED) == []
    assert find_tables(CODE) == []


def test_a_table_beside_a_prose_column_keeps_the_prose() -> None:
    text = rewrite_tables(TWO_COLUMNS_PLAIN, TWO_COLUMNS)

    assert "Dataset: TriviaQA; Train: 78,785; Dev: 8,837; Test: 11,313" in text.split("\n")
    assert text.startswith("negative passages for each question. The trick of in-batch negatives")
    assert text.split("\n")[-1] == "Table 1: datasets."
    assert words(TWO_COLUMNS_PLAIN) <= words(text)


def test_table_words_not_found_together_are_added_after_the_page() -> None:
    plain = "Fees are listed below. Vessel class Berth Pilotage and then something else entirely."
    layout = "\n".join(
        [
            "Vessel class       Berth     Pilotage",
            "Rowing boat         4.50         none",
            "Fishing smack      18.00        35.00",
            "Cargo barge        95.00       120.00",
        ]
    )

    text = rewrite_tables(plain, layout)

    assert text.startswith(plain + "\n")  # the page text is kept whole
    assert text.endswith("Vessel class: Cargo barge; Berth: 95.00; Pilotage: 120.00")


def test_only_pages_that_may_hold_a_table_pay_for_layout_mode() -> None:
    assert may_hold_table("Table 2: results")
    assert may_hold_table("a 1 2\nb 3 4\nc 5 6")
    assert not may_hold_table("Plain prose about 3 ships.\nAnd another line.\nA third line of 2024.")
