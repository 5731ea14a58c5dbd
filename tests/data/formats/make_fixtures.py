"""Write the Office fixtures of tests/test_formats.py with the libraries that real users' tools use.

Run from the repository root: ``.venv/bin/python tests/data/formats/make_fixtures.py``.

- report.docx (python-docx): title, headings, a list, a table, a paragraph after it.
- deck.pptx (python-pptx): a title slide, a bullet slide with notes, a blank slide, a table slide.
- budget.xlsx (XlsxWriter, which python-pptx installs): formulas saved with their calculated
  values, as Excel saves them (openpyxl writes formulas without values), an empty sheet, a
  title row above the header row, an empty column and an empty row.
- empty-sheets.xlsx (openpyxl): two sheets without a value.
- encrypted.docx, encrypted.xlsx: report.docx and budget.xlsx locked with the password
  ``s3cret`` by msoffcrypto-tool (Office's own "agile" encryption). msoffcrypto-tool is only
  needed here, not by the product or the tests: ``pip install msoffcrypto-tool``. Without it
  these two files are left as they are.

ferry.html is not generated: it is a page written by hand with navigation, scripts, a sidebar
and a footer around its article.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSWORD = "s3cret"


def make_docx(path: Path) -> None:
    from docx import Document

    document = Document()
    document.add_heading("Lighthouse Maintenance Report", level=0)
    document.add_paragraph(
        "This report covers the spring inspection of the three lighthouses on the northern coast. "
        "Each tower was climbed, its lamp was tested and its fog signal was sounded."
    )
    document.add_heading("Findings", level=1)
    document.add_paragraph("The keepers asked for three things before the winter storms:")
    for item in ("new storm shutters at Cape Wrath", "a spare lamp for Skerry Point", "paint for Gannet Rock"):
        document.add_paragraph(item, style="List Bullet")
    document.add_heading("Inspection results", level=2)
    rows = [
        ("Lighthouse", "Last inspection", "Lamp hours", "Status"),
        ("Cape Wrath", "2024-03-12", "11,240", "Shutters rusted"),
        ("Skerry Point", "2024-03-14", "9,870", "Lamp flickers at dusk"),
        ("Gannet Rock", "2024-03-19", "15,015", "Sound"),
    ]
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    table.style = "Table Grid"
    for row, values in zip(table.rows, rows, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_paragraph("The next inspection is planned for September, after the gannet breeding season has ended.")
    document.save(path)


def make_pptx(path: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    title_slide = deck.slides.add_slide(deck.slide_layouts[0])
    title_slide.shapes.title.text = "Orchard Planting Plan"
    title_slide.placeholders[1].text = "Spring season review for the cooperative"

    bullets = deck.slides.add_slide(deck.slide_layouts[1])
    bullets.shapes.title.text = "Soil and rootstock"
    body = bullets.placeholders[1].text_frame
    body.text = "Plant the pear trees on quince rootstock in the clay field"
    body.add_paragraph().text = "Apples go on the sandy slope by the river"
    bullets.notes_slide.notes_text_frame.text = "Remind the growers that the clay field floods in February."

    deck.slides.add_slide(deck.slide_layouts[6])  # a blank slide: counted, but no page

    tables = deck.slides.add_slide(deck.slide_layouts[5])
    tables.shapes.title.text = "Trees per field"
    rows = [("Field", "Variety", "Trees"), ("Clay field", "Conference pear", "140"), ("River slope", "Cox apple", "95")]
    shape = tables.shapes.add_table(len(rows), 3, Inches(1), Inches(2), Inches(8), Inches(2))
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            shape.table.cell(r, c).text = value
    tables.notes_slide.notes_text_frame.text = "The river slope count is still an estimate."
    deck.save(path)


def make_xlsx(path: Path) -> None:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(path)
    date = workbook.add_format({"num_format": "yyyy-mm-dd"})
    staff = workbook.add_worksheet("Staff")
    staff.write(0, 0, "Engineering staff, spring")  # a title row above the header
    header = ["Name", None, "Born", "Team", "Salary", "Started"]  # column B stays empty
    people = [
        ("Ada Lovelace", 1815, "Analytical Engine", 5200, dt.date(2021, 3, 1)),
        ("Grace Hopper", 1906, "Compilers", 6100, dt.date(2019, 9, 16)),
        None,  # an empty row between the people
        ("Alan Turing", 1912, "Codebreaking", 5800, dt.date(2020, 1, 6)),
    ]
    for column, name in enumerate(header):
        if name:
            staff.write(2, column, name)
    for r, person in enumerate(people, start=3):
        if person is None:
            continue
        name, born, team, salary, started = person
        staff.write(r, 0, name)
        staff.write(r, 2, born)
        staff.write(r, 3, team)
        staff.write(r, 4, salary)
        staff.write_datetime(r, 5, dt.datetime.combine(started, dt.time()), date)
    workbook.add_worksheet("Notes")  # empty: no page
    totals = workbook.add_worksheet("Totals")
    totals.write_row(0, 0, ["Measure", "Value"])
    totals.write(1, 0, "Total salary")
    totals.write_formula(1, 1, "=SUM(Staff!E4:E7)", None, 17100)  # saved with its value, as Excel does
    totals.write(2, 0, "Average birth year")
    totals.write_formula(2, 1, "=AVERAGE(Staff!C4:C7)", None, 1877.6666666666667)
    workbook.close()


def make_empty_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = "Blank"
    workbook.create_sheet("Also blank")
    workbook.save(path)


def encrypt(source: Path, target: Path) -> None:
    try:
        from msoffcrypto.format.ooxml import OOXMLFile
    except ImportError:
        print(f"msoffcrypto-tool is not installed: {target.name} left as it is")
        return
    with source.open("rb") as plain:
        locked = io.BytesIO()
        OOXMLFile(plain).encrypt(PASSWORD, locked)
    target.write_bytes(locked.getvalue())


def main() -> None:
    make_docx(HERE / "report.docx")
    make_pptx(HERE / "deck.pptx")
    make_xlsx(HERE / "budget.xlsx")
    make_empty_xlsx(HERE / "empty-sheets.xlsx")
    encrypt(HERE / "report.docx", HERE / "encrypted.docx")
    encrypt(HERE / "budget.xlsx", HERE / "encrypted.xlsx")
    for path in sorted(HERE.iterdir()):
        print(f"{path.name:20} {path.stat().st_size:>7} bytes")


if __name__ == "__main__":
    main()
