"""PDF and Word documents (qa/formats/), generated at test time by tests/make_docs.py."""

from __future__ import annotations

import bisect
import io
import itertools
import json
import logging
import zipfile
from pathlib import Path

import pytest

from qa.documents import Document, UnreadableFile, parse_document, read_documents
from qa.formats.pdf import drop_running_lines, join_lines
from qa.split import normalize, split_document
from tests.conftest import SEEDS
from tests.make_docs import IMAGE_PAGE, docx_bytes, encrypted_pdf, layout, pdf_bytes, wrap

HEADER = "某市疫情防控指挥部办公室 2022年第3期"
FOOTER = "第 {page} 页 共 {pages} 页"

RULES = [
    "防疫物资储备管理办法",
    "一、总则",
    "为加强全市防疫物资的储备和管理，保障突发公共卫生事件发生时防疫物资的及时供应，"
    "根据有关法律法规和上级部门的工作要求，结合本市的实际情况，制定本办法。本办法所称防疫物资，"
    "是指用于疫情防控的医用口罩、医用防护服、隔离衣、护目镜、消毒用品、核酸检测试剂和相关设备。",
    "二、储备与调拨",
    "市卫生健康委员会负责拟订防疫物资储备目录和储备规模，市发展改革委员会负责组织实施实物储备，"
    "各区人民政府按照不低于三十天满负荷运转需求的标准建立区级储备，储备物资实行分类存放、"
    "专人管理、定期轮换，任何单位和个人不得挪用、挤占或者擅自处置储备物资。",
    "紧急情况下，经市疫情防控指挥部批准，可以先调拨后结算。",
    "三、附则",
    "本办法自印发之日起施行，由市卫生健康委员会负责解释。",
]


def _pdf_doc(pages: list[list[str] | None], **kw: str) -> Document:
    return parse_document(pdf_bytes(pages, **kw), "rules.pdf")


def _expected_page(doc: Document, pages: list[list[str] | None], offset: int) -> int:
    """The page on which the character at `offset` of `doc.text` was drawn, found by
    counting characters (whitespace aside) of the drawn body lines."""
    starts, size = [], 0
    for lines in pages:
        starts.append(size)
        size += len(normalize("".join(lines or [])))
    return bisect.bisect_right(starts, len(normalize(doc.text[:offset])))


def _mid_sentence_breaks(pages: list[list[str] | None], paragraphs: list[str]) -> list[str]:
    """The text around each page break that falls inside a sentence, as it should be joined."""
    last_lines = {wrap(p)[-1] for p in paragraphs}
    texts = [lines for lines in pages if lines]
    return [
        a[-1] + b[0]
        for a, b in itertools.pairwise(texts)
        if a[-1] not in last_lines and not a[-1].endswith(("。", "！", "？"))
    ]


def _sentences_kept(text: str) -> str:
    """`text` with the line breaks after full stops removed: a line that happens to end a
    sentence at the right margin also ends the paragraph in a PDF."""
    return text.replace("。\n", "。")


# ---------------------------------------------------------------- PDF


def test_pdf_lines_are_joined_and_headers_footers_and_page_numbers_dropped():
    pages = layout(RULES, lines_per_page=4)
    breaks = _mid_sentence_breaks(pages, RULES)
    assert len(pages) >= 3 and breaks
    doc = _pdf_doc(pages, header=HEADER, footer=FOOTER)
    assert _sentences_kept(doc.text) == _sentences_kept("\n".join(RULES))
    assert all(any(b in line for line in doc.text.split("\n")) for b in breaks)
    assert doc.title == "防疫物资储备管理办法"
    assert "指挥部办公室" not in doc.text and "页" not in doc.text
    assert len(doc.pages) == len(pages) and doc.pages[0] == 0


def test_pdf_passages_cite_the_page_they_start_on():
    pages = layout(RULES, lines_per_page=4)
    doc = _pdf_doc(pages, header=HEADER, footer="- {page} -")
    passages = split_document(doc, max_chars=60)
    assert len({p.source.page for p in passages}) >= 3
    for p in passages:
        assert p.source.page == _expected_page(doc, pages, p.source.start), p.text


