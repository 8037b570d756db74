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


Sheet = tuple[str, Sequence[Sequence[object]], Sequence[str]]  # name, rows (None: an empty cell), merged ranges


def xlsx_bytes(sheets: Sequence[Sheet], core_title: str = "") -> bytes:
    """A workbook written with openpyxl: each sheet's rows from A1 down, then its merged ranges
    (e.g. "A1:D1"; openpyxl keeps the top-left value and empties the rest, as Excel does)."""
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows, merged in sheets:
        ws = book.create_sheet(name)
        for row in rows:
            ws.append(list(row))
        for cells in merged:
            ws.merge_cells(cells)
    book.properties.title = core_title or None
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


Slide = tuple[str, Sequence[str], Sequence[Sequence[str]], str]  # title, text lines, table rows, notes


def pptx_bytes(slides: Sequence[Slide], core_title: str = "") -> bytes:
    """A deck written with python-pptx: per slide a title, a text box below it (added before the
    title, so reading order must come from the position), a table and speaker notes."""
    import pptx
    from pptx.util import Inches, Pt

    deck = pptx.Presentation()
    for title, lines, table, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[5])  # title only
        if lines:
            box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(2))
            box.text_frame.text = "\n".join(lines)
            box.text_frame.paragraphs[0].runs[0].font.size = Pt(18)
        slide.shapes.title.text = title
        if table:
            shape = slide.shapes.add_table(len(table), len(table[0]), Inches(1), Inches(4.5), Inches(8), Inches(1.5))
            for r, row in enumerate(table):
                for c, value in enumerate(row):
                    shape.table.cell(r, c).text = value
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    deck.core_properties.title = core_title
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def doc_bytes(paragraphs: Sequence[str]) -> bytes:
    """A legacy Word 97 .doc holding `paragraphs`, written by hand: no tool here writes .doc.

    A compound file (CFB v3: a header, one FAT sector, one directory sector) with two streams:
    WordDocument (a Word 97 FIB, then the text in UTF-16LE, paragraphs ended by \\r) and 1Table
    (the CLX: one piece covering the text). Streams are padded past the mini-stream cutoff, so
    both live in ordinary sectors. Enough for antiword and catdoc, which is what the tests need."""
    import struct

    text = "".join(p + "\r" for p in paragraphs)
    fc_text = 0x400
    fib = bytearray(fc_text)
    struct.pack_into("<HHHHHH", fib, 0, 0xA5EC, 0x00C1, 0, 0x0804, 0, 0x0200 | 0x1000 | 0x4000)  # 1Table, FarEast
    struct.pack_into("<H", fib, 0x0C, 0x00BF)
    body = text.encode("utf-16-le")
    struct.pack_into("<II", fib, 0x18, fc_text, fc_text + len(body))  # fcMin / fcMac, which older readers use
    struct.pack_into("<H", fib, 0x20, 14)  # csw: fibRgW is 14 words
    struct.pack_into("<H", fib, 0x3E, 22)  # cslw: fibRgLw is 22 longs
    struct.pack_into("<I", fib, 0x40, fc_text + len(body))  # cbMac
    struct.pack_into("<I", fib, 0x4C, len(text))  # ccpText
    struct.pack_into("<H", fib, 0x98, 0x5D)  # cbRgFcLcb: the Word 97 FibRgFcLcb
    clx = b"\x02" + struct.pack("<I", 16) + struct.pack("<II", 0, len(text)) + struct.pack("<HIH", 0, fc_text, 0)
    struct.pack_into("<II", fib, 0x9A + 33 * 8, 0, len(clx))  # fcClx / lcbClx: the piece table in 1Table
    word = bytes(fib) + body
    streams = [("WordDocument", word.ljust(max(4096, -(-len(word) // 512) * 512), b"\0")),
               ("1Table", clx.ljust(4096, b"\0"))]  # fmt: skip

    sector, end, free = 512, 0xFFFFFFFE, 0xFFFFFFFF
    fat = [0xFFFFFFFD, end]  # sector 0: the FAT itself; sector 1: the directory
    starts = []
    for _, data in streams:
        first, count = len(fat), len(data) // sector
        starts.append(first)
        fat += [first + i + 1 for i in range(count - 1)] + [end]
    assert len(fat) <= sector // 4, "the test .doc outgrew one FAT sector"
    fat_sector = struct.pack(f"<{sector // 4}I", *(fat + [free] * (sector // 4 - len(fat))))

    def entry(name: str, kind: int, child: int, left: int, start: int, size: int) -> bytes:
        raw = (name + "\0").encode("utf-16-le")
        return (raw.ljust(64, b"\0") + struct.pack("<HBBIII", len(raw), kind, 1, left, free, child) + b"\0" * 36
                + struct.pack("<III", start, size, 0))  # fmt: skip

    directory = (
        entry("Root Entry", 5, 1, free, end, 0)
        + entry(streams[0][0], 2, free, 2, starts[0], len(streams[0][1]))  # "1Table" sorts before it
        + entry(streams[1][0], 2, free, free, starts[1], len(streams[1][1]))  # padded sizes: no mini stream
        + entry("", 0, free, free, 0, 0)
    )
    header = bytearray(sector)
    header[:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 0x28, 0, 1, 1, 0, 4096, end, 0, end, 0)  # 1 FAT sector, dir at 1
    struct.pack_into("<109I", header, 0x4C, 0, *([free] * 108))
    return bytes(header) + fat_sector + directory + b"".join(data for _, data in streams)
