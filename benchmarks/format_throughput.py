"""Ingest throughput per format, in chunks per second, beside plain ``encode`` of the same chunks.

    python -m benchmarks.format_throughput                    # 40 PubMedQA entries, 3 OCR pages, 4 pages of DA-619p
    python -m benchmarks.format_throughput --entries 10 --ocr-pages 1 --pdf-pages 5   # a quick run

The same source text, PubMedQA contexts (``../shared/data/pubmedqa/ori_pqal.json``, else the four
entries in ``tests/data/pubmedqa``), is written as a file of each format with the library that
real tools use: .txt, .md, .docx (python-docx), .pptx (python-pptx, a slide per entry), .xlsx
(openpyxl, a row per context, a sheet per 20 entries), .csv (csv), .html (a page with
navigation, a script and a footer around the article) and a born-digital PDF (fpdf2). The first
pages of that PDF, rendered to pixels, become the PNG images and the scanned (image-only) PDF
that OCR reads; OCR takes seconds a page, so those formats get fewer pages of the same text. A
shared real PDF (``DA-619p.pdf``, first pages; else a repository fixture) is measured as well.

Each format is ingested by ``Ingestor.ingest`` into one fresh Milvus Lite store in a temporary
folder (file to stored chunks: read, OCR, chunk, embed, write), and right after it the very
chunk texts the pipeline embedded are encoded again in one plain ``SentenceTransformer.encode``
call: ratio = ingest chunks/s ÷ plain encode chunks/s, both in the same run and close in time.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ingest_throughput import first_pages, load_average, machine, plain_encode
from benchmarks.report import publish, write_figures
from rag.config import Settings
from rag.embedding import Embedder
from rag.logs import quiet_libraries
from rag.pipeline import Ingestor
from rag.store import DocumentStore

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PUBMEDQA = [SHARED / "pubmedqa" / "ori_pqal.json", ROOT / "tests" / "data" / "pubmedqa" / "ori_pqal.json"]
PDFS = [SHARED / "pdfs" / "DA-619p.pdf", ROOT / "tests" / "data" / "pdfs" / "multi-column.pdf"]
RESULTS = Path(__file__).resolve().parent / "results" / "format_throughput.md"
ENTRIES_PER_SHEET = 20
SCAN_DPI = 150
ENTRIES = 40  # about 8,000 words, 16 typeset pages
OCR_PAGES = 3
PDF_PAGES = 4  # DA-619p's pages are dense: about as many chunks as the entries give  # what office scanners default to


@dataclass(frozen=True)
class Entry:
    """One PubMedQA abstract: its question as a title and its labelled context paragraphs."""

    pmid: str
    title: str
    sections: list[tuple[str, str]]  # (label, paragraph)


@dataclass
class FormatRun:
    """One format's files through the pipeline, then its chunk texts through plain encode."""

    format: str
    source: str
    files: int
    bytes: int
    pages: int
    ocr_pages: int
    chunks: int
    words: int
    mean_tokens: float
    ingest_s: float
    ingest_cpu_s: float
    embed_s: float
    plain_s: float
    plain_cpu_s: float
    max_vector_difference: float

    @property
    def ingest_rate(self) -> float:
        return self.chunks / self.ingest_s

    @property
    def plain_rate(self) -> float:
        return self.chunks / self.plain_s

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.plain_rate

    @property
    def cpu_ratio(self) -> float:
        """The same ratio by this process's CPU seconds, which other jobs on the machine move less
        (Milvus Lite's own process is not counted)."""
        return self.plain_cpu_s / self.ingest_cpu_s


# The source text -------------------------------------------------------------------------------


def read_entries(count: int) -> tuple[list[Entry], Path]:
    """The first ``count`` PubMedQA entries of the shared set (else of the repository's four)."""
    path = next(p for p in PUBMEDQA if p.is_file())
    data = json.loads(path.read_text())
    entries = [
        Entry(pmid, item["QUESTION"], list(zip(item["LABELS"], item["CONTEXTS"], strict=True)))
        for pmid, item in list(data.items())[:count]
    ]
    return entries, path


def latin1(text: str) -> str:
    """fpdf2's core fonts cover Latin-1 only; other characters become '?' as a printer driver would."""
    return text.encode("latin-1", "replace").decode("latin-1")


# One writer per format ---------------------------------------------------------------------------


def write_txt(entries: list[Entry], folder: Path) -> list[Path]:
    path = folder / "abstracts.txt"
    path.write_text(
        "\n\n".join(e.title + "\n\n" + "\n\n".join(f"{label}: {text}" for label, text in e.sections) for e in entries)
    )
    return [path]


