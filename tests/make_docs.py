"""Test documents made at test time, so nothing binary is committed: PDFs drawn with
reportlab's built-in Chinese font (STSong-Light, no font file needed) and Word files
written with python-docx."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

FONT = "STSong-Light"
SIZE = 12
MARGIN = 72
TEXT_WIDTH = A4[0] - 2 * MARGIN
IMAGE_PAGE = None  # in a page list: a page drawn with shapes only, as a scan has no text layer

pdfmetrics.registerFont(UnicodeCIDFont(FONT))


def wrap(paragraph: str, width: float = TEXT_WIDTH) -> list[str]:
    """The lines a typesetter would make: Chinese breaks anywhere, a Latin word never."""
    lines, line = [], ""
    for token in re.findall(r"[A-Za-z0-9.%]+ ?| |.", paragraph):
        if line and pdfmetrics.stringWidth((line + token).rstrip(), FONT, SIZE) > width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line += token
    return [*lines, line.rstrip()] if line.strip() else lines


def layout(paragraphs: Sequence[str], lines_per_page: int) -> list[list[str]]:
    """Paragraphs wrapped and poured into pages of `lines_per_page` lines."""
    lines = [line for p in paragraphs for line in wrap(p)]
    return [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)]


def pdf_bytes(pages: Sequence[Sequence[str] | None], *, header: str = "", footer: str = "", title: str = "") -> bytes:
    """A PDF with one page per item: its body lines drawn top down under `header`, above
    `footer` (formatted with `page` and `pages`), or for IMAGE_PAGE shapes and no text."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    if title:
        c.setTitle(title)
    height = A4[1]
    for number, lines in enumerate(pages, start=1):
        if lines is IMAGE_PAGE:
            c.rect(MARGIN, height / 2, TEXT_WIDTH, 200, fill=1)
            c.circle(A4[0] / 2, height / 3, 80, fill=0)
        else:
            c.setFont(FONT, 9)
            if header:
                c.drawString(MARGIN, height - 40, header)
            if footer:
                c.drawCentredString(A4[0] / 2, 30, footer.format(page=number, pages=len(pages)))
            c.setFont(FONT, SIZE)
            for i, line in enumerate(lines):
                c.drawString(MARGIN, height - MARGIN - i * SIZE * 1.6, line)
        c.showPage()
    c.save()
    return buf.getvalue()


def encrypted_pdf(pdf: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner-" + user_password, algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


Block = tuple[str, str] | list[list[str]]


def docx_bytes(blocks: Sequence[Block], core_title: str = "", header: str = "") -> bytes:
    """A .docx from ("Title" | "Heading N" | "Normal", text) paragraphs and tables (lists of rows),
    with `header` as its page header."""
    import docx

    word = docx.Document()
    word.core_properties.title = core_title
    if header:
        word.sections[0].header.paragraphs[0].text = header
    for block in blocks:
        if isinstance(block, list):
            table = word.add_table(rows=len(block), cols=len(block[0]))
            for row, values in zip(table.rows, block, strict=True):
                for cell, value in zip(row.cells, values, strict=True):
                    cell.text = value
        else:
            style, text = block
            word.add_paragraph(text, style=style)
    buf = io.BytesIO()
    word.save(buf)
    return buf.getvalue()
