"""The document every reader produces, and the error a reader raises. Imports nothing from qa
but its error base (qa.errors, which imports nothing), so the readers (qa.documents for txt / md /
html, and each module of qa.formats) depend on it and not on each other."""

from __future__ import annotations

import bisect
import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from qa.errors import QAError

TITLE_MAX_CHARS = 40
# A line that ends a sentence (its last mark, then closing quotes or brackets).
SENTENCE_END = re.compile(r"[。！？；!?…：:.][”’」』\"')）】》]*$")


@dataclass(frozen=True, slots=True)
class Document:
    """One source file as clean text. `path` is relative to the documents folder.

    `pages` holds the offset in `text` where each page starts (page 1 first), for
    formats that have pages or other numbered places (PDF pages, slides, worksheet rows); it is
    empty for the others. `places` names each of them in words where 第N页 would not say it
    (第3张幻灯片, 工作表 人员名单 · 第12行, 第2页（OCR）); it is empty or as long as `pages`.
    `sections` holds the offsets where a section starts that no passage may cross (a slide, a
    worksheet); pages of a PDF are not sections, since a sentence may run on to the next page.
    """

    path: str
    title: str
    text: str
    sha256: str
    meta: Mapping[str, str] = field(default_factory=dict)
    pages: tuple[int, ...] = ()
    places: tuple[str, ...] = ()
    sections: tuple[int, ...] = ()

    def place_at(self, offset: int) -> str | None:
        """The place of character `offset` of `text` in words (第2页, 第3张幻灯片 …), None without pages."""
        page = self.page_at(offset)
        return None if page is None else place_name(page, self.places)

    def page_at(self, offset: int) -> int | None:
        """The 1-based page that holds character `offset` of `text`, or None without pages."""
        if not self.pages:
            return None
        return max(bisect.bisect_right(self.pages, offset), 1)

    def page_starts_within(self, start: int, end: int) -> tuple[int, ...]:
        """The offsets in (start, end) where a page starts: the page breaks inside a span."""
        return tuple(p for p in self.pages[1:] if start < p < end)

    @property
    def paragraphs(self) -> list[tuple[int, int]]:
        """Character spans of the paragraphs (the non-empty lines) of `text`."""
        return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", self.text)]


Unreadable = Literal[
    "binary", "encoding", "empty", "no_text_layer", "encrypted", "broken", "legacy_doc", "too_large", "no_tool"
]
MAX_UNZIPPED_BYTES = 256 * 2**20  # an Office file (a zip) that unpacks beyond this is refused
OCR_PLACE = "第{page}页（OCR）"  # how a citation names an OCR'd page: its text may hold recognition errors


class UnreadableFile(QAError):
    """A file that cannot be read as a document; `reason` says why, for messages in other languages."""

    def __init__(self, message: str, reason: Unreadable) -> None:
        super().__init__(message)
        self.reason = reason


def check_zip(raw: bytes, path: str, limit: int | None = None) -> None:
    """Refuse an Office file whose zip would unpack beyond `limit` (a zip bomb, or a workbook too
    big to read in one go) before any reader inflates it (`limit`: MAX_UNZIPPED_BYTES); a file that
    is no zip is left to the reader."""
    limit = MAX_UNZIPPED_BYTES if limit is None else limit
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    if total > limit:
        raise UnreadableFile(
            f"it unpacks to {total / 2**20:,.0f} MB, more than the {limit / 2**20:,.0f} MB read from one file; "
            f"split {file_title(path)} into smaller files",
            "too_large",
        )


def place_name(page: int, places: tuple[str, ...], first: int = 1) -> str:
    """The words for 1-based `page`: its entry in `places` (which starts at page `first`), or 第N页."""
    i = page - first
    return places[i] if 0 <= i < len(places) and places[i] else f"第{page}页"


_NUMBERED = re.compile(r"^(.*第)(\d+)(\D*)$")


def place_range(first: str, last: str) -> str:
    """Two places as one range: 第1–2页, 工作表 名单 · 第2–14行; "a – b" when they differ in more
    than their number."""
    if first == last:
        return first
    a, b = _NUMBERED.match(first), _NUMBERED.match(last)
    if a and b and a.group(1) == b.group(1) and a.group(3) == b.group(3):
        return f"{a.group(1)}{a.group(2)}–{b.group(2)}{a.group(3)}"
    return f"{first} – {last}"


def row_sentence(header: list[str], values: list[str]) -> str:
    """One table row as "表头：值，表头：值；" (a workbook's row, a slide's table row): a cell without
    a header is said alone, an empty one not at all, and a value a merge repeats across the row once."""
    pairs: list[str] = []
    previous = None
    for i, value in enumerate(values):
        if not value or value == previous:
            previous = value or previous
            continue
        previous = value
        key = header[i] if i < len(header) else ""
        pairs.append(f"{key}：{value}" if key and key != value else value)
    return "，".join(pairs) + "；" if pairs else ""


def short_title(title: str) -> str:
    """A title on one line, at most TITLE_MAX_CHARS long (an ellipsis marks the cut)."""
    title = re.sub(r"\s+", " ", title).strip()
    if len(title) > TITLE_MAX_CHARS:
        title = title[:TITLE_MAX_CHARS].rstrip() + "…"
    return title


def file_title(path: str) -> str:
    """A document's title from its file name: the name without its folder and extension."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem.strip() or name


def heading_title(text: str) -> str:
    """The first line of `text` if it reads as a heading (short, no sentence end), else "":
    a sentence is never a title."""
    first = text.split("\n", 1)[0].strip()
    return first if 0 < len(first) <= TITLE_MAX_CHARS and not SENTENCE_END.search(first) else ""