def write_md(entries: list[Entry], folder: Path) -> list[Path]:
    path = folder / "abstracts.md"
    parts = [
        f"# {e.title}\n\n" + "\n\n".join(f"## {label.title()}\n\n{text}" for label, text in e.sections) for e in entries
    ]
    path.write_text("\n\n".join(parts) + "\n")
    return [path]


def write_docx(entries: list[Entry], folder: Path) -> list[Path]:
    from docx import Document

    document = Document()
    document.add_heading("PubMedQA abstracts", level=0)
    for entry in entries:
        document.add_heading(entry.title, level=1)
        for label, text in entry.sections:
            paragraph = document.add_paragraph()
            paragraph.add_run(f"{label.title()}. ").bold = True
            paragraph.add_run(text)
    path = folder / "abstracts.docx"
    document.save(path)
    return [path]


def write_pptx(entries: list[Entry], folder: Path) -> list[Path]:
    from pptx import Presentation
    from pptx.util import Pt

    deck = Presentation()
    for entry in entries:
        slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
        slide.shapes.title.text = entry.title
        body = slide.placeholders[1].text_frame
        for number, (label, text) in enumerate(entry.sections):
            paragraph = body.paragraphs[0] if number == 0 else body.add_paragraph()
            paragraph.text = f"{label.title()}: {text}"
            paragraph.font.size = Pt(10)
        slide.notes_slide.notes_text_frame.text = f"PMID {entry.pmid}"
    path = folder / "abstracts.pptx"
    deck.save(path)
    return [path]


def table_rows(entries: list[Entry]) -> list[list[str]]:
    return [[e.pmid, e.title, label.title(), text] for e in entries for label, text in e.sections]


HEADER = ["PMID", "Question", "Section", "Text"]


def write_xlsx(entries: list[Entry], folder: Path) -> list[Path]:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for start in range(0, len(entries), ENTRIES_PER_SHEET):
        sheet = workbook.create_sheet(f"Abstracts {start // ENTRIES_PER_SHEET + 1}")
        sheet.append(HEADER)
        for row in table_rows(entries[start : start + ENTRIES_PER_SHEET]):
            sheet.append(row)
    path = folder / "abstracts.xlsx"
    workbook.save(path)
    return [path]


def write_csv(entries: list[Entry], folder: Path) -> list[Path]:
    path = folder / "abstracts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(table_rows(entries))
    return [path]


def write_html(entries: list[Entry], folder: Path) -> list[Path]:
    articles = "\n".join(
        f"<section><h2>{escape(e.title)}</h2>\n"
        + "\n".join(f"<p><b>{escape(label.title())}.</b> {escape(text)}</p>" for label, text in e.sections)
        + "</section>"
        for e in entries
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PubMedQA abstracts</title>
<style>body {{ font-family: serif; }} nav a {{ margin: 0 1em; }}</style>
<script>window.dataLayer = window.dataLayer || []; function track() {{ dataLayer.push(arguments); }}</script>
</head><body>
<nav><a href="/">Home</a> <a href="/search">Search</a> <a href="/about">About</a> <a href="/login">Log in</a></nav>
<main><article><h1>PubMedQA abstracts</h1>
{articles}
</article></main>
<aside><h3>Related</h3><ul><li><a href="/r1">Trending articles</a></li>
<li><a href="/r2">Newsletter</a></li></ul></aside>
<footer>Copyright notice. <a href="/privacy">Privacy</a> <a href="/terms">Terms</a></footer>
</body></html>
"""
    path = folder / "abstracts.html"
    path.write_text(page)
    return [path]


def typeset(entries: list[Entry]) -> bytes:
    """A born-digital PDF of the entries: Times 11 on letter pages, a heading per abstract."""
    from fpdf import FPDF

    pdf = FPDF(format="letter")
    pdf.set_margins(25, 25)
    pdf.set_auto_page_break(True, margin=25)
    pdf.add_page()
    for entry in entries:
        pdf.set_font("Times", "B", 12)
        pdf.multi_cell(0, 6, latin1(entry.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Times", size=11)
        for label, text in entry.sections:
            pdf.multi_cell(0, 5.5, latin1(f"{label.title()}: {text}"), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
        pdf.ln(4)
    return bytes(pdf.output())


def scanned_pages(pdf_bytes: bytes, pages: int) -> list[Any]:
    """The first pages as a scanner gives them: gray pixels at 150 DPI, paper tone and a little noise."""
    from PIL import Image

    from rag.ocr import PageRenderer

    rng = np.random.default_rng(20241203)
    images = []
    with PageRenderer(pdf_bytes) as renderer:
        for index in range(min(pages, len(renderer))):
            pixels = renderer.render(index, SCAN_DPI).astype(np.float32) * 0.92 + 8
            pixels += rng.normal(0, 6, pixels.shape)
            images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images


def write_pdf(pdf_bytes: bytes, folder: Path) -> list[Path]:
    path = folder / "abstracts.pdf"
    path.write_bytes(pdf_bytes)
    return [path]


def write_png(images: list[Any], folder: Path) -> list[Path]:
    paths = []
    for number, image in enumerate(images, start=1):
        paths.append(folder / f"abstracts-page-{number}.png")
        image.save(paths[-1], optimize=True)
    return paths


def write_scan(images: list[Any], folder: Path) -> list[Path]:
    """An image-only PDF (JPEG pages, no text layer), as a scanner's "scan to PDF" writes it."""
    buffers = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
        buffers.append(buffer)
    from PIL import Image

    pages = [Image.open(buffer) for buffer in buffers]
    path = folder / "abstracts-scan.pdf"
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=SCAN_DPI)
    return [path]


