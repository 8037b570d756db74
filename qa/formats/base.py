"""The document every reader produces, and the error a reader raises. Imports nothing else from qa,
so the readers (qa.documents for txt / md / html, qa.formats.pdf, qa.formats.docx) depend on it and
not on each other."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

TITLE_MAX_CHARS = 40
# A line that ends a sentence (its last mark, then closing quotes or brackets).
SENTENCE_END = re.compile(r"[。！？；!?…：:.][”’」』\"')）】》]*$")


@dataclass(frozen=True, slots=True)
class Document:
    """One source file as clean text. `path` is relative to the documents folder.

    `pages` holds the offset in `text` where each page starts (page 1 first), for
    formats that have pages (PDF); it is empty for the others.
    """

    path: str
    title: str
    text: str
    sha256: str
    meta: Mapping[str, str] = field(default_factory=dict)
    pages: tuple[int, ...] = ()

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


Unreadable = Literal["binary", "encoding", "empty", "no_text_layer", "encrypted", "broken", "legacy_doc"]


class UnreadableFile(Exception):
    """A file that cannot be read as a document; `reason` says why, for messages in other languages."""

    def __init__(self, message: str, reason: Unreadable) -> None:
        super().__init__(message)
        self.reason = reason


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
