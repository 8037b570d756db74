"""Word .docx: paragraphs and tables, read with python-docx, as a `Document`.

Each paragraph is a line of `Document.text`. A heading (the Title style, Heading 1..9,
or WPS's 标题 / 标题 1..9) is a line of its own, so the splitter's heading rule opens
the next passage with it, and the first heading is the document's title. A table is one
paragraph whose sentences are its rows: the cells of a row joined by "，", the row ended
by "；". The comma is one of the splitter's soft breaks, so an over-long row is cut
between cells, never inside one, and a row reads as a clause in the citation; and as
sentences of one paragraph, rows are packed into passages like any text (one line per
row would make every short row a "heading", and a run of them is not indexed).
Page headers and footers, footnotes and text boxes are not read.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from typing import Any

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from qa.formats.base import SENTENCE_END, Document, UnreadableFile, file_title, heading_title, short_title

CELL_SEP = "，"
ROW_END = "；"

_HEADING_STYLE = re.compile(r"title|heading\s*\d|标题(?:\s*\d)?", re.IGNORECASE)


def read_docx(raw: bytes, path: str) -> Document:
    """The text of a .docx file as a `Document`, one paragraph per line (raises UnreadableFile)."""
    try:
        word = docx.Document(io.BytesIO(raw))
        lines, heading = _body(word.iter_inner_content())
        core_title = word.core_properties.title or ""
    except Exception as exc:  # python-docx meets malformed zips and XML with many exception types
        raise UnreadableFile(
            f"it is a damaged .docx file ({type(exc).__name__}: {exc}); open it in Word or WPS, "
            f"save it again and add the new file",
            "broken",
        ) from exc
    if not lines:
        raise UnreadableFile("it has no text", "empty")
    title = short_title(heading or core_title or running_header(word) or heading_title(lines[0]) or file_title(path))
    return Document(path=path, title=title, text="\n".join(lines), sha256=hashlib.sha256(raw).hexdigest())


def running_header(word: Any) -> str:
    """The first line of the first section's page header, if it holds no digits (page numbers and
    dates are not names); "" if there is none."""
    try:
        paragraphs = word.sections[0].header.paragraphs if word.sections else []
    except Exception:  # a damaged header part must not cost the document
        return ""
    for paragraph in paragraphs:
        line = _clean(paragraph.text)
        if line:
            return "" if re.search(r"\d", line) or SENTENCE_END.search(line) else line
    return ""


def _body(blocks: Iterable[Paragraph | Table]) -> tuple[list[str], str]:
    """The lines of the body's paragraphs and tables, in order, and its first heading."""
    lines: list[str] = []
    title = ""
    for block in blocks:
        if isinstance(block, Table):
            lines.append(table_text(block))
        elif is_heading(block):
            heading = _clean(block.text)
            title = title or heading
            lines.append(heading)
        else:
            lines += [_clean(line) for line in block.text.split("\n")]
    return [line for line in lines if line], title


def is_heading(paragraph: Paragraph) -> bool:
    """Whether the paragraph's style is Title or Heading N (标题, 标题 N in Chinese WPS)."""
    name = paragraph.style.name if paragraph.style is not None else ""
    return bool(_HEADING_STYLE.fullmatch((name or "").strip()))


def table_text(table: Table) -> str:
    """A table as one paragraph: "cell，cell；" per row; a merged cell counts once, empty ones not at all."""
    rows = []
    for row in table.rows:
        cells = row.cells  # a cell spanning n columns is the same object n times
        texts = [_clean(c.text).rstrip("。；;，,") for i, c in enumerate(cells) if i == 0 or c is not cells[i - 1]]
        if any(texts):
            rows.append(CELL_SEP.join(t for t in texts if t) + ROW_END)
    return "".join(rows)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
