"""Readers for the binary document formats, one module per format, each turning a file's
bytes into a `Document` (`qa.formats.base`, which the readers share and which imports nothing else
from qa): `pdf` (pypdf) and `docx` (python-docx).

`qa.documents.parse_document` picks the reader by content and imports it on first use;
the text formats (txt / md / html) are read in `qa.documents` itself.
"""
