"""Format readers: each module turns one family of file formats into normalised pages.

``rag.loading.load_document`` checks the file (exists, size, suffix) and hands its bytes and
``ReadOptions`` (OCR mode, page progress) to the reader for the suffix. A reader returns a
``ReadResult`` (pages, page total, OCR'd and unread pages) or raises ``LoadError``
with a message a person can act on; the format libraries are imported inside the readers,
so a command that never meets a spreadsheet never pays for openpyxl.

- ``text``: plain text and Markdown, one page without a number.
- ``pdf``: PDFs page by page with pypdf; scanned pages through OCR (``rag.ocr``).
- ``pdf_tables``: tables in a PDF's text layer, found in pypdf's layout mode, written row by row.
- ``image``: PNG, JPEG and TIFF images through OCR, a page per TIFF frame.
- ``ocr_tables``: tables on OCR'd pages, rebuilt from the engine's boxes, written row by row.
- ``office``: Word (.docx), one page; PowerPoint (.pptx), one page per slide.
- ``spreadsheet``: Excel (.xlsx), one page per sheet; CSV, one page.
- ``web``: HTML pages, their main text only (trafilatura).
- ``tables``: rows written with their column headers, shared by the readers above.
- ``sniff``: what a file's bytes really are, for messages about misnamed or locked files.
"""
