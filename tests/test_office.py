"""Excel workbooks, PowerPoint decks and legacy Word .doc (qa/formats/xlsx.py, pptx.py, doc.py), made
at test time by tests/make_docs.py: each sheet row and each slide is a place a citation names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from qa.documents import UnreadableFile, parse_document, read_documents
from qa.split import split_document
from tests.make_docs import doc_bytes, pptx_bytes, xlsx_bytes

STAFF = (
    "人员名单",
    [
        ["2022年春节防疫值班人员名单", None, None, None],  # a caption merged across the columns
        ["姓名", "部门", "电话", "值班日期"],
        ["张三", "后勤处", 13800001111, "1月31日"],
        ["李四", None, "13900002222", "2月1日"],  # 部门 merged down from 张三's row
        [None, None, None, None],  # an empty row
        ["王五", "保卫处", 13700003333, "2月2日"],
        ["赵六", "医务室", 13600004444, None],  # an empty cell
    ],
    ["A1:D1", "B3:B4"],
)
STOCK = ("物资", [["物品", "数量", "存放地点"], ["医用口罩", 5000, "一号仓库"], ["消毒液", "200瓶", "二号仓库"]], [])

MEMO = [
    "关于做好春节期间疫情防控工作的通知",
    "各单位：春节期间实行领导带班制度，值班领导为张伟，值班电话为010-12345678。",
    "返乡人员须提前三天向所在社区报备，并按要求进行核酸检测。",
]
DECK = [
    ("新冠疫情防控培训", ["主讲：院感科", "2022年3月"], [], ""),
    (
        "个人防护要点",
        ["进入病区必须佩戴N95口罩", "接触患者前后用速干手消毒剂洗手"],
        [],
        "提醒大家口罩每四小时更换一次。",
    ),
    ("核酸检测安排", [], [["时间", "地点", "对象"], ["每周三上午", "体育馆一楼", "全体职工"]], ""),
]


def test_a_workbook_reads_each_row_as_header_value_pairs_with_its_sheet_and_row():
    doc = parse_document(xlsx_bytes([STAFF, STOCK]), "值班表.xlsx")
    assert doc.title == "值班表"  # no core title: the file name
    lines = doc.text.split("\n")
    assert lines[:3] == [
        "人员名单",
        "2022年春节防疫值班人员名单",
        "姓名：张三，部门：后勤处，电话：13800001111，值班日期：1月31日；",
    ]
    assert "姓名：李四，部门：后勤处，电话：13900002222，值班日期：2月1日；" in lines  # the merged 部门 fills down
    assert "姓名：赵六，部门：医务室，电话：13600004444；" in lines  # the empty cell is left out
    assert "" not in lines and "物资" in lines and "物品：消毒液，数量：200瓶，存放地点：二号仓库；" in lines
    where = {line: doc.place_at(doc.text.index(line)) for line in lines}
    assert (
        where["姓名：王五，部门：保卫处，电话：13700003333，值班日期：2月2日；"] == "工作表 人员名单 · 第6行"
    )  # Excel's number
    assert where["物品：医用口罩，数量：5000，存放地点：一号仓库；"] == "工作表 物资 · 第2行"
    passages = split_document(doc)
    assert not any("人员名单" in p.text and "物资" in p.text for p in passages)  # a sheet is a section
    first = passages[0].source
    assert first.place == "工作表 人员名单 · 第1–4行" or first.place.startswith("工作表 人员名单 · 第1")


def test_a_deck_reads_titles_text_boxes_tables_and_notes_slide_by_slide():
    doc = parse_document(pptx_bytes(DECK), "培训.pptx")
    assert doc.title == "新冠疫情防控培训"  # the first slide's title
    lines = doc.text.split("\n")
    assert lines[:3] == ["新冠疫情防控培训", "主讲：院感科", "2022年3月"]  # the title first, though added last
    assert "备注：提醒大家口罩每四小时更换一次。" in lines
    assert "时间：每周三上午，地点：体育馆一楼，对象：全体职工；" in lines
    assert doc.place_at(doc.text.index("时间：每周三上午")) == "第3张幻灯片"
    passages = split_document(doc)
    assert [p.source.place for p in passages] == ["第1张幻灯片", "第2张幻灯片", "第3张幻灯片"]  # one section a slide
    assert parse_document(pptx_bytes(DECK, core_title="院感培训"), "培训.pptx").title == "院感培训"


def test_a_slide_without_a_title_is_named_by_its_number():
    doc = parse_document(pptx_bytes([("", ["只有正文的一页幻灯片内容"], [], "")]), "x.pptx")
    assert doc.text.split("\n")[0] == "第1张幻灯片" and doc.title == "x"


def test_a_legacy_doc_is_read_by_catdoc_paragraph_by_paragraph():
    doc = parse_document(doc_bytes(MEMO), "春节通知.doc")
    assert doc.text.split("\n") == MEMO
    assert doc.title == "关于做好春节期间疫情防控工作的通知"  # a first line that reads as a heading
    assert parse_document(doc_bytes(MEMO[1:]), "春节通知.doc").title == "春节通知"  # never a sentence
    assert parse_document(doc_bytes(MEMO), "misnamed.txt").text == doc.text  # found by content


def test_damaged_empty_huge_and_encrypted_office_files_say_what_to_do(tmp_path: Path, monkeypatch):
    import qa.formats.base as base

    good = xlsx_bytes([STOCK])
    with pytest.raises(UnreadableFile, match="damaged .xlsx.*save it again") as bad:
        parse_document(good[: len(good) // 2], "半截.xlsx")
    assert bad.value.reason == "broken"
    with pytest.raises(UnreadableFile, match="damaged .pptx") as bad:
        parse_document(b"PK\x03\x04" + b"\0" * 100, "坏.pptx")
    with pytest.raises(UnreadableFile, match="no text") as bad:
        parse_document(xlsx_bytes([("空表", [], [])]), "空.xlsx")
    assert bad.value.reason == "empty"
    monkeypatch.setattr(base, "MAX_UNZIPPED_BYTES", 1000)  # a zip that unpacks beyond the limit
    with pytest.raises(UnreadableFile, match="unpacks to .*split") as bad:
        parse_document(good, "大.xlsx")
    assert bad.value.reason == "too_large"
    monkeypatch.undo()
    import qa.formats.xlsx as xlsx

    monkeypatch.setattr(xlsx, "MAX_CELLS", 4)
    with pytest.raises(UnreadableFile, match="cells, more than") as bad:
        parse_document(good, "大.xlsx")
    monkeypatch.undo()
    from qa.errors import QAError

    assert isinstance(bad.value, QAError)  # one error tree: callers catching QAError see unreadable files too
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64 + "EncryptedPackage".encode("utf-16-le")
    with pytest.raises(UnreadableFile, match="password-protected Office file") as bad:
        parse_document(ole, "加密.xlsx")
    assert bad.value.reason == "encrypted"

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "好.xlsx").write_bytes(good)
    (docs / "坏.xlsx").write_bytes(good[:200])
    skipped: list[str] = []
    assert [d.path for d in read_documents(docs, skipped=skipped)] == ["好.xlsx"]  # the build goes on
    assert any("坏.xlsx" in s for s in skipped)


def test_the_format_of_an_office_zip_is_its_content_not_its_name():
    assert parse_document(xlsx_bytes([STOCK]), "misnamed.docx").places[0].startswith("工作表 物资")
    assert parse_document(pptx_bytes(DECK), "misnamed.xlsx").places[0] == "第1张幻灯片"
    with zipfile.ZipFile(io.BytesIO(pptx_bytes(DECK))) as z:
        assert "ppt/presentation.xml" in z.namelist()


def test_questions_about_a_workbook_and_a_deck_cite_the_row_and_the_slide(tmp_path: Path, capsys):
    """End to end on the real model: hybrid search finds the row and the slide, and the chat,
    the CLI and the JSON cite them."""
    from qa.cli import main
    from qa.index import build_index
    from qa.search import Retriever, source_dict
    from ui.render import answer_line_html, hit_html

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "值班表.xlsx").write_bytes(xlsx_bytes([STAFF, STOCK]))
    (docs / "培训.pptx").write_bytes(pptx_bytes(DECK))
    (docs / "春节通知.doc").write_bytes(doc_bytes(MEMO))
    build_index(docs, tmp_path / "index")
    retriever = Retriever.load(tmp_path / "index")

    cases = [
        ("王五的电话是多少", "13700003333", "工作表 人员名单 · 第6行"),
        ("消毒液放在哪个仓库", "二号仓库", "工作表 物资 · 第3行"),
        ("进入病区要戴什么口罩", "N95", "第2张幻灯片"),
        ("核酸检测在什么地点", "体育馆一楼", "第3张幻灯片"),
        ("春节值班领导是谁", "张伟", None),
    ]
    for question, answer, place in cases:
        hit = retriever.search(question).hits[0]
        assert answer in hit.text, question
        start, end = hit.evidence or (0, len(hit.text))  # no evidence: the passage is one sentence
        assert answer in hit.text[start:end], question
        src = hit.sources[0]
        assert src.place_at(start) == place, question
        if place is None:  # a .doc has no pages
            assert src.file == "春节通知.doc" and "页" not in answer_line_html(hit)
            continue
        assert f" · {place}" in answer_line_html(hit), question  # 答： cites the row or slide of its sentence
        assert "段" not in answer_line_html(hit).split("来源：")[-1], question  # no paragraph number beside it
        assert src.place is not None and src.place in hit_html(hit)
        assert source_dict(src)["place"] == src.place

    assert main(["ask", "王五的电话是多少", "--index", str(tmp_path / "index")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("答：姓名：王五") and first.endswith("· 值班表.xlsx · 工作表 人员名单 · 第6行"), first
