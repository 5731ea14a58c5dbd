"""OCR quality and speed, and PDF tables kept readable, measured on real files in one run.

    python -m benchmarks.ocr                       # writes results/ocr.md
    python -m benchmarks.ocr --pages 3 --output /tmp/ocr.md

- **Character error rate** (edit distance / reference length, whitespace collapsed) of OCR
  against known text: the scanned court-order fixture against the text it was typeset from,
  and rendered pages of born-digital shared PDFs (OCR forced) against pypdf's text layer.
- **Speed**: seconds per page for rendering and for recognition, and the CPU time they used
  (process time / wall time: 2.0 is both cores busy).
- **Tables**: for each table found in the shared table PDFs, how many of its values share a
  chunk with their row label and column header, with the table rows against pypdf's plain text.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import os
import time
from pathlib import Path

import numpy as np
from pypdf import PdfReader

from benchmarks.report import write_keeping_notes
from rag import ocr
from rag.config import Settings
from rag.embedding import Embedder
from rag.loading import load_document
from rag.pipeline import build_chunker
from rag.readers.base import ReadOptions, normalise_text
from rag.readers.pdf_tables import may_hold_table, rewrite_tables, tables_in

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pdfs"
FIXTURES = ROOT / "tests" / "data" / "ocr"
RESULTS = ROOT / "benchmarks" / "results" / "ocr.md"
# Born-digital pages of one column (OCR reads lines across a page, so two-column pages would
# measure reading order, not recognition): text pages of the 619-page manual, after its table of
# contents (dot leaders are characters to pypdf and nothing to OCR).
BORN_DIGITAL = [("DA-619p.pdf", index) for index in (5, 6, 7, 8, 9)]
TABLE_PDFS = ["embedded-images-tables.pdf", "layout-parser-paper-with-table.pdf", "multi-column.pdf"]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row per character of ``a``."""
    if not a or not b:
        return max(len(a), len(b))
    target = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    row = np.arange(len(b) + 1, dtype=np.int64)
    steps = np.arange(len(b) + 1, dtype=np.int64)
    for i, char in enumerate(a.encode("utf-32-le").decode("utf-32-le"), start=1):
        cost = (target != ord(char)).astype(np.int64)
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)
        row = np.minimum.accumulate(new - steps) + steps  # insertions, left to right
    return int(row[-1])


def cer(hypothesis: str, reference: str) -> float:
    hypothesis, reference = " ".join(hypothesis.split()), " ".join(reference.split())
    return edit_distance(hypothesis, reference) / max(len(reference), 1)


@dataclasses.dataclass
class PageRun:
    name: str
    cer: float
    chars: int
    render_s: float
    recognise_s: float
    cpu_share: float


def ocr_page(renderer: ocr.PageRenderer, index: int, name: str, reference: str) -> PageRun:
    started, cpu = time.perf_counter(), time.process_time()
    pixels = renderer.render(index)
    rendered = time.perf_counter()
    text = ocr.recognise(pixels)
    done = time.perf_counter()
    share = (time.process_time() - cpu) / (done - started)
    return PageRun(name, cer(text, reference), len(reference), rendered - started, done - rendered, share)


def run_ocr(pages: int) -> list[PageRun]:
    ocr.engine()  # loaded before timing
    runs = []
    reference = (FIXTURES / "court-order.txt").read_text(encoding="utf-8").split("\n\n")
    scan = (FIXTURES / "court-order-scan.pdf").read_bytes()
    docket = [page.extract_text() for page in PdfReader(io.BytesIO(scan)).pages]
    with ocr.PageRenderer(scan) as renderer:
        for index in range(len(renderer)):
            # the docket line is on the page (a real text layer): it belongs to the reference too
            runs.append(
                ocr_page(renderer, index, f"court-order-scan.pdf p{index + 1}", docket[index] + reference[index])
            )
    for name, index in BORN_DIGITAL[:pages]:
        data = (SHARED / name).read_bytes()
        text = PdfReader(io.BytesIO(data)).pages[index].extract_text()
        with ocr.PageRenderer(data) as renderer:
            runs.append(ocr_page(renderer, index, f"{name} p{index + 1}", text))
    return runs


