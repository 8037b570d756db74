"""PDF: the text layer, read with pypdf, as a `Document` whose `pages` map offsets to pages.

The page layout is undone line by line: running headers and footers (lines that repeat
at the top or bottom of most pages, digits ignored) and bare page numbers are dropped,
and a line that stops mid-sentence at the right margin is joined to the next one, across
page breaks too, so each line of `Document.text` is one paragraph again. A page without a
text layer (a scan) is read by OCR (`qa.formats.ocr`, its largest image), cached by the file's
checksum and the page number, and cited as 第N页（OCR）; a page that has a text layer keeps it,
images or not. Without the OCR engine, scanned pages are skipped with a warning. A PDF with no
text at all, one that needs a password, or a damaged one raises `UnreadableFile`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import unicodedata
from collections import Counter

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from qa.formats.base import (
    OCR_PLACE,
    SENTENCE_END,
    Document,
    UnreadableFile,
    file_title,
    heading_title,
    short_title,
)
from qa.progress import Progress, Stage

log = logging.getLogger(__name__)

EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be a header or footer
REPEATED_ON = 0.5  # a header or footer repeats on more than this share of the pages with text
FULL_LINE = 0.8  # a line at least this share of the usual full line's width reaches the margin
MIN_FULL_WIDTH = 30  # ... and at least 15 Chinese characters wide, so a list of short lines stays a list

_PAGE_NUMBER = re.compile(
    r"[-–—_·\s]*\d{1,4}[-–—_·\s]*"  # 3, - 3 -, —3—
    r"|\d{1,4}\s*/\s*\d{1,4}"  # 3/10
    r"|第\s*[\d一二三四五六七八九十百零〇]+\s*页(?:\s*[,，/]?\s*共\s*[\d一二三四五六七八九十百零〇]+\s*页)?"
    r"|(?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?",
    re.IGNORECASE,
)
# A line that ends a sentence (closing quotes and brackets may follow the mark) ...
_SENTENCE_END = SENTENCE_END
# ... and one that cannot end a paragraph, however short it is.
_OPEN_END = re.compile(r"[，,、（(“‘《「『]$")
_CONTENTS_ENTRY = re.compile(r"(?:[.·…]\s?){3,}\s*\d+$")  # 第一章 总则 ………… 1
_CJK = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")
_JUNK_TITLE = re.compile(r"untitled|无标题|.*\.(?:docx?|wps|pdf|txt)", re.IGNORECASE)


def read_pdf(raw: bytes, path: str, on_progress: Progress | None = None) -> Document:
    """The text of a PDF as a `Document`, one paragraph per line, scanned pages read by OCR
    (raises UnreadableFile). `on_progress` hears Stage.OCR: pages done of this file's scans."""
    reader, pages, meta_title = _extract(raw)
    sha = hashlib.sha256(raw).hexdigest()
    scanned = [i for i, lines in enumerate(pages) if not lines]
    read, why = ocr_pages(reader, scanned, sha, on_progress) if scanned else ({}, "")
    for i, lines in read.items():
        pages[i] = lines
    if not any(pages):
        raise UnreadableFile(
            f"it is a PDF with no text layer (a scan?) and OCR {why or 'found no text in it'}; "
            f"add a clearer scan, or a PDF with text",
            "no_text_layer",
        )
    for number, lines in enumerate(pages, start=1):
        if not lines:
            log.warning("%s: page %d has no text layer and OCR %s; it is skipped", path, number, why or "found no text")
    text, starts = join_lines(drop_running_lines(pages))
    if not text:
        raise UnreadableFile("it has no text", "empty")
    places = tuple(OCR_PLACE.format(page=i + 1) if i in read else "" for i in range(len(starts))) if read else ()
    title = short_title(meta_title or running_header(pages) or heading_title(text) or file_title(path))
    return Document(path=path, title=title, text=text, sha256=sha, pages=starts, places=places)


def ocr_pages(reader: PdfReader, numbers: list[int], sha: str,
              on_progress: Progress | None) -> tuple[dict[int, list[str]], str]:  # fmt: skip
    """The paragraphs OCR reads on the pages `numbers` (0-based) that it finds text on, and why
    it read none ("" when it ran): each page's largest image, cached by file and page."""
    from qa.formats.ocr import cached_ocr, ocr_image, pdf_page_images

    out: dict[int, list[str]] = {}
    for done, i in enumerate(numbers):
        if on_progress is not None:
            on_progress(Stage.OCR, done, len(numbers))
        images = pdf_page_images(reader.pages[i])
        if not images:
            continue
        try:
            lines = cached_ocr(f"{sha}-p{i + 1}", lambda image=images[0]: ocr_image(image))  # type: ignore[misc]
        except UnreadableFile as exc:
            if exc.reason == "no_tool":
                return out, f"is not available ({exc})"
            log.warning("page %d: %s; it is skipped", i + 1, exc)
            continue
        if lines:
            out[i] = lines
    if on_progress is not None:
        on_progress(Stage.OCR, len(numbers), len(numbers))
    return out, ""


