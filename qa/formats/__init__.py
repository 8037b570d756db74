"""Readers for the binary document formats, one module per format, each turning a file's
bytes into a `Document` (`qa.formats.base`, which the readers share and which imports nothing
from qa but its errors): `pdf` (pypdf; scanned pages by OCR), `docx` (python-docx), `doc`
(Debian's catdoc / antiword), `xlsx` (openpyxl), `pptx` (python-pptx), `image` (pages
photographed or scanned), and `ocr` (RapidOCR, cached), which `pdf` and `image` use.

`qa.documents.parse_document` picks the reader by content and imports it on first use;
the text formats (txt / md / html) are read in `qa.documents` itself.
"""
