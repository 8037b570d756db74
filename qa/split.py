"""Stage 2: Chinese-aware sentence splitting, passages with provenance, duplicate collapsing.

A passage is a run of whole sentences of one paragraph, at most `max_chars` long (a
single longer sentence is cut at commas, then hard). Passages whose text is the same
after NFKC and whitespace normalization, or nearly the same (Jaccard similarity of
character shingles >= `near_dup`), are collapsed into one that cites every source.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace

from qa.documents import Document

DEFAULT_MAX_CHARS = 300  # measured: 120 / 200 / 300 (see README)
DEFAULT_NEAR_DUP = 0.9
SHINGLE = 3
NEAR_DUP_MIN_CHARS = 30
HEADING_MAX_CHARS = 30

# A sentence ends at 。！？；!?… (or ; and a Western full stop followed by a space),
# together with any closing quotes or brackets right after it.
_SENTENCE = re.compile(
    r"[^。！？；!?…;]*?(?:[。！？；!?;]+|…+|\.(?=\s)|$)[”’」』\"')）】]*",
)
_SOFT_BREAK = re.compile(r"[，,、：:]")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a passage stands: file, document title, paragraph number (1-based),
    character span [start, end) in `Document.text`, its order among the
    document's passages (0-based, for finding neighbours), and the page its start
    is on (1-based; None for formats without pages)."""

    file: str
    title: str
    paragraph: int
    start: int
    end: int
    order: int
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrievable unit of text; `id` is a hash of its normalized text."""

    id: str
    text: str
    sources: tuple[Source, ...]

    @property
    def source(self) -> Source:
        return self.sources[0]


def normalize(text: str) -> str:
    """NFKC, lower case, all whitespace removed: the key for duplicates and answer matching."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def passage_id(text: str) -> str:
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:16]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text`, leading/trailing whitespace excluded."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Cut one over-long sentence at soft breaks (commas), else hard, into <= max_chars pieces."""
    pieces: list[tuple[int, int]] = []
    while end - start > max_chars:
        window = text[start : start + max_chars]
        cuts = [m.end() for m in _SOFT_BREAK.finditer(window)]
        cut = cuts[-1] if cuts and cuts[-1] > max_chars // 3 else max_chars
        pieces.append((start, start + cut))
        start += cut
    pieces.append((start, end))
    return pieces


def pack_sentences(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Greedily merge consecutive sentences into spans of at most `max_chars` characters."""
    sentences: list[tuple[int, int]] = []
    for s, e in split_sentences(text):
        sentences.extend(_cut_long(text, s, e, max_chars) if e - s > max_chars else [(s, e)])
    spans: list[tuple[int, int]] = []
    for s, e in sentences:
        if spans and e - spans[-1][0] <= max_chars:
            spans[-1] = (spans[-1][0], e)
        else:
            spans.append((s, e))
    return spans


def split_document(doc: Document, max_chars: int = DEFAULT_MAX_CHARS) -> list[Passage]:
    """The passages of one document, in reading order, each with one `Source`.

    A short paragraph (a heading such as "【篇1】疫情防控工作会议讲话") is not a passage of
    its own: it opens the next paragraph's first passage, which it gives context.
    """
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, got {max_chars}")
    passages: list[Passage] = []
    heading: tuple[int, int] | None = None  # (paragraph number, start) of pending headings
    paragraphs = doc.paragraphs
    for number, (p_start, p_end) in enumerate(paragraphs, start=1):
        paragraph = doc.text[p_start:p_end]
        if not normalize(paragraph):
            continue
        if p_end - p_start < HEADING_MAX_CHARS and number < len(paragraphs):
            heading = heading or (number, p_start)
            continue
        for i, (s, e) in enumerate(pack_sentences(paragraph, max_chars)):
            start, first = p_start + s, number
            if i == 0 and heading is not None and p_start + e - heading[1] <= max_chars + HEADING_MAX_CHARS:
                first, start = heading
            heading = None
            text = doc.text[start : p_start + e]
            if normalize(text):
                src = Source(doc.path, doc.title, first, start, p_start + e, len(passages), doc.page_at(start))
                passages.append(Passage(passage_id(text), text, (src,)))
        heading = None
    return passages


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    key = normalize(text)
    if len(key) <= n:
        return frozenset({key})
    return frozenset(key[i : i + n] for i in range(len(key) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def collapse_duplicates(passages: list[Passage], near_dup: float = DEFAULT_NEAR_DUP) -> list[Passage]:
    """Merge exact and near-duplicate passages into the first of them, keeping every source.

    Near-duplicates are found among passages whose shingle-set sizes are within the
    ratio `near_dup` (a necessary condition for Jaccard >= near_dup), so the work stays
    close to linear for a corpus of distinct texts.
    """
    kept: dict[str, Passage] = {}
    for p in passages:
        if p.id in kept:
            first = kept[p.id]
            kept[p.id] = replace(first, sources=first.sources + p.sources)
        else:
            kept[p.id] = p
    unique = list(kept.values())
    if near_dup >= 1.0:
        return unique
    # Short texts (headings) differ in a digit or two and are not near-duplicates.
    sets = [shingles(p.text) if len(normalize(p.text)) >= NEAR_DUP_MIN_CHARS else frozenset() for p in unique]
    by_size = sorted(range(len(unique)), key=lambda i: len(sets[i]))
    parent = list(range(len(unique)))
    for pos, i in enumerate(by_size):
        for j in by_size[pos + 1 :]:
            if len(sets[i]) < near_dup * len(sets[j]):
                break
            if sets[i] and parent[j] == j and jaccard(sets[i], sets[j]) >= near_dup:
                parent[j] = _root(parent, i)
    merged: dict[int, Passage] = {}
    for i, p in enumerate(unique):
        r = _root(parent, i)
        head = merged.get(r)
        merged[r] = p if head is None else replace(head, sources=head.sources + p.sources)
    # Keep reading order of the first occurrence.
    return sorted(merged.values(), key=lambda p: (p.source.file, p.source.order))


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i
