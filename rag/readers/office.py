"""Word and PowerPoint files (OOXML) with python-docx and python-pptx.

A Word document is one page without a number: Word decides its page breaks at layout time
(fonts, paper size) and does not store them, so any page number read from the file would cite
the wrong page. A presentation has one page per slide, numbered as the slides are.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult, normalise_text
from rag.readers.sniff import DOCX, PPTX, OfficeKind, check_office_file
from rag.readers.tables import table_lines
from rag.records import Page

# What the libraries raise for a ZIP whose parts are missing or malformed.
_BROKEN = (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, IndexError, OSError)


def _broken(kind: OfficeKind, exc: Exception) -> LoadError:
    return LoadError(f"not {kind.name} ({kind.suffix}): it may be corrupt or misnamed ({type(exc).__name__}: {exc})")


# Word -------------------------------------------------------------------------------------


def read_docx(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """Paragraphs and tables in document order; headings as Markdown ``#`` lines."""
    check_office_file(data, DOCX)
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import XMLSyntaxError

    try:
        document = Document(io.BytesIO(data))
        blocks = list(_docx_blocks(document))
    except (PackageNotFoundError, XMLSyntaxError, *_BROKEN) as exc:
        raise _broken(DOCX, exc) from exc
    text = normalise_text(_join_blocks(blocks))
    if not text:
        raise LoadError("the Word document holds no text")
    return ReadResult([Page(text=text, number=None)], 1)


def _docx_blocks(document: Any) -> Iterator[str]:
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield "\n".join(table_lines(_docx_rows(block)))
        else:
            yield _docx_paragraph(block)


def _join_blocks(blocks: list[str]) -> str:
    """Blocks as paragraphs, except that the items of one list stay on consecutive lines."""
    parts: list[str] = []
    for block in filter(None, blocks):
        if parts and block.startswith("- ") and parts[-1].startswith("- "):
            parts[-1] += f"\n{block}"
        else:
            parts.append(block)
    return "\n\n".join(parts)


def _docx_paragraph(paragraph: Any) -> str:
    text = paragraph.text.strip()
    style = paragraph.style.name if text and paragraph.style is not None else ""
    if style == "Title":
        return f"# {text}"
    if style.startswith("Heading ") and style[8:].isdigit():
        return f"{'#' * min(int(style[8:]), 6)} {text}"
    if style.startswith("List"):
        return f"- {text}"
    return text


def _docx_rows(table: Any) -> Iterator[list[str]]:
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:  # a merged cell comes once per column it spans: keep the columns in line
            cells.append("" if id(cell._tc) in seen else cell.text)
            seen.add(id(cell._tc))
        yield cells


# PowerPoint -------------------------------------------------------------------------------


def read_pptx(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """One page per slide with text: the title, text boxes, tables, then the speaker notes."""
    check_office_file(data, PPTX)
    from lxml.etree import XMLSyntaxError
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
        slides = list(presentation.slides)
        pages = []
        for number, slide in enumerate(slides, start=1):
            text = normalise_text("\n\n".join(block for block in _slide_blocks(slide) if block))
            if text:
                pages.append(Page(text=text, number=number))
    except (PackageNotFoundError, XMLSyntaxError, *_BROKEN) as exc:
        raise _broken(PPTX, exc) from exc
    if not slides:
        raise LoadError("the presentation has no slides")
    if not pages:
        raise LoadError(f"the presentation holds no text on any of its {len(slides)} slides")
    return ReadResult(pages, len(slides))


def _slide_blocks(slide: Any) -> Iterator[str]:
    title = slide.shapes.title
    if title is not None and title.text_frame.text.strip():
        yield f"# {title.text_frame.text.strip()}"
    for shape in _flat_shapes(slide.shapes):
        if title is not None and shape.shape_id == title.shape_id:
            continue
        if shape.has_text_frame:
            yield "\n".join(paragraph.text for paragraph in shape.text_frame.paragraphs)
        elif getattr(shape, "has_table", False) and shape.has_table:
            yield "\n".join(table_lines(_pptx_rows(shape.table)))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            yield f"Notes: {notes}"


def _flat_shapes(shapes: Any) -> Iterator[Any]:
    """Shapes in slide order, with the shapes inside groups in place of the group."""
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group shape
            yield from _flat_shapes(shape.shapes)
        else:
            yield shape


def _pptx_rows(table: Any) -> Iterator[list[str]]:
    for row in table.rows:
        yield ["" if cell.is_spanned else cell.text for cell in row.cells]