# The measurement -------------------------------------------------------------------------------


def measure(
    name: str, source: str, paths: list[Path], settings: Settings, embedder: Embedder, store: DocumentStore
) -> FormatRun:
    """Ingest ``paths`` (timed), then encode the chunk texts the pipeline embedded in one plain call."""
    ingestor = Ingestor(settings, embedder, store)
    ingestor.chunker  # noqa: B018 (built before the clock starts, as in a running app)
    embedded: dict[str, np.ndarray] = {}
    embed_s = 0.0
    encode: Callable[..., np.ndarray] = embedder.encode

    def encode_and_keep(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        nonlocal embed_s
        started = time.perf_counter()
        vectors = encode(texts, batch_size)
        embed_s += time.perf_counter() - started
        embedded.update(zip(texts, vectors, strict=True))
        return vectors

    embedder.encode = encode_and_keep  # type: ignore[method-assign]
    cpu = time.process_time()
    try:
        report = ingestor.ingest(paths)
    finally:
        embedder.encode = encode  # type: ignore[method-assign]
    ingest_cpu = time.process_time() - cpu
    failed = [f"{r.path.name}: {r.error}" for r in report.files if r.error]
    if failed:
        raise SystemExit(f"{name}: ingest failed: {failed}")
    texts = list(embedded)
    plain, plain_s, plain_cpu = plain_encode(embedder, texts, settings.embedding_batch_size)
    difference = max(float(np.abs(embedded[t] - v).max()) for t, v in zip(texts, plain, strict=True))
    chunks = sum(r.chunks for r in report.files)
    run = FormatRun(
        format=name,
        source=source,
        files=len(paths),
        bytes=sum(p.stat().st_size for p in paths),
        pages=sum(r.pages for r in report.files),
        ocr_pages=sum(r.ocr_pages for r in report.files),
        chunks=chunks,
        words=sum(len(t.split()) for t in texts),
        mean_tokens=float(np.mean([embedder.count_tokens(t) for t in texts])),
        ingest_s=report.seconds,
        ingest_cpu_s=ingest_cpu,
        embed_s=embed_s,
        plain_s=plain_s,
        plain_cpu_s=plain_cpu,
        max_vector_difference=difference,
    )
    if len(texts) != chunks:  # identical chunk texts are embedded once: the rates would not compare
        raise SystemExit(f"{name}: {chunks} chunks stored but {len(texts)} distinct texts embedded")
    print(
        f"{name:>12}: {run.chunks:4d} chunks, ingest {run.ingest_rate:6.2f}/s, plain {run.plain_rate:6.2f}/s, "
        f"ratio {run.ratio:.2f}",
        file=sys.stderr,
    )
    return run


def run(entries_count: int, ocr_pages: int, pdf_pages: int) -> dict[str, Any]:
    quiet_libraries()
    entries, text_source = read_entries(entries_count)
    shared_pdf = next(p for p in PDFS if p.is_file())
    runs: list[FormatRun] = []
    with tempfile.TemporaryDirectory(prefix="rag-formats-") as tmp:
        folder = Path(tmp)
        settings = Settings(data_dir=folder / "data", collection="formats")
        embedder = Embedder(settings).load()
        embedder.encode(["warm up the model", "and its tokenizer"])
        from rag.ocr import engine

        engine()  # the OCR models load once per process: not a cost of the first OCR format
        store = DocumentStore(settings, embedder).open()

        typeset_pdf = typeset(entries)
        scans = scanned_pages(typeset_pdf, ocr_pages)
        ocr_entries = f"first {len(scans)} pages of the typeset PDF"
        text = f"{len(entries)} PubMedQA entries"
        writers: list[tuple[str, str, Callable[[Path], list[Path]]]] = [
            ("txt", text, lambda f: write_txt(entries, f)),
            ("md", text, lambda f: write_md(entries, f)),
            ("docx", text, lambda f: write_docx(entries, f)),
            ("pptx", text, lambda f: write_pptx(entries, f)),
            ("xlsx", text, lambda f: write_xlsx(entries, f)),
            ("csv", text, lambda f: write_csv(entries, f)),
            ("html", text, lambda f: write_html(entries, f)),
            ("pdf (typeset)", text, lambda f: write_pdf(typeset_pdf, f)),
            (
                "pdf (shared)",
                f"{shared_pdf.name}, first {pdf_pages} pages",
                lambda f: [first_pages(shared_pdf, pdf_pages, f)],
            ),
            ("png (OCR)", ocr_entries, lambda f: write_png(scans, f)),
            ("scanned pdf (OCR)", ocr_entries, lambda f: write_scan(scans, f)),
        ]
        load_before = load_average()
        started = datetime.now().astimezone()
        for name, source, write in writers:
            target = folder / "files" / name.split(" ")[0] / str(len(runs))
            target.mkdir(parents=True)
            runs.append(measure(name, source, write(target), settings, embedder, store))
        load_after = load_average()
        store.close()
    return {
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "text_source": str(text_source.relative_to(ROOT.parent))
        if ROOT.parent in text_source.parents
        else str(text_source),
        "entries": len(entries),
        "batch_size": settings.embedding_batch_size,
        "chunk_size": settings.chunk_size,
        "runs": [
            dict(asdict(r), ingest_rate=r.ingest_rate, plain_rate=r.plain_rate, ratio=r.ratio, cpu_ratio=r.cpu_ratio)
            for r in runs
        ],
    }


def render(figures: dict[str, Any], command: str) -> str:
    lines = [
        "# Ingest throughput per format",
        "",
        f"- date: {figures['date']}",
        f"- machine: {figures['machine']}; shared with other engineers' jobs, so wall-clock rates move "
        "with their load; each ratio compares two runs seconds apart, which the load moves alike",
        f"- load average (1, 5, 15 min) before -> after: {figures['load_average_before']} -> "
        f"{figures['load_average_after']}",
        f"- source text: {figures['entries']} entries of `{figures['text_source']}` (contexts with their "
        "section labels), written as each format; the OCR formats get fewer pages of the same text",
        f"- chunk size {figures['chunk_size']} word pieces, embedding batch size {figures['batch_size']}; "
        f"reproduce: `{command}`",
        "",
        "Ingest = `Ingestor.ingest` from file to stored chunks (read, OCR, chunk, embed, write to Milvus Lite). "
        "Plain = one `SentenceTransformer.encode` call over the same chunk texts, right after. "
        "Ratio = ingest chunks/s ÷ plain chunks/s; by CPU s = plain CPU seconds ÷ ingest CPU seconds "
        "(this process only: Milvus Lite's server process is not counted).",
        "",
        "| format | source | files | pages (OCR) | chunks | ingest s | ingest chunks/s | plain s | plain chunks/s "
        "| ratio | ratio by CPU s | embed share of ingest |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in figures["runs"]:
        pages = f"{r['pages']} ({r['ocr_pages']})" if r["ocr_pages"] else str(r["pages"])
        lines.append(
            f"| {r['format']} | {r['source']} | {r['files']} | {pages} | {r['chunks']} | {r['ingest_s']:.1f} "
            f"| {r['ingest_rate']:.2f} | {r['plain_s']:.1f} | {r['plain_rate']:.2f} | **{r['ratio']:.2f}** "
            f"| {r['cpu_ratio']:.2f} "
            f"| {r['embed_s'] / r['ingest_s']:.0%} |"
        )
    worst = max(r["max_vector_difference"] for r in figures["runs"])
    lines += [
        "",
        f"Largest difference between a pipeline vector and its plain one: {worst:.1e} (the same texts were encoded).",
        "Embed share: the pipeline's own `encode` calls over its wall time; the rest is reading (and OCR), "
        "chunking and waiting on writes.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.format_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=ENTRIES, help="PubMedQA entries written as each format")
    parser.add_argument("--ocr-pages", type=int, default=OCR_PAGES, help="pages of the typeset PDF read by OCR")
    parser.add_argument("--pdf-pages", type=int, default=PDF_PAGES, help="first pages of the shared PDF")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file; JSON beside it")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.format_throughput"
    for flag, value, default in (("--entries", args.entries, ENTRIES), ("--ocr-pages", args.ocr_pages, OCR_PAGES),
                                 ("--pdf-pages", args.pdf_pages, PDF_PAGES)):  # fmt: skip
        command += f" {flag} {value}" if value != default else ""
    figures = run(args.entries, args.ocr_pages, args.pdf_pages)
    figures["command"] = command
    write_figures(args.output, figures)
    publish(args.output, render(figures, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
