"""Word, PowerPoint, spreadsheets and web pages: real files made by the libraries themselves.

The fixtures in tests/data/formats/ come from make_fixtures.py there (ferry.html is written by
hand); source and licence in tests/data/README.md.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rag.loading import SUPPORTED_SUFFIXES, LoadError, load_document
from rag.pipeline import Ingestor
from rag.readers.tables import table_lines
from rag.records import Outcome
from rag.store import DocumentStore
from rag.uploads import UploadError, stage_upload

FORMATS = Path(__file__).resolve().parent / "data" / "formats"
PDFS = Path(__file__).resolve().parent / "data" / "pdfs"


def lines_of(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


# Word -------------------------------------------------------------------------------------


def test_word_document_keeps_headings_paragraphs_and_table_rows_in_order() -> None:
    document = load_document(FORMATS / "report.docx")

    [page] = document.pages
    assert (page.number, document.page_total) == (None, 1)
    lines = lines_of(page.text)
    assert lines[0] == "# Lighthouse Maintenance Report"
    assert "## Inspection results" in lines
    assert "- new storm shutters at Cape Wrath\n- a spare lamp for Skerry Point\n- paint for" in page.text
    row = "Lighthouse: Skerry Point; Last inspection: 2024-03-14; Lamp hours: 9,870; Status: Lamp flickers at dusk"
    assert row in lines
    # document order: heading, then the table, then the paragraph written after it
    order = [lines.index("## Inspection results"), lines.index(row), len(lines) - 1]
    assert order == sorted(order)
    assert lines[-1].startswith("The next inspection is planned for September")
    assert "Lighthouse\nLast inspection" not in page.text  # the header row is not a line of its own


# PowerPoint -------------------------------------------------------------------------------


def test_slides_are_pages_numbered_as_the_slides_with_tables_and_notes() -> None:
    document = load_document(FORMATS / "deck.pptx")

    assert document.page_total == 4
    assert [page.number for page in document.pages] == [1, 2, 4]  # slide 3 is blank
    first, bullets, table = (page.text for page in document.pages)
    assert first == "# Orchard Planting Plan\n\nSpring season review for the cooperative"
    assert lines_of(bullets) == [
        "# Soil and rootstock",
        "Plant the pear trees on quince rootstock in the clay field",
        "Apples go on the sandy slope by the river",
        "Notes: Remind the growers that the clay field floods in February.",
    ]
    assert "Field: River slope; Variety: Cox apple; Trees: 95" in lines_of(table)
    assert lines_of(table)[-1] == "Notes: The river slope count is still an estimate."
    assert "Notes:" not in first


def test_presentation_without_text_is_refused(tmp_path: Path) -> None:
    from pptx import Presentation

    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6])
    deck.slides.add_slide(deck.slide_layouts[6])
    deck.save(tmp_path / "blank.pptx")

    with pytest.raises(LoadError, match="the presentation holds no text on any of its 2 slides"):
        load_document(tmp_path / "blank.pptx")


# Spreadsheets -----------------------------------------------------------------------------


def test_workbook_sheets_are_pages_and_every_row_carries_its_headers() -> None:
    document = load_document(FORMATS / "budget.xlsx")

    assert document.page_total == 3
    assert [page.number for page in document.pages] == [1, 3]  # sheet 2 ("Notes") is empty
    staff, totals = (lines_of(page.text) for page in document.pages)
    assert staff[:2] == ["# Staff", "Engineering staff, spring"]  # the title row above the header
    assert "Name: Ada Lovelace; Born: 1815; Team: Analytical Engine; Salary: 5200; Started: 2021-03-01" in staff
    assert len(staff) == 5  # title, sheet name and three people: the empty row and column are gone
    assert not any("None" in line or ";;" in line for line in staff)
    # formulas come as the values saved with them
    assert totals == [
        "# Totals",
        "Measure: Total salary; Value: 17100",
        "Measure: Average birth year; Value: 1877.66666666667",
    ]
    assert "SUM(" not in document.pages[1].text


def test_workbook_made_with_openpyxl_reads_too(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Rivers"
    sheet.append(["River", "Length (km)", "Mouth"])
    sheet.append(["Danube", 2850, "Black Sea"])
    sheet.append(["Rhine", 1230.5, "North Sea"])
    sheet.append(["Sum", "=B2+B3", None])  # never calculated: no saved value, left out
    workbook.save(tmp_path / "rivers.xlsx")

    [page] = load_document(tmp_path / "rivers.xlsx").pages

    assert lines_of(page.text) == [
        "# Rivers",
        "River: Danube; Length (km): 2850; Mouth: Black Sea",
        "River: Rhine; Length (km): 1230.5; Mouth: North Sea",
        "River: Sum",
    ]


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        ("Name;Born;City\nAda Lovelace;1815;London\n\nGrace Hopper;1906;New York\n", "utf-8-sig"),
        ('Name,Born,City\r\nAda Lovelace,1815,London\r\nGrace Hopper,1906,"New York"\r\n', "utf-8"),
        ("Name\tBorn\tCity\nAda Lovelace\t1815\tLondon\nGrace Hopper\t1906\tNew York\n", "utf-16"),
        ("Name|Born|City\nAda Lovelace|1815|London\nGrace Hopper|1906|New York\n", "cp1252"),
    ],
    ids=["semicolon-bom", "comma-crlf", "tab-utf16", "bar-cp1252"],
)
def test_csv_rows_carry_their_headers(tmp_path: Path, content: str, encoding: str) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(content.encode(encoding))

    document = load_document(path)

    assert [page.number for page in document.pages] == [None]
    assert lines_of(document.pages[0].text) == [
        "Name: Ada Lovelace; Born: 1815; City: London",
        "Name: Grace Hopper; Born: 1906; City: New York",
    ]


def test_csv_in_latin_1_keeps_its_accents(tmp_path: Path) -> None:
    path = tmp_path / "menu.csv"
    path.write_bytes("Plat,Prix\nCafé crème,3,50\nCrêpe,4\n".encode("latin-1"))

    text = load_document(path).pages[0].text

    assert "Plat: Café crème; Prix: 3" in text
    assert "Plat: Crêpe; Prix: 4" in text


def test_table_lines_matrix_label_and_single_row() -> None:
    assert table_lines([["", "2019", "2020"], ["Revenue", 10, 12.5], [None, None, None]]) == [
        "Revenue; 2019: 10; 2020: 12.5"
    ]
    assert table_lines([["only", "a header"]]) == ["only; a header"]
    assert table_lines([]) == []


# Web pages --------------------------------------------------------------------------------


def test_web_page_keeps_title_main_text_and_table_rows_without_boilerplate() -> None:
    document = load_document(FORMATS / "ferry.html")

    [page] = document.pages
    assert (page.number, document.page_total) == (None, 1)
    lines = lines_of(page.text)
    assert lines[0] == "# Harbour Ferry Timetable"
    assert "## Winter service" in lines
    row = "Route: Pier 4 to Saltmarsh; First departure: 08:15; Last departure: 19:45; Crossing time: 32 minutes"
    assert row in lines
    assert lines[-1].startswith("Bicycles travel free of charge")
    for boilerplate in ("script text", "UA-SCRIPT-SECRET", "font-family", "Careers", "Log in", "newsletter", "©"):
        assert boilerplate not in page.text, boilerplate


def test_web_page_in_its_declared_charset(tmp_path: Path) -> None:
    html = (
        '<html><head><meta charset="iso-8859-1"><title>Menu</title></head><body><article>'
        "<p>Le café crème du matin est servi dès sept heures, avec une tartine et de la confiture.</p>"
        "</article></body></html>"
    )
    path = tmp_path / "menu.htm"
    path.write_bytes(html.encode("latin-1"))

    assert "Le café crème du matin est servi dès sept heures" in load_document(path).pages[0].text


# Bad input --------------------------------------------------------------------------------


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of unreadable file of the new formats, with the words its message must contain."""
    report = (FORMATS / "report.docx").read_bytes()
    workbook = (FORMATS / "budget.xlsx").read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, content: bytes, expected: str) -> None:
        path = tmp_path / name
        path.write_bytes(content)
        cases[name] = (path, expected)

    add("random.docx", bytes(range(1, 256)) * 4, "not a Word document (.docx): it may be corrupt or misnamed")
    add("truncated.docx", report[: len(report) // 2], "not a Word document (.docx): it may be corrupt or misnamed")
    add("zip.docx", _zip({"hello.txt": "hi"}), "not a Word document (.docx): it may be corrupt or misnamed")
    add("random.pptx", b"PK\x03\x04 not really", "not a PowerPoint presentation (.pptx): it may be corrupt")
    add("truncated.xlsx", workbook[:2000], "not an Excel workbook (.xlsx): it may be corrupt or misnamed")
    add(
        "paper.docx",
        (PDFS / "multi-column-2p.pdf").read_bytes(),
        "not a Word document (.docx): it may be corrupt or misnamed (it looks like a PDF document (.pdf))",
    )
    add("sheet.docx", workbook, "(it looks like an Excel workbook (.xlsx))")
    add("report.xlsx", report, "not an Excel workbook (.xlsx): it may be corrupt or misnamed (it looks like a Word")
    add("report.pdf", report, "not a PDF file (no %PDF header); it may be corrupt or misnamed (it looks like a Word")
    cases["encrypted.docx"] = (
        FORMATS / "encrypted.docx",
        "the document is encrypted with a password; remove the password and ingest it again",
    )
    cases["encrypted.xlsx"] = (
        FORMATS / "encrypted.xlsx",
        "the workbook is encrypted with a password; remove the password and ingest it again",
    )
    cases["empty-sheets.xlsx"] = (FORMATS / "empty-sheets.xlsx", "the workbook has no cells with values in any of")
    add("empty.csv", b";;;\n;;\n", "the CSV file has no cells with values")
    add("image.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "the file looks binary")
    add("image.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "not a web page (.html): it looks like a PNG")
    add("binary.htm", b"<html>\x00\x01\x02" + bytes(300), "not a web page (.html): the file looks binary")
    add(
        "scripts.html",
        b"<html><head><script>var a = 1;</script><style>p {}</style></head><body></body></html>",
        "the web page has no main text to extract",
    )
    add("empty.docx", b"", "the file is empty (0 bytes)")
    for legacy in ("report.doc", "budget.xls", "deck.ppt"):
        add(legacy, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), f"unsupported file type '{Path(legacy).suffix}'")
    return cases


def _zip(files: dict[str, str]) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


BAD_NAMES = [
    "random.docx",
    "truncated.docx",
    "zip.docx",
    "random.pptx",
    "truncated.xlsx",
    "paper.docx",
    "sheet.docx",
    "report.xlsx",
    "report.pdf",
    "encrypted.docx",
    "encrypted.xlsx",
    "empty-sheets.xlsx",
    "empty.csv",
    "image.csv",
    "image.html",
    "binary.htm",
    "scripts.html",
    "empty.docx",
    "report.doc",
    "budget.xls",
    "deck.ppt",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_each_bad_file_gets_a_specific_message(tmp_path: Path, name: str) -> None:
    path, expected = bad_files(tmp_path)[name]

    with pytest.raises(LoadError) as caught:
        load_document(path)

    assert expected in str(caught.value)


def test_encrypted_fixtures_are_real_ole_containers() -> None:
    for name in ("encrypted.docx", "encrypted.xlsx"):
        assert (FORMATS / name).read_bytes()[:4] == b"\xd0\xcf\x11\xe0"


def test_upload_page_accepts_the_new_types_but_not_the_legacy_ones(tmp_path: Path) -> None:
    assert {".docx", ".pptx", ".xlsx", ".csv", ".html", ".htm"} <= SUPPORTED_SUFFIXES
    assert not {".doc", ".xls", ".ppt"} & SUPPORTED_SUFFIXES

    staged = stage_upload("report.docx", (FORMATS / "report.docx").read_bytes(), tmp_path, max_bytes=10**7)
    assert staged.staging.is_file()
    with pytest.raises(UploadError, match=r"unsupported file type '\.doc'"):
        stage_upload("report.doc", b"\xd0\xcf\x11\xe0", tmp_path, max_bytes=10**7)


# End to end -------------------------------------------------------------------------------

QUESTIONS = {
    "report.docx": ("When was Skerry Point last inspected?", "Lighthouse: Skerry Point; Last inspection: 2024-03-14"),
    "deck.pptx": ("How many Cox apple trees are on the river slope?", "Variety: Cox apple; Trees: 95"),
    "budget.xlsx": ("When was Grace Hopper born?", "Name: Grace Hopper; Born: 1906"),
    "people.csv": ("Which city did Mary Somerville live in?", "Name: Mary Somerville; City: Edinburgh"),
    "ferry.html": ("When does the first ferry leave for Saltmarsh?", "Route: Pier 4 to Saltmarsh; First departure"),
}


@pytest.mark.slow
def test_each_format_is_ingested_and_found_by_a_question(
    tmp_path: Path, ingestor: Ingestor, store: DocumentStore, embedder
) -> None:
    paths = [FORMATS / name for name in QUESTIONS if name != "people.csv"]
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("Name,City\nMary Somerville,Edinburgh\nCaroline Herschel,Slough\n", encoding="utf-8")
    paths.append(csv_path)

    report = ingestor.ingest(paths)

    outcomes = {result.path.name: (result.outcome, result.pages) for result in report.files}
    assert outcomes == {
        "report.docx": (Outcome.ADDED, 1),
        "deck.pptx": (Outcome.ADDED, 4),
        "budget.xlsx": (Outcome.ADDED, 3),
        "ferry.html": (Outcome.ADDED, 1),
        "people.csv": (Outcome.ADDED, 1),
    }
    listed = {document.title: document.pages for document in store.list_documents()}
    assert listed == {name: pages for name, (_, pages) in outcomes.items()}
    for name, (question, expected) in QUESTIONS.items():
        hits = store.search(question, embedder.embed_query(question), k=3)
        assert any(hit.title == name and expected in hit.text for hit in hits), (name, [h.text for h in hits])
    deck_hits = store.search("Cox apple trees river slope", embedder.embed_query("Cox apple trees river slope"), k=1)
    assert deck_hits[0].page == 4  # the slide number is the cited page

    again = ingestor.ingest(paths)
    assert {result.outcome for result in again.files} == {Outcome.UNCHANGED}

    uploaded = ingestor.ingest_upload("orchard.pptx", (FORMATS / "deck.pptx").read_bytes())  # the upload page's path
    assert (uploaded.outcome, uploaded.pages, uploaded.source) == (Outcome.ADDED, 4, "orchard.pptx")
    refused = ingestor.ingest_upload("orchard.pptx", (FORMATS / "encrypted.docx").read_bytes())
    assert refused.outcome is Outcome.FAILED
    assert refused.error.startswith("the presentation is encrypted with a password; remove the password")
    stored = {document.source: document.pages for document in store.list_documents()}
    assert stored["orchard.pptx"] == 4  # the stored version is kept
