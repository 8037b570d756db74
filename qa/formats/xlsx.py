"""Excel .xlsx: each sheet a section, each row a sentence of 表头：值 pairs, read with openpyxl.

A sheet opens with its name on a line of its own (a heading: the splitter opens a passage with
it). Its first non-empty row is the header; a row above it that holds one value only, merged
across the columns, is the sheet's caption and is kept as a line. Every later row becomes one
sentence, "表头：值，表头：值；", so that 张三的电话 finds the row that holds both. A merged cell
gives its value to every cell it covers (a 部门 merged down five rows is in all five), and a
value repeated across a row by a merge is said once. Empty rows and columns are left out.

Each row is a place of its own (`Document.pages` / `places`), so a citation names the sheet
and the row as Excel numbers it: 工作表 人员名单 · 第12行. Formulas give their cached value
(the value Excel showed when the file was saved).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from typing import Any

from qa.formats.base import Document, UnreadableFile, check_zip, file_title, row_sentence, short_title

MAX_CELLS = 500_000  # a workbook beyond this is refused with a message, not read for minutes
CELL_SEP = "，"
ROW_END = "；"


def read_xlsx(raw: bytes, path: str) -> Document:
    """The text of an .xlsx workbook as a `Document` with one place per row (raises UnreadableFile)."""
    check_zip(raw, path)
    import openpyxl  # imported on first use: a corpus without workbooks never pays for it

    try:
        book = openpyxl.load_workbook(io.BytesIO(raw), data_only=True)
    except Exception as exc:  # openpyxl meets malformed zips and XML with many exception types
        raise UnreadableFile(
            f"it is a damaged .xlsx file ({type(exc).__name__}: {exc}); open it in Excel or WPS, "
            f"save it again and add the new file",
            "broken",
        ) from exc
    cells = sum((ws.max_row or 0) * (ws.max_column or 0) for ws in book.worksheets)
    if cells > MAX_CELLS:
        raise UnreadableFile(
            f"it has {cells:,} cells, more than the {MAX_CELLS:,} read from one workbook; "
            f"split it into smaller files or export the sheets that matter",
            "too_large",
        )
    lines: list[str] = []
    pages: list[int] = []
    places: list[str] = []
    sections: list[int] = []
    offset = 0
    for ws in book.worksheets:
        sheet = sheet_lines(ws)
        if sheet:
            sections.append(offset)
        for line, place in sheet:
            pages.append(offset)
            places.append(place)
            lines.append(line)
            offset += len(line) + 1
    if not lines:
        raise UnreadableFile("it has no text", "empty")
    title = short_title(book.properties.title or file_title(path))
    return Document(path=path, title=title, text="\n".join(lines), sha256=hashlib.sha256(raw).hexdigest(),
                    pages=tuple(pages), places=tuple(places), sections=tuple(sections))  # fmt: skip


def sheet_lines(ws: Any) -> list[tuple[str, str]]:
    """The lines of one sheet with their places: its name, a caption, then one line per row.

    The rows go on lines of their own but read as sentences of one section: the splitter packs
    short lines into passages like the rows of a table."""
    grid = _grid(ws)
    rows = [(number, values) for number, values in grid if any(values)]
    if not rows:
        return []
    name = _clean(ws.title) or "工作表"
    sheet = f"工作表 {name}"
    out: list[tuple[str, str]] = []
    header_at = 0
    while header_at < len(rows) - 1 and len(rows[header_at][1]) > 1 and _single_value(rows[header_at][1]):
        header_at += 1  # a caption merged across the columns, above the header
    header_number, header = rows[header_at]
    out.append((name, f"{sheet} · 第{rows[0][0]}行"))
    out += [(_single_value(values) or "", f"{sheet} · 第{number}行") for number, values in rows[:header_at]]
    if len(rows) == header_at + 1:  # a header alone: its cells are the text
        out.append((CELL_SEP.join(v for v in _once(header) if v) + ROW_END, f"{sheet} · 第{header_number}行"))
        return out
    for number, values in rows[header_at + 1 :]:
        line = row_sentence(header, values)
        if line:
            out.append((line, f"{sheet} · 第{number}行"))
    return out


def _grid(ws: Any) -> list[tuple[int, list[str]]]:
    """Every row of the sheet as (Excel row number, cell texts), merged cells filled in."""
    fill: dict[tuple[int, int], Any] = {}
    for merged in ws.merged_cells.ranges:
        value = ws.cell(merged.min_row, merged.min_col).value
        for r in range(merged.min_row, merged.max_row + 1):
            for c in range(merged.min_col, merged.max_col + 1):
                fill[(r, c)] = value
    grid = []
    for r, row in enumerate(ws.iter_rows(values_only=True), start=ws.min_row):
        texts = [_text(fill.get((r, c), v)) for c, v in enumerate(row, start=ws.min_column)]
        grid.append((r, texts))
    used = [c for c in range(max((len(t) for _, t in grid), default=0)) if any(c < len(t) and t[c] for _, t in grid)]
    return [(r, [t[c] if c < len(t) else "" for c in used]) for r, t in grid]


def _single_value(values: list[str]) -> str:
    """The one value of a row that holds one value (a caption), else ""."""
    distinct = {v for v in values if v}
    return distinct.pop() if len(distinct) == 1 else ""


def _once(values: list[str]) -> list[str]:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def _text(value: Any) -> str:
    """A cell's value as it reads: 1.0 → 1, a date as 2022-04-05, no line breaks inside."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return f"{value:.10g}" if not value.is_integer() else str(int(value))
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M") if (value.hour, value.minute) != (0, 0) else value.strftime("%Y-%m-%d")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return _clean(str(value)).rstrip("。；;，,")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
