"""Properties of splitting (qa/split.py) and tokenization (qa/lexical.py) for any text.

What the splitter promises, for a `Document` with any text (Chinese with full-width
punctuation, mixed scripts, emoji, whitespace runs, HTML fragments, control characters):

- span: every passage is `doc.text[start:end]` of its source, 0 <= start < end <= len(text), and
  its paragraph number is that of the line where it starts;
- order: passages come in reading order and never overlap; `order` counts them;
- size: a passage is at most `max_chars` characters. Over-long sentences are no exception: they
  are cut at the last comma (，,、：:) past the first third of the limit, else hard at the limit.
  The one exception is a passage opened by short heading lines (< HEADING_MAX_CHARS each): it
  is at most `max_chars + HEADING_MAX_CHARS`, and its last line, from its first non-space
  character, is at most `max_chars`;
- cuts: a passage ends mid-sentence only when that sentence is longer than `max_chars`;
- cover: every character of `doc.text` that is not whitespace (str.isspace) lies in some
  passage's span. The splitter drops only whitespace: between sentences, at the ends of lines,
  and lines that hold nothing else;
- determinism: the same text gives the same passages and ids, in this process and in another
  one with another hash seed; the same holds for `tokenize`.

`make test` runs the "ci" profile (200 examples a property); HYPOTHESIS_PROFILE=fuzz runs 20,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from qa.documents import Document, UnreadableFile, parse_document
from qa.lexical import STOPWORDS, fold, tokenize
from qa.split import (
    DEFAULT_MAX_CHARS,
    HEADING_MAX_CHARS,
    NEAR_DUP_MIN_CHARS,
    Passage,
    Source,
    collapse_duplicates,
    jaccard,
    normalize,
    passage_id,
    shingles,
    split_document,
    split_sentences,
)
from tests.conftest import ROOT

FRAGMENTS = [
    # Chinese with full-width punctuation and closing quotes
    "疫情防控，人人有责！",
    "“外防输入、内防反弹”。",
    "上海全市核酸筛查采样2566.5万人",
    "（一）坚持人民至上；",
    "他说：「好的」……",
    "【篇1】",
    "第二段。",
    "这是一个没有任何标点符号而且相当长的句子用来测试硬切分的情况",
    # mixed scripts
    "COVID-19 疫苗 vaccine",
    "Dr. Zhong said so. ",
    "e.g. 3.14",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３",
    "Привет мир",
    "مرحبا بالعالم",
    # emoji, zero-width and direction marks, combining marks
    "😷",
    "👨‍👩‍👧",
    "👍🏽",
    "\u200b",
    "\u200f",
    "\u202e",
    "\ufeff",
    "e\u0301",
    # whitespace runs and line breaks of every kind
    " ",
    "   ",
    "\t",
    "\n",
    "\n\n\n",
    "\r\n",
    "\u3000",
    "\xa0",
    "\x0b",
    "\x0c",
    "\u2028",
    # HTML fragments
    "<p>",
    "</div>",
    "<script>alert(1)</script>",
    '<img src=x onerror="evil()">',
    "&amp;",
    "&lt;b&gt;",
    # control characters
    "\x00",
    "\x01",
    "\x1b[31m",
    "\x7f",
    # sentence ends and soft breaks alone
    "。",
    "！？",
    "，",
    "、",
    "；",
    "…",
    ".",
    ",",
]

texts = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(max_size=12),  # any code point but surrogates
        st.text(alphabet="的一是在不了有和人这中大为上个国我以要他时来用们，。！？、：“”\n ", max_size=60),
    ),
    max_size=50,
).map("".join)
limits = st.integers(min_value=20, max_value=150)


def _doc(text: str) -> Document:
    return Document(path="p.txt", title="题", text=text, sha256="0" * 64)


def _paragraph_of(doc: Document, pos: int) -> int:
    """1-based number of the paragraph (non-empty line) holding `pos`."""
    return 1 + sum(1 for _, end in doc.paragraphs if end <= pos)


def check_spans_and_order(doc: Document, passages: list[Passage]) -> None:
    previous_end = 0
    for n, p in enumerate(passages):
        assert len(p.sources) == 1
        src = p.source
        assert 0 <= src.start < src.end <= len(doc.text)
        assert doc.text[src.start : src.end] == p.text
        assert src.start >= previous_end, "passages overlap or are out of order"
        assert (src.file, src.title, src.order) == (doc.path, doc.title, n)
        assert src.paragraph == _paragraph_of(doc, src.start)
        assert p.id == passage_id(p.text) and normalize(p.text)
        previous_end = src.end


def check_size(passages: list[Passage], max_chars: int) -> None:
    for p in passages:
        if "\n" not in p.text:
            assert len(p.text) <= max_chars
        else:  # opened by heading lines, or short lines packed together
            assert len(p.text) <= max_chars + HEADING_MAX_CHARS
            *headings, last = p.text.split("\n")
            assert all(len(h) < HEADING_MAX_CHARS or not h.strip() for h in headings)
            assert len(last.lstrip()) <= max_chars


def check_cuts(doc: Document, passages: list[Passage], max_chars: int) -> None:
    """A passage ends inside a sentence only if that sentence is longer than max_chars."""
    sentences = []  # (start, end) of every sentence, in document coordinates
    for p_start, p_end in doc.paragraphs:
        sentences += [(p_start + s, p_start + e) for s, e in split_sentences(doc.text[p_start:p_end])]
    for p in passages:
        end = p.source.end
        inside = [(s, e) for s, e in sentences if s < end < e]
        assert not inside or inside[0][1] - inside[0][0] > max_chars, (p.text, inside)


def check_cover(doc: Document, passages: list[Passage]) -> None:
    covered = bytearray(len(doc.text))
    for p in passages:
        covered[p.source.start : p.source.end] = b"\x01" * (p.source.end - p.source.start)
    lost = [(i, ch) for i, ch in enumerate(doc.text) if not covered[i] and not ch.isspace()]
    assert not lost


@given(texts, limits)
def test_passages_lie_in_order_within_the_limit_and_cover_the_text(text: str, max_chars: int):
    doc = _doc(text)
    passages = split_document(doc, max_chars)
    check_spans_and_order(doc, passages)
    check_size(passages, max_chars)
    check_cuts(doc, passages, max_chars)
    check_cover(doc, passages)
    assert split_document(_doc(text), max_chars) == passages  # deterministic


@given(texts)
def test_documents_read_from_bytes_split_and_cover_too(text: str):
    try:
        doc = parse_document(text.encode("utf-8"), "p.md")
    except UnreadableFile:  # empty, or looks binary
        return
    assert "\n\n" not in doc.text and doc.text == doc.text.strip()
    passages = split_document(doc)
    check_spans_and_order(doc, passages)
    check_size(passages, DEFAULT_MAX_CHARS)
    check_cover(doc, passages)


@given(texts)
def test_tokenize_is_deterministic_and_yields_words_of_the_folded_text(text: str):
    tokens = tokenize(text)
    assert tokens == tokenize(text)
    folded = fold(text)
    for t in tokens:
        assert t and t == t.strip() and t in folded
        assert t not in STOPWORDS


def test_splitting_and_tokenizing_are_the_same_in_another_process():
    """Passage ids and tokens do not depend on the process (hash seed, dictionary cache)."""
    samples = ["".join(FRAGMENTS), *FRAGMENTS, (ROOT / "seeds" / "004_a87b6fb253f9ae0b.txt").read_text("utf-8")]
    script = (
        "import json, sys\n"
        "from qa.documents import Document\n"
        "from qa.lexical import tokenize\n"
        "from qa.split import split_document\n"
        "texts = json.loads(sys.stdin.read())\n"
        "out = [[tokenize(t), [[p.id, p.source.start, p.source.end] for p in split_document("
        "Document('p.txt', '题', t, '0' * 64), 40)]] for t in texts]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(samples), capture_output=True, text=True, env=env, check=True
    )
    here = [[tokenize(t), [[p.id, p.source.start, p.source.end] for p in split_document(_doc(t), 40)]] for t in samples]
    assert json.loads(done.stdout) == here


# ---------------------------------------------------------------- duplicates


def _all_pairs_reference(passages: list[Passage], near_dup: float) -> list[Passage]:
    """collapse_duplicates as it was before candidate filtering: every pair of similar size compared."""
    kept: dict[str, Passage] = {}
    for p in passages:
        kept[p.id] = replace(kept[p.id], sources=kept[p.id].sources + p.sources) if p.id in kept else p
    unique = list(kept.values())
    if near_dup >= 1.0:
        return unique
    sets = [shingles(p.text) if len(normalize(p.text)) >= NEAR_DUP_MIN_CHARS else frozenset() for p in unique]
    by_size = sorted(range(len(unique)), key=lambda i: len(sets[i]))
    parent = list(range(len(unique)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for pos, i in enumerate(by_size):
        for j in by_size[pos + 1 :]:
            if len(sets[i]) < near_dup * len(sets[j]):
                break
            if sets[i] and parent[j] == j and jaccard(sets[i], sets[j]) >= near_dup:
                parent[j] = root(i)
    merged: dict[int, Passage] = {}
    for i, p in enumerate(unique):
        head = merged.get(root(i))
        merged[root(i)] = p if head is None else replace(head, sources=head.sources + p.sources)
    return sorted(merged.values(), key=lambda p: (p.source.file, p.source.order))


_BASE = "各级党组织要坚持人民至上生命至上坚持外防输入内防反弹坚持动态清零不断提高科学精准防控水平统筹好疫情防控和经济社会发展"


@st.composite
def near_duplicate_passages(draw: st.DrawFn) -> list[Passage]:
    """Passages cut from one long text with small edits, so that many pairs are near-duplicates."""
    out = []
    cuts = draw(
        st.lists(st.tuples(st.integers(0, 20), st.integers(10, 50), st.integers(0, 2**16)), min_size=1, max_size=20)
    )
    for n, (start, length, edits) in enumerate(cuts):
        text = list(_BASE[start : start + length])
        for k in range(edits % 4):  # up to 3 characters changed
            text[(edits >> (4 * k)) % len(text)] = "的了和与及改换"[k]
        body = "".join(text)
        src = Source(f"{n % 3}.txt", "题", 1, n, n + len(body), n)
        out.append(Passage(passage_id(body), body, (src,)))
    return out


@given(near_duplicate_passages(), st.sampled_from([0.5, 0.7, 0.8, 0.9, 0.95, 1.0]))
def test_collapsing_duplicates_equals_comparing_every_pair(passages: list[Passage], near_dup: float):
    collapsed = collapse_duplicates(passages, near_dup)
    assert collapsed == _all_pairs_reference(passages, near_dup)
    assert sorted(s.order for p in collapsed for s in p.sources) == sorted(p.source.order for p in passages)


# ---------------------------------------------------------------- regressions found by these properties


def test_short_lines_that_do_not_fit_before_a_paragraph_are_kept():
    """A run of short lines (a list, table cells) before a long paragraph used to vanish: they
    waited to open the paragraph's first passage, did not fit there, and were dropped."""
    items = [f"第{i}条：勤洗手戴口罩" for i in range(1, 13)]
    paragraph = "这是正文的第一句，讲的是疫情防控的要求。" * 6
    text = "\n".join([*items, paragraph])
    passages = split_document(_doc(text), 120)
    joined = "\n".join(p.text for p in passages)
    assert all(item in joined for item in items)
    # the headings nearest the paragraph that fit still open it, the others are packed together
    opening = next(p for p in passages if "这是正文" in p.text)
    assert opening.text.startswith(items[-2] + "\n" + items[-1] + "\n这是正文")
    assert passages[0].text == "\n".join(items[:10])


def test_a_heading_before_only_blank_lines_is_kept():
    passages = split_document(_doc("标题\n   \n\t"), 40)
    assert [p.text for p in passages] == ["标题"]
