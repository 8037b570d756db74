"""Stage 2: Chinese-aware sentence splitting, passages with provenance, duplicate collapsing.

A passage is a run of whole sentences of one paragraph, at most `max_chars` long (a
single longer sentence is cut at commas, then hard), opened by the short heading lines
before it when they fit (up to HEADING_MAX_CHARS more); short lines that do not fit are
packed into passages of their own. Only whitespace is left out. Passages whose text is the same
after NFKC and whitespace normalization, or nearly the same (Jaccard similarity of
character shingles >= `near_dup`), are collapsed into one that cites every source.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

from qa.documents import Document
from qa.formats.base import place_name, place_range

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
_PAGE_PLACE = re.compile(r"第\d+页(?:（OCR）)?")  # a place that is a page, where 第N段 still helps


@dataclass(frozen=True, slots=True)
class Source:
    """Where a passage stands: file, document title, paragraph number (1-based),
    character span [start, end) in `Document.text`, its order among the
    document's passages (0-based, for finding neighbours), the page its start is on
    (1-based; None for formats without pages), the offsets in `Document.text`
    inside the span where a later page starts (a passage that crosses pages), and the names of
    its pages where the document gives them (`Document.places`: slides, worksheet rows)."""

    file: str
    title: str
    paragraph: int
    start: int
    end: int
    order: int
    page: int | None = None
    page_starts: tuple[int, ...] = ()
    places: tuple[str, ...] = ()

    def place_at(self, offset: int) -> str | None:
        """Where character `offset` of the passage's text is, in words (第2页, 第3张幻灯片,
        工作表 人员名单 · 第12行); None without pages."""
        page = self.page_at(offset)
        return None if page is None else place_name(page, self.places, self.page or 1)

    @property
    def paragraph_label(self) -> str:
        """· 第N段, except where the places already say where the passage is and a paragraph
        number would only confuse (a slide, a worksheet row): "" there."""
        if self.places and not any(_PAGE_PLACE.fullmatch(p) for p in self.places if p):
            return ""
        return f" · 第{self.paragraph}段"

    @property
    def place(self) -> str | None:
        """Where the whole passage is, in words: 第1–2页 when it crosses a page; None without pages."""
        if self.page is None:
            return None
        last = self.last_page or self.page
        return place_range(place_name(self.page, self.places, self.page), place_name(last, self.places, self.page))

    def page_at(self, offset: int) -> int | None:
        """The page of character `offset` of the passage's text (None without pages)."""
        if self.page is None:
            return None
        return self.page + bisect.bisect_right(self.page_starts, self.start + offset)

    @property
    def last_page(self) -> int | None:
        return None if self.page is None else self.page + len(self.page_starts)


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
    its own: it opens the next paragraph's first passage, which it gives context. Short
    paragraphs that do not fit there (a list, the cells of a table) become passages of their
    own, packed together like sentences.
    """
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, got {max_chars}")
    passages: list[Passage] = []
    pending: list[tuple[int, int, int]] = []  # short paragraphs (number, start, end) waiting for the next one
    paragraphs = doc.paragraphs
    sections = set(doc.sections)

    def add(first: int, start: int, end: int) -> None:
        text = doc.text[start:end]
        if normalize(text):
            page, starts = doc.page_at(start), doc.page_starts_within(start, end)
            places = doc.places[page - 1 : page + len(starts)] if page is not None and doc.places else ()
            src = Source(doc.path, doc.title, first, start, end, len(passages), page, starts, places)
            passages.append(Passage(passage_id(text), text, (src,)))

    def flush(lines: list[tuple[int, int, int]]) -> None:
        for first, start, end in _pack_lines(doc.text, lines, max_chars):
            add(first, start, end)

    for number, (p_start, p_end) in enumerate(paragraphs, start=1):
        paragraph = doc.text[p_start:p_end]
        if not normalize(paragraph):
            continue
        if p_start in sections:  # a new slide or sheet: what waits belongs to the one before
            flush(pending)
            pending = []
        if p_end - p_start < HEADING_MAX_CHARS and number < len(paragraphs):
            pending.append((number, p_start, p_end))
            continue
        for i, (s, e) in enumerate(pack_sentences(paragraph, max_chars)):
            start, first = p_start + s, number
            if i == 0 and pending:
                keep = len(pending)  # the headings nearest the paragraph that fit in its first passage
                while keep and p_start + e - pending[-keep][1] > max_chars + HEADING_MAX_CHARS:
                    keep -= 1
                flush(pending[: len(pending) - keep])
                if keep:
                    first, start = pending[-keep][0], pending[-keep][1]
                pending = []
            add(first, start, p_start + e)
    flush(pending)  # only whitespace followed them
    return passages


def _pack_lines(text: str, lines: list[tuple[int, int, int]], max_chars: int) -> list[tuple[int, int, int]]:
    """Consecutive short paragraphs (number, start, end) packed into spans (number of the first,
    start, end) of at most `max_chars` characters."""
    spans: list[tuple[int, int, int]] = []
    for number, start, end in lines:
        for s, e in pack_sentences(text[start:end], max_chars):  # cuts a line only if max_chars < HEADING_MAX_CHARS
            if spans and start + e - spans[-1][1] <= max_chars:
                spans[-1] = (spans[-1][0], spans[-1][1], start + e)
            else:
                spans.append((number, start + s, start + e))
    return spans


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    key = normalize(text)
    if len(key) <= n:
        return frozenset({key})
    return frozenset(key[i : i + n] for i in range(len(key) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def collapse_duplicates(passages: list[Passage], near_dup: float = DEFAULT_NEAR_DUP) -> list[Passage]:
    """Merge exact and near-duplicate passages into the first of them, keeping every source.

    Only pairs that pass the size, prefix and position filters of `_candidates` are compared:
    each filter is necessary for Jaccard >= near_dup, so the result is that of comparing every
    pair, and the work stays close to linear for a corpus of distinct texts.
    """
    if near_dup <= 0:
        raise ValueError(f"near_dup must be above 0 (1 turns near-duplicate merging off), got {near_dup}")
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
    # Each passage joins the group of the first (in by_size order) earlier passage it nearly equals.
    for j, earlier in _candidates(sets, by_size, near_dup):
        for i in earlier:
            if jaccard(sets[i], sets[j]) >= near_dup:
                parent[j] = _root(parent, i)
                break
    merged: dict[int, Passage] = {}
    for i, p in enumerate(unique):
        r = _root(parent, i)
        head = merged.get(r)
        merged[r] = p if head is None else replace(head, sources=head.sources + p.sources)
    # Keep reading order of the first occurrence.
    return sorted(merged.values(), key=lambda p: (p.source.file, p.source.order))


def _candidates(sets: list[frozenset[str]], by_size: list[int], near_dup: float) -> Iterator[tuple[int, list[int]]]:
    """For each non-empty set j (in `by_size` order), the earlier non-empty sets, in that order,
    that may reach Jaccard >= near_dup with it.

    Three filters, each necessary for Jaccard >= t (Xiao et al.'s PPJoin): sizes within the
    ratio t; with the shingles of every set in one global order (rarest first), a shared
    shingle among the first |s| - ceil(t * |s|) + 1 of each (prefix); and enough shingles
    after the first shared one to reach the overlap t / (1 + t) * (|x| + |y|) (position)."""
    freq = Counter(g for s in sets for g in s)
    rank = {g: r for r, g in enumerate(sorted(freq, key=lambda g: (freq[g], g)))}
    sizes = [len(sets[i]) for i in by_size]
    # shingle -> (position in by_size, index of the shingle in that set's order), positions ascending
    seen: dict[str, list[tuple[int, int]]] = {}
    for pos, j in enumerate(by_size):
        if not sets[j]:
            continue
        size = sizes[pos]
        ordered = sorted(sets[j], key=rank.__getitem__)
        # int() rounds down: a prefix one shingle longer than needed only adds candidates
        prefix = ordered[: size - int(near_dup * size) + 1]
        lo = (bisect.bisect_left(sizes, near_dup * size), -1)  # smaller sets cannot reach near_dup
        first: dict[int, bool] = {}  # candidate -> may it reach the overlap, from its first shared shingle
        for at, g in enumerate(prefix):
            postings = seen.get(g, [])
            for q, q_at in itertools.islice(postings, bisect.bisect_left(postings, lo), None):
                if q not in first:
                    most = 1 + min(size - at - 1, sizes[q] - q_at - 1)
                    first[q] = most >= near_dup / (1 + near_dup) * (size + sizes[q]) - 1e-9
        yield j, [by_size[q] for q in sorted(q for q, ok in first.items() if ok)]
        for at, g in enumerate(prefix):
            seen.setdefault(g, []).append((pos, at))


def _root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


@dataclass(frozen=True, slots=True)
class Unit:
    """An embedded span of a passage: the passage whole (start 0, end len(text)) or one sentence."""

    passage: str
    start: int
    end: int


def sentence_units(passage: Passage) -> list[Unit]:
    """The passage whole, plus each of its sentences if it has several (of at least 4 characters).

    Sentence vectors give fine-grained evidence (and help cross-lingual questions); a
    passage's dense score is the best of its units.
    """
    units = [Unit(passage.id, 0, len(passage.text))]
    spans = split_sentences(passage.text)
    if len(spans) > 1:
        units.extend(Unit(passage.id, s, e) for s, e in spans if e - s >= 4)
    return units
