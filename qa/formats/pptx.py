"""PowerPoint .pptx: one section per slide, read with python-pptx.

A slide opens with its title on a line of its own (a heading: the splitter opens a passage
with it; 第N张幻灯片 when the slide has no title). Then come its text boxes in reading order
(top to bottom, then left to right; the shapes inside a group too), one line per paragraph, its
tables as one paragraph of rows ("表头：值，表头：值；", as in a workbook), and its speaker notes
after 备注：. Each slide is a place of its own (`Document.pages` / `places`), so a citation
names it: 第3张幻灯片. The document's title is the core title, else the first slide's title,
else the file name.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from typing import Any

from qa.formats.base import (
    SENTENCE_END,
    TITLE_MAX_CHARS,
    Document,
    UnreadableFile,
    check_zip,
    file_title,
    row_sentence,
    short_title,
)

NOTES = "备注："


def read_pptx(raw: bytes, path: str) -> Document:
    """The text of a .pptx deck as a `Document` with one place per slide (raises UnreadableFile)."""
    check_zip(raw, path)
    import pptx  # imported on first use: a corpus without decks never pays for it

    try:
        deck = pptx.Presentation(io.BytesIO(raw))
        slides = [slide_lines(slide) for slide in deck.slides]
        core_title = deck.core_properties.title or ""
    except Exception as exc:  # python-pptx meets malformed zips and XML with many exception types
        raise UnreadableFile(
            f"it is a damaged .pptx file ({type(exc).__name__}: {exc}); open it in PowerPoint or WPS, "
            f"save it again and add the new file",
            "broken",
        ) from exc
    lines: list[str] = []
    pages: list[int] = []
    places: list[str] = []
    offset = 0
    first_title = ""
    for number, (title, body) in enumerate(slides, start=1):
        if not body and not title:
            continue
        first_title = first_title or title
        pages.append(offset)  # a slide is a page and a section: no passage crosses it
        places.append(f"第{number}张幻灯片")
        for line in [title or f"第{number}张幻灯片", *body]:
            lines.append(line)
            offset += len(line) + 1
    if not any(body for _, body in slides) and not first_title:
        raise UnreadableFile("it has no text", "empty")
    title = short_title(core_title or _title_like(first_title) or file_title(path))
    return Document(path=path, title=title, text="\n".join(lines), sha256=hashlib.sha256(raw).hexdigest(),
                    pages=tuple(pages), places=tuple(places), sections=tuple(pages))  # fmt: skip


def slide_lines(slide: Any) -> tuple[str, list[str]]:
    """A slide's title and the lines of its text boxes, tables and notes, in reading order."""
    title_shape = slide.shapes.title
    title = _clean(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    lines: list[str] = []
    for shape in sorted(_shapes(slide.shapes), key=_position):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = table_text(shape.table)
            if rows:
                lines.append(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            lines += [_clean(p.text) for p in shape.text_frame.paragraphs]
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        text = " ".join(_clean(p.text) for p in notes.paragraphs) if notes is not None else ""
        if text.strip():
            lines.append(NOTES + text.strip())
    return title, [line for line in lines if line]


def table_text(table: Any) -> str:
    """A table as one paragraph, its first row the header: "表头：值，表头：值；" per later row (a
    table of one row: its cells); a merged cell counts once, empty ones not at all."""
    rows = [[_clean(c.text).rstrip("。；;，,") if not c.is_spanned else "" for c in row.cells] for row in table.rows]
    rows = [row for row in rows if any(row)]
    if len(rows) == 1:
        return row_sentence([], rows[0])
    return "".join(row_sentence(rows[0], row) for row in rows[1:])


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, the members of a group in its place."""
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _position(shape: Any) -> tuple[int, int]:
    return (shape.top or 0, shape.left or 0)


def _title_like(text: str) -> str:
    return text if 0 < len(text) <= TITLE_MAX_CHARS and not SENTENCE_END.search(text) else ""


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
