"""Images (.png, .jpg, .jpeg, .tif, .tiff) read by OCR (``rag.ocr``).

A single image is one page without a number, like a text file; a multi-page TIFF (a fax or a
scanner's output) has one numbered page per frame. An image whose OCR finds no text is refused
with that reason, so that a photo is not stored as an empty document.
"""

from __future__ import annotations

import logging

from rag.readers.base import NO_OPTIONS, LoadError, ReadOptions, ReadResult
from rag.readers.sniff import looks_like
from rag.records import Page

log = logging.getLogger(__name__)

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
MIN_TEXT_CHARS = 3  # fewer letters or digits than this is OCR noise on a picture, not text


def read_image(data: bytes, options: ReadOptions = NO_OPTIONS) -> ReadResult:
    """OCR of every frame; ``LoadError`` for a misnamed or damaged file, or one without text."""
    from rag.ocr import ImageError, image_pages, recognise

    if not data.startswith(_IMAGE_MAGIC):
        seen = looks_like(data)
        hint = f": it looks like {seen}" if seen else ""
        raise LoadError(f"not a PNG, JPEG or TIFF image{hint}; it may be corrupt or misnamed")
    if options.ocr == "off":
        raise LoadError("images are read by OCR, and OCR is off (RAG_OCR=off): set RAG_OCR=auto to read it")
    try:
        frames = image_pages(data)
    except ImageError as exc:
        raise LoadError(f"the image could not be read: {exc}") from exc
    numbered = len(frames) > 1
    pages = []
    for index, frame in enumerate(frames):
        text = recognise(frame)
        if sum(ch.isalnum() for ch in text) >= MIN_TEXT_CHARS:
            pages.append(Page(text=text, number=index + 1 if numbered else None))
        options.on_page(index + 1, len(frames))
    if not pages:
        where = f" (on none of its {len(frames)} pages)" if numbered else ""
        raise LoadError(f"no text found in image{where}: OCR read nothing, so nothing was stored")
    ocr_pages = tuple(p.number or 1 for p in pages)
    log.debug("%d of %d image pages hold text", len(pages), len(frames))
    return ReadResult(pages, len(frames), ocr_pages=ocr_pages)
