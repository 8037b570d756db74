"""A short run of the ingest fuzzer (tests/fuzz/fuzz_ingest.py; `make fuzz` runs it for 10
minutes with atheris), and the inputs it found, kept as regressions: reading arbitrary bytes
as .txt / .md / .html, splitting and tokenizing raise only UnreadableFile or a QAError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qa.documents import UnreadableFile, html_to_text, parse_document
from tests.fuzz import fuzz_ingest

fuzz_ingest._load()

# Bytes that look like something: markup, front matter, BOMs, CJK in several encodings.
PIECES = [
    b"---\n",
    b"title: ",
    b"date: 2022-13-45\n",
    b"[",
    b"&a ",
    b"*a",
    b"<p>",
    b"</p>",
    b"<script>",
    b"<!--",
    b"&#xD800;",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\x00",
    "疫情防控。".encode(),
    "疫情防控。".encode("gbk"),
    "疫情防控。".encode("utf-16-le"),
    b"\n",
    b"\r\n",
]
raw_files = st.one_of(st.binary(max_size=2048), st.lists(st.sampled_from(PIECES) | st.binary(max_size=8)).map(b"".join))


@given(raw_files, st.sampled_from(fuzz_ingest.SUFFIXES), st.integers(20, 400), st.text(max_size=40))
def test_ingest_raises_only_declared_errors(raw: bytes, suffix: str, max_chars: int, query: str):
    fuzz_ingest.ingest(raw, suffix, max_chars, query)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff\xfe\x41", id="utf16-odd-length"),
        pytest.param(b"\xfe\xff\x00a\x00", id="utf16-be-truncated"),
        pytest.param(b"\xff\xfe\x00\xd8a\x00", id="utf16-lone-surrogate"),
        pytest.param(b"\xff\xfe" + "\x01\x02\x03\x04".encode("utf-16-le") * 50, id="utf16-control-characters"),
    ],
)
def test_bad_utf16_is_unreadable_not_a_crash(raw: bytes):
    """Found by the fuzzer: UnicodeDecodeError escaped decode() and stopped a whole build."""
    with pytest.raises(UnreadableFile) as info:
        parse_document(raw, "x.txt")
    assert info.value.reason in ("encoding", "binary")


@pytest.mark.parametrize("html", ["<p>甲</p><![foo[ 乙 ]]><p>丙</p>", "<p>甲</p><![C 乙", "<![if x]>甲<![endif]>"])
def test_html_marked_sections_do_not_crash_the_parser(html: str):
    """Found by the fuzzer (atheris, after about 7,000 executions): Python's HTMLParser raises
    AssertionError on a marked section with an unknown keyword."""
    text, _ = html_to_text(html)
    assert "甲" in text
    parse_document(html.encode(), "x.html")


@pytest.mark.parametrize(
    "front",
    [
        pytest.param("date: 2022-13-45", id="impossible-date"),  # ValueError from PyYAML's timestamp
        pytest.param("a: " + "[" * 3000, id="deep-nesting"),  # RecursionError
    ],
)
def test_front_matter_yaml_cannot_parse_is_read_as_text(front: str):
    doc = parse_document(f"---\n{front}\n---\n正文。".encode(), "x.md")
    assert doc.text.endswith("正文。") and doc.meta == {}


def test_front_matter_alias_bomb_is_not_expanded():
    """YAML aliases let a few hundred bytes stand for a list of billions of items; front matter
    values used to be printed whole (9 levels like these: a minute and 4 GB; 10: killed)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    raw = ("---\ntitle: 标题\n" + "\n".join(lines) + "\ncategories: [*a6, *a6, 防疫]\n---\n正文。").encode()
    doc = parse_document(raw, "bomb.md")
    assert doc.title == "标题" and doc.text == "正文。"
    assert doc.meta["categories"] == "防疫"  # nested lists are not printed into metadata


def test_metadata_values_are_bounded():
    raw = ("---\nauthor: &a " + "长" * 5000 + "\nsource: [*a, *a, *a, *a]\n---\n正文。").encode()
    doc = parse_document(raw, "long.md")
    assert len(doc.meta["author"]) <= 1000 and len(doc.meta["source"]) <= 1000


def test_undecodable_command_line_bytes_tokenize():
    """Found by the fuzzer: a lone surrogate (what Python makes of an undecodable byte in argv)
    crashed opencc inside tokenize()."""
    from qa.lexical import tokenize

    assert tokenize("\udcff\udcfe上海") == ["上海"]
    assert tokenize("\ud800") == []