def test_a_seed_as_a_multipage_pdf_with_a_scanned_page(caplog):
    seed = parse_document((SEEDS / "000_9927ab784a57cddb.txt").read_bytes(), "seed.txt")
    paragraphs = seed.text.split("\n")
    pages: list[list[str] | None] = [*layout(paragraphs, lines_per_page=30)]
    pages.insert(2, IMAGE_PAGE)
    breaks = _mid_sentence_breaks(pages, paragraphs)
    assert len(pages) >= 6 and breaks
    with caplog.at_level(logging.WARNING):
        doc = parse_document(pdf_bytes(pages, header=HEADER, footer="- {page} -"), "seed.pdf")
    assert "page 3 has no text layer" in caplog.text and "OCR" in caplog.text
    # Only the header, the footers and whitespace are gone; every paragraph is one line again
    # (or more, where a line ends a sentence at the right margin).
    assert normalize(doc.text) == normalize("".join(line for lines in pages for line in lines or []))
    lines = [normalize(line) for line in _sentences_kept(doc.text).split("\n")]
    assert all(any(normalize(p) in line for line in lines) for p in paragraphs + breaks)
    assert doc.page_at(doc.pages[2]) == 4  # the scanned page holds no text
    for p in split_document(doc):
        assert p.source.page == _expected_page(doc, pages, p.source.start), p.text


def test_a_pdf_without_a_text_layer_is_skipped_with_a_warning(tmp_path: Path, caplog):
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes([IMAGE_PAGE, IMAGE_PAGE]))
    (tmp_path / "good.txt").write_text("正文。", encoding="utf-8")
    skipped: list[str] = []
    with caplog.at_level(logging.WARNING):
        docs = read_documents(tmp_path, skipped=skipped)
    assert [d.path for d in docs] == ["good.txt"]
    assert len(skipped) == 1 and "scan.pdf" in skipped[0] and "no text layer" in skipped[0] and "OCR" in skipped[0]
    assert "scan.pdf" in caplog.text
    with pytest.raises(UnreadableFile, match="PDF with no text layer") as err:
        parse_document(pdf_bytes([IMAGE_PAGE]), "scan.pdf")
    assert err.value.reason == "no_text_layer"


