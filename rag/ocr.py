"""Offline OCR: the one module that speaks rapidocr, onnxruntime, pypdfium2 and Pillow.

rapidocr's wheel ships the PP-OCRv6 detection and recognition models as ONNX files, run here on
onnxruntime, so nothing is downloaded at run time. The engine is loaded once per process, on
the first page that needs it: a command that never meets a scan never pays for it.

PDF pages are rendered with pypdfium2. ``PageRenderer.ink`` measures how much of a page is
dark at a low resolution, which is how the PDF reader tells a page whose text layer covers its
ink from a scan with only a docket line of real text on top.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rapidocr import RapidOCR

    from rag.readers.ocr_tables import TextBox

log = logging.getLogger(__name__)

OCR_DPI = 200  # recognition resolution: 150 DPI garbled a line of the Lorem-ipsum scan that 200 reads
INK_DPI = 36  # enough to see where the ink is, a few milliseconds a page
_INK_LEVEL = 200  # a pixel darker than this (of 255) is ink, anti-aliased glyph edges included
_MAX_IMAGE_PIXELS = 60_000_000  # a larger image is refused before decoding (a 20 MB A4 scan at 600 DPI is 35 M)

_engine: RapidOCR | None = None
_engine_lock = threading.Lock()


class ImageError(ValueError):
    """Bytes that do not decode as an image, with the reason in words."""


def engine() -> RapidOCR:
    """The process's OCR engine, built on first use.

    The text-direction classifier is off: it only turns lines printed upside down, and costs
    a model pass per line.
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            from rapidocr import RapidOCR

            _engine = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "error"})
        return _engine


def recognise(image: np.ndarray) -> str:
    """The text in an image (gray or RGB pixels), normalised as the readers store it: prose lines
    top to bottom and joined, tables one row per line with their headers (``ocr_tables``)."""
    from rag.readers.ocr_tables import page_text

    return page_text(read_boxes(image))


def read_boxes(image: np.ndarray) -> list[TextBox]:
    """The boxes of text the engine finds, in its order (top to bottom), blank ones left out."""
    from rag.readers.ocr_tables import TextBox

    result = engine()(image)
    found = []
    for corners, text in zip(result.boxes if result.boxes is not None else (), result.txts or (), strict=False):
        points = np.asarray(corners, dtype=np.float64)
        if str(text).strip():
            x, y = points[:, 0], points[:, 1]
            found.append(TextBox(float(x.min()), float(y.min()), float(x.max()), float(y.max()), str(text).strip()))
    return found


def image_pages(data: bytes) -> list[np.ndarray]:
    """The frames of an image file (a TIFF may hold several pages) as RGB pixels.

    Raises ``ImageError`` for bytes that are not an image Pillow reads.
    """
    from PIL import Image, ImageSequence, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = _MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except UnidentifiedImageError as exc:
        raise ImageError("not an image Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image is too large to read ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or damaged image data
        raise ImageError(f"the image is damaged or truncated ({exc})") from exc
    return frames


class PageRenderer:
    """Renders the pages of one PDF (bytes) with pypdfium2, for ink measurement and OCR."""

    def __init__(self, data: bytes) -> None:
        import pypdfium2 as pdfium

        # Copy-protected PDFs have an empty user password, as pypdf assumes too.
        self._pdf = pdfium.PdfDocument(data, password="")

    def __len__(self) -> int:
        return len(self._pdf)

    def area_sq_in(self, index: int) -> float:
        """The page's area in square inches (PDF units are 1/72 inch)."""
        width, height = self._pdf[index].get_size()
        return width * height / 72 / 72

    def ink(self, index: int) -> float:
        """Square inches of the page that are dark: text, lines and pictures alike."""
        pixels = self.render(index, INK_DPI)
        return float((pixels < _INK_LEVEL).mean()) * self.area_sq_in(index)

    def render(self, index: int, dpi: int = OCR_DPI) -> np.ndarray:
        """The page as gray pixels at ``dpi``."""
        page = self._pdf[index]
        try:
            return page.render(scale=dpi / 72, grayscale=True).to_numpy()
        finally:
            page.close()

    def recognise(self, index: int) -> str:
        """OCR of one page."""
        return recognise(self.render(index, OCR_DPI))

    def close(self) -> None:
        self._pdf.close()

    def __enter__(self) -> PageRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
