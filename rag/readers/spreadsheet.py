"""Spreadsheets: Excel workbooks (.xlsx) with openpyxl, and CSV files with the csv module.

Every row is written with the header row's names (see ``rag.readers.tables``), so a chunk cut
anywhere in a long sheet still says what each value is. A workbook has one page per sheet,
numbered as the sheet tabs are, with the sheet name as a heading line; a CSV file is one page
without a number, like any text file.
"""

from __future__ import annotations

import csv
import io
import zipfile

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult, decode_text, normalise_text
from rag.readers.sniff import XLSX, check_office_file
from rag.readers.tables import table_lines
from rag.records import Page

_DELIMITERS = ",;\t|"
_BROKEN = (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, IndexError, OSError)


def read_xlsx(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """One page per sheet with values; formulas are read as the values Excel saved with them.

    A workbook written by a program that never calculated it has no saved values for its
    formulas; those cells are left out, as openpyxl cannot calculate them.
    """
    check_office_file(data, XLSX)
    from lxml.etree import XMLSyntaxError
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (XMLSyntaxError, *_BROKEN) as exc:
        raise LoadError(f"not an Excel workbook (.xlsx): it may be corrupt or misnamed ({exc})") from exc
    try:
        names = workbook.sheetnames
        pages = []
        for number, name in enumerate(names, start=1):
            sheet = workbook[name]
            if not hasattr(sheet, "iter_rows"):  # a chart sheet: no cells
                continue
            lines = table_lines(sheet.iter_rows(values_only=True))
            if lines:
                pages.append(Page(text=normalise_text("\n".join([f"# {name}", *lines])), number=number))
    except (XMLSyntaxError, *_BROKEN) as exc:
        raise LoadError(f"not an Excel workbook (.xlsx): it may be corrupt or misnamed ({exc})") from exc
    finally:
        workbook.close()
    if not pages:
        raise LoadError(f"the workbook has no cells with values in any of its {len(names)} sheets")
    return ReadResult(pages, len(names))


def read_csv(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """One page; the delimiter (comma, semicolon, tab or bar) is sniffed from the first lines."""
    text = decode_text(data)
    if not text.strip():
        raise LoadError("the file holds only whitespace")
    try:
        lines = table_lines(csv.reader(io.StringIO(text, newline=""), _dialect(text)))
    except csv.Error as exc:
        raise LoadError(f"the CSV file could not be read ({exc})") from exc
    if not lines:
        raise LoadError("the CSV file has no cells with values")
    return ReadResult([Page(text=normalise_text("\n".join(lines)), number=None)], 1)


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The sniffed dialect; where the sniffer cannot tell, commas or the commonest delimiter of line 1."""
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=_DELIMITERS)
    except csv.Error:
        first_line = text.lstrip().split("\n", 1)[0]
        delimiter = max(_DELIMITERS, key=first_line.count)

        class Fallback(csv.excel):
            pass

        Fallback.delimiter = delimiter if first_line.count(delimiter) else ","
        return Fallback