def test_encrypted_and_broken_pdfs_say_why_and_never_stop_a_build(tmp_path: Path):
    pdf = pdf_bytes(layout(RULES, lines_per_page=20))
    (tmp_path / "locked.pdf").write_bytes(encrypted_pdf(pdf, "secret"))
    (tmp_path / "cut.pdf").write_bytes(pdf[: len(pdf) // 2])
    (tmp_path / "open.pdf").write_bytes(encrypted_pdf(pdf, ""))  # restrictions only: readable
    skipped: list[str] = []
    docs = read_documents(tmp_path, skipped=skipped)
    assert [d.path for d in docs] == ["open.pdf"] and _sentences_kept(docs[0].text) == _sentences_kept("\n".join(RULES))
    assert len(skipped) == 2
    with pytest.raises(UnreadableFile, match="password-protected PDF") as locked:
        parse_document((tmp_path / "locked.pdf").read_bytes(), "locked.pdf")
    assert locked.value.reason == "encrypted"
    with pytest.raises(UnreadableFile, match="damaged PDF.*export it again") as cut:
        parse_document((tmp_path / "cut.pdf").read_bytes(), "cut.pdf")
    assert cut.value.reason == "broken"


def test_running_lines_and_page_numbers_go_only_from_the_page_edges():
    pages = [
        ["报告 2023", "正文第一行。", "3", "正文最后一行。", "- 1 -"],
        ["报告 2023", "正文。", "第 2 页"],
        ["正文没有页眉。", "3/10"],
        ["报告 2023", "正文。", "Page 4 of 10"],
    ]
    assert drop_running_lines(pages) == [
        ["正文第一行。", "3", "正文最后一行。"],
        ["正文。"],
        ["正文没有页眉。"],
        ["正文。"],
    ]
    # A line at the edge of half of the pages or fewer is text.
    assert drop_running_lines([["甲", "正文。"], ["乙", "正文。"]]) == [["甲"], ["乙"]]


def test_lines_join_unless_they_end_a_sentence_or_stop_short():
    full = "这一行写满了整行的宽度但是句子还没有结束"
    pages = [["短标题", full, "结束。", full + "N95"], [], ["masks 继续。", "列举，", "下一项。"]]
    text, starts = join_lines(pages)
    assert text.split("\n") == ["短标题", full + "结束。", full + "N95 masks 继续。", "列举，下一项。"]
    assert starts == (0, text.index("masks"), text.index("masks"))
    names = [["张三同志", "李四同志", "王五同志"]]  # a list of short lines stays a list
    assert join_lines(names)[0].split("\n") == names[0]
    contents = [["第一章 总则 ………………………………………………… 1", "第二章 储备与调拨 . . . . . . . . . . . . . . 12"]]
    assert join_lines(contents)[0].split("\n") == contents[0]


def test_pdf_title_is_the_metadata_title_unless_it_is_a_placeholder():
    pages = layout(RULES, lines_per_page=20)
    assert parse_document(pdf_bytes(pages, title="物资管理办法（试行）"), "a.pdf").title == "物资管理办法（试行）"
    for junk in ("untitled", "Microsoft Word - 新建文档.docx"):
        assert parse_document(pdf_bytes(pages, title=junk), "a.pdf").title == RULES[0]


def test_pdf_title_is_the_running_header_or_the_file_name_never_a_sentence():
    pages = [
        ["第一页：本通知适用于全体职工。会议室每天通风两次。"],
        ["第二页：食堂每桌最多坐四个人。"],
        ["第三页：外来人员须登记。"],
    ]
    assert parse_document(pdf_bytes(pages, header="某单位防疫通知"), "x.pdf").title == "某单位防疫通知"
    assert parse_document(pdf_bytes(pages), "docs/通知.pdf").title == "通知"
    dated = parse_document(pdf_bytes(pages, header="2022年4月5日"), "通知.pdf")
    assert dated.title == "通知" and "2022年4月5日" not in dated.text  # a dated header is dropped, not a name


# ---------------------------------------------------------------- Word


NOTICE = [
    ("Title", "关于做好春节期间疫情防控工作的通知"),
    ("Normal", "各区、各部门：春节将至，人员流动增加，为做好节日期间的疫情防控工作，现将有关事项通知如下。"),
    ("Heading 1", "一、加强返乡人员管理"),
    ("Normal", "返乡人员应当提前三天向所在社区报备行程，抵达后第一天和第三天各做一次核酸检测。"),
    ("Heading 2", "值班安排"),
    [["日期", "值班领导", "联系电话"], ["1月21日", "张伟", "0571-1234567"], ["1月22日", "李娜", "0571-7654321"]],
    ("Normal", "以上人员须保持通讯畅通。"),
]


def test_docx_headings_paragraphs_and_table_rows():
    doc = parse_document(docx_bytes(NOTICE, core_title="模板标题"), "notice.docx")
    assert doc.title == "关于做好春节期间疫情防控工作的通知"
    assert doc.text.split("\n") == [
        "关于做好春节期间疫情防控工作的通知",
        NOTICE[1][1],
        "一、加强返乡人员管理",
        NOTICE[3][1],
        "值班安排",
        "日期，值班领导，联系电话；1月21日，张伟，0571-1234567；1月22日，李娜，0571-7654321；",
        "以上人员须保持通讯畅通。",
    ]
    assert doc.pages == ()
    passages = split_document(doc)
    assert [p.text.split("\n")[0] for p in passages[1:3]] == ["一、加强返乡人员管理", "值班安排"]
    assert all(p.source.page is None for p in passages)


def test_a_merged_cell_is_read_once():
    import docx

    from qa.formats.docx import table_text

    table = docx.Document().add_table(rows=2, cols=3)
    for cell, text in zip(table.rows[1].cells, ["口罩", "一万只", ""], strict=True):
        cell.text = text
    table.cell(0, 0).merge(table.cell(0, 1)).text = "物资与数量"
    table.cell(0, 2).text = "备注。"
    assert table_text(table) == "物资与数量，备注；口罩，一万只；"


def test_docx_title_without_headings_is_the_core_title_or_the_first_line():
    body = [("Normal", "第一段正文。"), ("Normal", "第二段正文。")]
    assert parse_document(docx_bytes(body, core_title="会议纪要"), "a.docx").title == "会议纪要"
    assert parse_document(docx_bytes(body), "会议纪要（草稿）.docx").title == "会议纪要（草稿）"  # never a sentence
    assert parse_document(docx_bytes(body, header="某单位防疫通知"), "a.docx").title == "某单位防疫通知"
    assert parse_document(docx_bytes(body, header="第 1 页"), "b.docx").title == "b"  # a page number is no name
    assert parse_document(docx_bytes([("Normal", "值班安排"), *body]), "c.docx").title == "值班安排"  # a heading line


def test_damaged_docx_and_legacy_doc_say_what_to_do(monkeypatch):
    raw = docx_bytes(NOTICE)
    with pytest.raises(UnreadableFile, match="damaged .docx.*save it again") as cut:
        parse_document(raw[: len(raw) // 2], "cut.docx")
    assert cut.value.reason == "broken"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UnreadableFile, match="damaged .xlsx"):  # the content decides, not the name
        parse_document(buf.getvalue(), "sheet.docx")
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)
    with pytest.raises(UnreadableFile, match="damaged or password-protected .doc.*save it as .docx") as legacy:
        parse_document(ole + "WordDocument".encode("utf-16-le"), "old.txt")
    assert legacy.value.reason == "broken"
    import qa.formats.doc as doc

    monkeypatch.setattr(doc, "TOOLS", (("no-such-catdoc",),))  # a machine without catdoc or antiword
    with pytest.raises(UnreadableFile, match="neither catdoc nor antiword.*save it as .docx") as legacy:
        parse_document(ole + "WordDocument".encode("utf-16-le"), "old.doc")
    assert legacy.value.reason == "legacy_doc"
    with pytest.raises(UnreadableFile, match="save it as .docx"):
        parse_document(b"{\\rtf1\\ansi hello}", "old.doc")
    with pytest.raises(UnreadableFile, match="password-protected Office") as locked:
        parse_document(ole + "EncryptedPackage".encode("utf-16-le"), "locked.docx")
    assert locked.value.reason == "encrypted"


def test_the_format_is_decided_by_content_not_by_name(tmp_path: Path):
    pdf = parse_document(pdf_bytes(layout(RULES, lines_per_page=20)), "really-a-pdf.txt")
    assert _sentences_kept(pdf.text) == _sentences_kept("\n".join(RULES)) and pdf.pages == (0,)
    word = parse_document(docx_bytes(NOTICE), "really-a-docx.md")
    assert word.title == "关于做好春节期间疫情防控工作的通知"
    (tmp_path / "~$notice.docx").write_bytes(b"\x05lock")  # Word's lock file beside an open document
    (tmp_path / "notice.docx").write_bytes(docx_bytes(NOTICE))
    assert [d.path for d in read_documents(tmp_path)] == ["notice.docx"]


# ---------------------------------------------------------------- end to end


def test_a_passage_across_two_pages_cites_the_page_of_its_answer(tmp_path: Path, capsys):
    from qa.cli import main
    from qa.index import build_index
    from qa.search import Retriever, source_dict
    from ui.render import answer_line_html, hit_html

    docs = tmp_path / "docs"
    docs.mkdir()
    pages = [
        ["第一页：本通知适用于全体职工。会议室每天通风两次。"],
        ["第二页：食堂每桌最多坐四个人。"],
        ["第三页：外来人员须登记。"],
    ]
    (docs / "通知.pdf").write_bytes(pdf_bytes(pages, header="某单位防疫通知"))
    build_index(docs, tmp_path / "index", dense=False)
    hit = Retriever.load(tmp_path / "index").search("食堂每桌最多坐几个人", mode="lexical").hits[0]
    src = hit.sources[0]
    assert "食堂每桌最多坐四个人" in hit.text and src.title == "某单位防疫通知"
    assert hit.evidence is not None and "食堂" in hit.text[hit.evidence[0] : hit.evidence[1]]
    assert src.page == 1 and src.last_page is not None and src.last_page >= 2  # the passage crosses the page
    assert src.page_at(hit.evidence[0]) == 2
    assert "第2页" in answer_line_html(hit) and "第1页" not in answer_line_html(hit)  # 答：cites the answer's page
    assert f"第1–{src.last_page}页" in hit_html(hit)  # the passage shown whole gives its range
    assert source_dict(src)["page"] == 1 and source_dict(src)["last_page"] == src.last_page
    assert main(["ask", "食堂每桌最多坐几个人", "--mode", "lexical", "--index", str(tmp_path / "index")]) == 0
    assert f"第1–{src.last_page}页 [" in capsys.readouterr().out


def test_pdf_and_docx_are_found_and_cited_with_page_and_title(tmp_path: Path, capsys):
    from qa.cli import main
    from qa.index import build_index
    from qa.search import Retriever, source_dict
    from ui.render import citation_text

    docs = tmp_path / "docs"
    docs.mkdir()
    pages = layout(RULES, lines_per_page=4)
    (docs / "rules.pdf").write_bytes(pdf_bytes(pages, header=HEADER, footer=FOOTER))
    (docs / "notice.docx").write_bytes(docx_bytes(NOTICE))
    build_index(docs, tmp_path / "index", dense=False)
    retriever = Retriever.load(tmp_path / "index")

    hit = retriever.search("储备物资可以挪用吗", mode="lexical").hits[0]
    src = hit.sources[0]
    assert src.file == "rules.pdf" and "不得挪用" in hit.text
    doc = parse_document((docs / "rules.pdf").read_bytes(), "rules.pdf")
    assert src.page == _expected_page(doc, pages, src.start) > 1
    assert source_dict(src)["page"] == src.page
    shown = f"{src.page}–{src.last_page}" if src.last_page != src.page else f"{src.page}"  # a range across pages
    assert citation_text(src).endswith(f"第{src.paragraph}段 · 第{shown}页")
    assert main(["ask", "储备物资可以挪用吗", "--mode", "lexical", "--index", str(tmp_path / "index")]) == 0
    assert f"来源：{src.title} · rules.pdf · 第{src.paragraph}段 · 第{shown}页 [" in capsys.readouterr().out

    hit = retriever.search("春节值班领导是谁", mode="lexical").hits[0]
    assert hit.sources[0].file == "notice.docx" and "张伟" in hit.text
    assert hit.sources[0].title == "关于做好春节期间疫情防控工作的通知"
    assert hit.sources[0].page is None and source_dict(hit.sources[0])["page"] is None
    assert "页" not in citation_text(hit.sources[0])


def test_an_index_written_before_pages_still_loads(tmp_path: Path):
    from qa.index import build_index, load_index
    from qa.stores.local import passage_from_json

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "rules.pdf").write_bytes(pdf_bytes(layout(RULES, lines_per_page=4)))
    build_index(tmp_path / "docs", tmp_path / "index", dense=False)
    assert load_index(tmp_path / "index").passages[-1].source.page == 3
    jsonl = tmp_path / "index" / "passages.jsonl"
    row = json.loads(jsonl.read_text(encoding="utf-8").splitlines()[-1])
    assert row["sources"][0]["page"] == 3
    del row["sources"][0]["page"]  # as written before pages were recorded
    assert passage_from_json(json.dumps(row)).source.page is None
