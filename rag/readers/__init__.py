"""Format readers: each module turns one family of file formats into normalised pages.

``rag.loading.load_document`` checks the file (exists, size, suffix) and hands its bytes to
the reader for the suffix. A reader returns ``(pages, page_total)`` or raises ``LoadError``
with a message a person can act on; the format libraries are imported inside the readers,
so a command that never meets a spreadsheet never pays for openpyxl.

- ``text``: plain text and Markdown, one page without a number.
- ``pdf``: PDFs page by page with pypdf.
- ``office``: Word (.docx), one page; PowerPoint (.pptx), one page per slide.
- ``spreadsheet``: Excel (.xlsx), one page per sheet; CSV, one page.
- ``web``: HTML pages, their main text only (trafilatura).
- ``tables``: rows written with their column headers, shared by the readers above.
- ``sniff``: what a file's bytes really are, for messages about misnamed or locked files.
"""
