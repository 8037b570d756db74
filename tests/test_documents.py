from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qa.documents import decode, html_to_text, parse_document, read_documents
from qa.errors import DocumentsError
from tests.conftest import SEEDS

CHINESE = "疫情防控，人人有责！“外防输入、内防反弹”。"


def test_decodes_utf8_bom_and_gbk():
    assert decode(CHINESE.encode("utf-8")) == CHINESE
    assert decode(b"\xef\xbb\xbf" + CHINESE.encode("utf-8")) == CHINESE
    assert decode(CHINESE.encode("gbk")) == CHINESE
    assert decode(CHINESE.encode("gb18030")) == CHINESE
    assert decode(CHINESE.encode("utf-16")) == CHINESE


def test_binary_and_unreadable_files_are_skipped_with_a_warning(tmp_path: Path, caplog):
    (tmp_path / "good.txt").write_text(CHINESE, encoding="utf-8")
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR" + bytes(range(256)))
    (tmp_path / "empty.md").write_text("   \n\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        docs = read_documents(tmp_path)
    assert [d.path for d in docs] == ["good.txt"]
    assert "image.txt" in caplog.text and "binary" in caplog.text
    assert "empty.md" in caplog.text


def test_markdown_front_matter_becomes_metadata():
    raw = "---\ntitle: '抓紧抓实疫情防控'\nauthor: 新华社\ndate: 2022-05-05\n---\n\n# 标题\n\n正文第一段。\n\n> 引用的第二段。\n".encode()
    doc = parse_document(raw, "a.md")
    assert doc.title == "抓紧抓实疫情防控"
    assert doc.meta["author"] == "新华社"
    assert doc.meta["date"] == "2022-05-05"
    assert doc.text.split("\n") == ["标题", "正文第一段。", "引用的第二段。"]


def test_html_parser_drops_tags_scripts_and_styles_and_keeps_paragraphs():
    html = (
        "<html><head><title>页面标题</title><style>p{color:red}</style></head><body>"
        "<p>第一段，<strong>加粗</strong>文字。</p><script>alert('x')</script>"
        '<div class="c"><img src="x.jpg" onerror="evil()">第二段</div><p>A&amp;B &lt;tag&gt;</p></body></html>'
    )
    text, title = html_to_text(html)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    assert title == "页面标题"
    assert lines == ["第一段，加粗文字。", "第二段", "A&B <tag>"]


def test_txt_with_front_matter_and_raw_html_is_read_by_content():
    doc = parse_document((SEEDS / "004_a87b6fb253f9ae0b.txt").read_bytes(), "004_a87b6fb253f9ae0b.txt")
    assert doc.title == "抓紧抓实疫情防控重点工作"
    assert doc.meta["author"] == "ZAKER"
    for bad in ("<", ">", "class=", "src=", "headimg", "categories:", "thumbnail", "---", "http"):
        assert bad not in doc.text, bad
    assert "中共中央政治局常务委员会召开会议" in doc.text


def test_plain_text_title_is_the_first_line():
    doc = parse_document("上海疫情支援的心得体会\n\n正文。".encode(), "x.txt")
    assert doc.title == "上海疫情支援的心得体会"


def test_every_seed_is_read():
    docs = read_documents(SEEDS)
    assert len(docs) == 5
    assert all(d.text and d.title and len(d.sha256) == 64 for d in docs)


def test_missing_and_empty_folders_say_what_to_do(tmp_path: Path):
    with pytest.raises(DocumentsError, match="does not exist.*qa index build --docs"):
        read_documents(tmp_path / "nope")
    with pytest.raises(DocumentsError, match="No readable documents"):
        read_documents(tmp_path)