def _extract(raw: bytes) -> tuple[PdfReader, list[list[str]], str]:
    """The reader, the non-empty lines of each page, and the title from the PDF's metadata if it is a real one."""
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [_lines(page.extract_text() or "") for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except FileNotDecryptedError as exc:
        raise UnreadableFile(
            "it is a password-protected PDF; save a copy without the password (print to PDF) and add that", "encrypted"
        ) from exc
    except DependencyError as exc:
        raise UnreadableFile(f"it is an encrypted PDF and {exc}; run: pip install cryptography", "encrypted") from exc
    # pypdf meets malformed input with many exception types; one bad file must not stop a build.
    except Exception as exc:
        raise UnreadableFile(
            f"it is a damaged PDF ({type(exc).__name__}: {exc}); open it in a PDF viewer, save or export it again "
            f"and add the new file",
            "broken",
        ) from exc
    title = re.sub(r"^Microsoft Word - ", "", title.strip())
    return reader, pages, "" if _JUNK_TITLE.fullmatch(title) else title


def _lines(page_text: str) -> list[str]:
    """Non-empty lines, whitespace collapsed, and no spaces left between Chinese characters."""
    lines = (_CJK_GAP.sub("", re.sub(r"\s+", " ", line)).strip() for line in page_text.splitlines())
    return [line for line in lines if line]


def _key(line: str) -> str:
    """What a running header or footer keeps from page to page: its text, digits aside."""
    return re.sub(r"\d+", "#", re.sub(r"\s+", "", line))


def _edges(lines: list[str]) -> set[int]:
    n = len(lines)
    return set(range(min(EDGE_LINES, n))) | set(range(max(n - EDGE_LINES, 0), n))


def drop_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """The pages without running headers and footers (a line at a page's edge whose text,
    digits aside, is at the edge of most pages) and without bare page numbers at the edges."""
    with_text = [lines for lines in pages if lines]
    seen = Counter(key for lines in with_text for key in {_key(lines[i]) for i in _edges(lines)})
    running = {key for key, n in seen.items() if n >= 2 and n > REPEATED_ON * len(with_text)}

    def layout(line: str) -> bool:
        return _key(line) in running or bool(_PAGE_NUMBER.fullmatch(line))

    kept = []
    for lines in pages:
        edges = _edges(lines)
        kept.append([line for i, line in enumerate(lines) if not (i in edges and layout(line))])
    return kept


def running_header(pages: list[list[str]]) -> str:
    """The line at the top of most pages (a document's name, repeated as a running header), if it
    holds no digits (page numbers and dates are not names); "" if there is none."""
    with_text = [lines for lines in pages if lines]
    if len(with_text) < 2:
        return ""
    tops = Counter(line for lines in with_text for line in dict.fromkeys(lines[:EDGE_LINES]))
    for line, n in tops.most_common():
        if n < 2 or n <= REPEATED_ON * len(with_text):
            break
        if not re.search(r"\d", line) and not _SENTENCE_END.search(line):
            return line
    return ""


def join_lines(pages: list[list[str]]) -> tuple[str, tuple[int, ...]]:
    """The pages' lines as text with one paragraph per line, and the offset where each page
    starts in it (a page without lines starts where the next one does).

    A line continues on the next one (the next page's first line, after the last of a
    page) when it does not end a sentence and either reaches the right margin or ends in
    a comma or an opening bracket. Short lines without a full stop are headings.
    """
    widths = sorted(_width(line) for lines in pages for line in lines)
    full = max(FULL_LINE * widths[int(0.9 * (len(widths) - 1))], MIN_FULL_WIDTH) if widths else MIN_FULL_WIDTH
    parts: list[str] = []
    size = 0
    starts: list[int | None] = []
    prev = ""
    for lines in pages:
        start = None
        for line in lines:
            if not prev:
                sep = ""
            elif _continues(prev, full):
                sep = _separator(prev, line)
            else:
                sep = "\n"
            parts += [sep, line]
            size += len(sep)
            start = size if start is None else start
            size += len(line)
            prev = line
        starts.append(start)
    filled: list[int] = []
    for start in reversed(starts):
        filled.append(start if start is not None else filled[-1] if filled else size)
    return "".join(parts), tuple(reversed(filled))


def _continues(line: str, full: float) -> bool:
    if _SENTENCE_END.search(line) or _CONTENTS_ENTRY.search(line):
        return False
    return bool(_OPEN_END.search(line)) or _width(line) >= full


def _separator(prev: str, line: str) -> str:
    """A space between two Latin words or numbers split by a line break; nothing in Chinese."""
    return " " if prev[-1].isascii() and prev[-1].isalnum() and line[0].isascii() and line[0].isalnum() else ""


def _width(line: str) -> int:
    """Display width: Chinese characters are twice as wide as Latin ones."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)