@dataclasses.dataclass
class TableRun:
    name: str
    page: int
    rows: int
    values: int
    kept_rows: int
    kept_plain: int


def table_cells(table: list[list[str]]) -> list[tuple[str, str, str]]:
    """(row label, column header, value) of every value of a table."""
    header, rows = table[0], table[1:]
    return [
        (row[0], name, value)
        for row in rows
        for name, value in zip(header[1:], row[1:], strict=False)
        if row[0] and name and value
    ]


def kept(chunker, text: str, cells: list[tuple[str, str, str]]) -> int:
    """Values of ``cells`` that share a chunk of ``text`` with their row label and header."""
    chunks = chunker.split_text(text)
    return sum(any(all(part in chunk for part in cell) for chunk in chunks) for cell in cells)


def run_tables(embedder: Embedder) -> list[TableRun]:
    chunker = build_chunker(Settings(), embedder)
    runs = []
    for name in TABLE_PDFS:
        reader = PdfReader(SHARED / name)
        for index, page in enumerate(reader.pages):
            raw = page.extract_text() or ""
            if not may_hold_table(raw):
                continue
            layout = page.extract_text(extraction_mode="layout")
            plain = normalise_text(raw, join_lines=True)
            rows_text = rewrite_tables(plain, layout)
            for table in tables_in(plain, layout):
                cells = table_cells(table)
                if cells:
                    kept_rows, kept_plain = kept(chunker, rows_text, cells), kept(chunker, plain, cells)
                    runs.append(TableRun(name, index + 1, len(table) - 1, len(cells), kept_rows, kept_plain))
    return runs


def scan_question(embedder: Embedder) -> str:
    """The court order through load and chunking: the page of the chunk nearest a question."""
    document = load_document(FIXTURES / "court-order-scan.pdf", options=ReadOptions())
    chunker = build_chunker(Settings(), embedder)
    chunks = chunker.split_document(document)
    question = "How large is the bond the defendant must post with the clerk?"
    vectors = embedder.encode([c.text for c in chunks])
    best = chunks[int(np.argmax(vectors @ np.asarray(embedder.embed_query(question))))]
    return f"'{question}' -> page {best.page} ('{best.text[:80]}...'); OCR'd pages {document.ocr_pages}"


def report(runs: list[PageRun], tables: list[TableRun], question: str) -> str:
    lines = [
        "# OCR and PDF tables",
        "",
        f"`python -m benchmarks.ocr`, {dt.date.today().isoformat()}, {os.cpu_count()} CPU cores, "
        f"pages rendered at {ocr.OCR_DPI} DPI (gray), rapidocr PP-OCRv6 on onnxruntime; "
        f"load average {os.getloadavg()[0]:.1f} when it ended (other work on the machine slows it).",
        "",
        "| page | reference chars | CER | render s | recognise s | CPU cores busy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.chars} | {r.cer:.2%} | {r.render_s:.2f} | {r.recognise_s:.2f} | {r.cpu_share:.1f} |"
        for r in runs
    ]
    total = sum(r.render_s + r.recognise_s for r in runs)
    chars = sum(r.chars for r in runs)
    weighted = sum(r.cer * r.chars for r in runs) / max(chars, 1)
    render = sum(r.render_s for r in runs) / max(total, 1e-9)
    lines += [
        "",
        f"All pages: CER {weighted:.2%} (weighted by length); {len(runs) / total:.2f} pages/s, "
        f"{total / len(runs):.1f} s a page, of which rendering {render:.0%} and recognition {1 - render:.0%}.",
        "",
        f"Question on the scan: {question}",
        "",
        "| table PDF | page | rows | values | with label and header: rows | plain text |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {t.name} | {t.page} | {t.rows} | {t.values} | {t.kept_rows} | {t.kept_plain} |" for t in tables]
    lines += [
        "",
        "A value counts when one chunk (default chunk size and overlap) holds it with its row label and column header.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=len(BORN_DIGITAL), help="born-digital pages to OCR")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    embedder = Embedder(Settings()).load()
    runs = run_ocr(args.pages)
    text = report(runs, run_tables(embedder), scan_question(embedder))
    write_keeping_notes(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
