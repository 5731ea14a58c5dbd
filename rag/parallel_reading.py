"""Big PDFs read by a pool of pypdf worker processes, a page range each, delivered in page order.

pypdf's text extraction is pure Python (about 33 ms a page on one core). Read inline it runs
before embedding; in worker processes (no GIL shared with the model) it runs beside it:
``Ingestor`` chunks and embeds each range as it arrives, so the reading hides behind
embedding wherever a core is free. Spawning a worker costs about a second, so only PDFs of
many pages come here; small files, encrypted or unreadable PDFs are read inline, where the
readers give their own messages.

Workers are started with ``spawn`` (safe beside the model's threads and on every platform).
A worker opens each file once, checks that its bytes are the ones the ingest hashed, and
reads each page with ``rag.readers.pdf.read_page``, as ``read_pdf`` does (OCR included, with
the same ``RAG_OCR`` mode). Any failure, a worker that dies included, raises ``LoadError`` for
that file only; the pool is then rebuilt for the next one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import multiprocessing.util
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rag.readers.base import LoadError, OcrMode
from rag.readers.pdf import open_pdf, read_page

if TYPE_CHECKING:
    from pypdf import PdfReader

    from rag.ocr import PageRenderer

log = logging.getLogger(__name__)

PAGES_PER_TASK = 8
# Fault injection for tests: a worker whose range holds this page number exits at once, as a crash would.
CRASH_PAGE_VARIABLE = "RAG_FAULT_PDF_WORKER_EXIT_PAGE"

_opened: tuple[tuple[str, str], PdfReader, PageRenderer | None] | None = None  # per worker: the file it read last


@dataclass(frozen=True)
class RangePage:
    """One page as a worker read it (``read_pdf``'s view of a page)."""

    number: int
    text: str
    ocr: bool = False
    unread: bool = False


def default_workers(cores: int | None = None) -> int:
    """Reader processes for this machine: one reads about 30 pages/s, and one core of the model
    embeds about 4.5 pages/s of text, so one reader keeps up with about six cores of embedding."""
    return max(1, (cores or os.cpu_count() or 1) // 4)


def pdf_page_total(data: bytes) -> int | None:
    """Pages of a plain PDF that workers can read, or None where the inline reader must (not a
    PDF, encrypted, unreadable: its messages stay the reader's)."""
    if not data.lstrip()[:5].startswith(b"%PDF"):
        return None
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        return None if reader.is_encrypted else len(reader.pages)
    except Exception:  # any problem: the inline reader reports it in its words
        return None


def read_range(path: str, content_hash: str, start: int, stop: int, ocr: OcrMode) -> list[RangePage]:
    """Worker side: pages ``start`` to ``stop - 1`` (from 0), each read as ``read_pdf`` reads it."""
    crash_page = os.environ.get(CRASH_PAGE_VARIABLE)
    if crash_page and start < int(crash_page) <= stop:
        os._exit(70)
    reader, renderer = _open(path, content_hash)
    try:
        read = [(index, read_page(reader, index, ocr=ocr, renderer=renderer)) for index in range(start, stop)]
    except Exception as exc:  # pypdf raises many types for a bad page; the file fails, with the reason
        raise LoadError(f"the PDF is corrupt or truncated and could not be read ({exc})") from None
    return [RangePage(index + 1, page.text, page.ocr, page.unread) for index, page in read]


def _open(path: str, content_hash: str) -> tuple[PdfReader, PageRenderer | None]:
    """The worker's reader (and page renderer, for OCR) on this file, opened once per file."""
    global _opened
    if _opened is None or _opened[0] != (path, content_hash):
        if _opened is not None and _opened[2] is not None:
            _opened[2].close()
        _opened = None
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != content_hash:
            raise LoadError("the file changed while it was being read; ingest it again")
        reader = open_pdf(data)
        try:
            from rag.ocr import PageRenderer

            renderer: PageRenderer | None = PageRenderer(data)
        except Exception as exc:  # as read_pdf: without a renderer, the text layer only
            log.warning("cannot render the PDF's pages, reading its text layer only: %s", exc)
            renderer = None
        _opened = ((path, content_hash), reader, renderer)
        if renderer is not None:  # closed when the worker exits, as read_pdf closes its own
            multiprocessing.util.Finalize(renderer, renderer.close, exitpriority=10)
    return _opened[1], _opened[2]


class PdfReaderPool:
    """Worker processes that read page ranges of big PDFs; started on first use, closed by ``close``."""

    def __init__(self, workers: int | None = None, pages_per_task: int = PAGES_PER_TASK) -> None:
        self.workers = workers or default_workers()
        self.pages_per_task = pages_per_task
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> PdfReaderPool:
        """Start the workers now (they take about a second; starting early hides that too)."""
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        return self

    def pages(self, path: Path, content_hash: str, page_total: int, ocr: OcrMode = "auto") -> Iterator[list[RangePage]]:
        """Every page, range by range in page order. Raises ``LoadError`` for this file."""
        executor = self.start()._executor
        assert executor is not None
        step = self.pages_per_task
        futures: list[Future[list[RangePage]]] = [
            executor.submit(read_range, str(path), content_hash, start, min(start + step, page_total), ocr)
            for start in range(0, page_total, step)
        ]
        try:
            for future in futures:
                yield future.result()
        except BrokenProcessPool as exc:
            self.close()  # a dead worker breaks the pool: the next file gets a new one
            raise LoadError(
                f"a PDF reader process crashed while reading this file ({exc or 'no reason given'})"
            ) from exc
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
