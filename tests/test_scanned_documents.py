"""Scanned PDFs and photographed pages, read by OCR while the documents are read: what a citation
names (第N页（OCR）), what is cached, and what is said when a scan holds no text. The scans are
rendered by tests/scans.py with the CJK font `make browser` installs; OCR is the real engine."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from qa.documents import UnreadableFile, parse_document, read_documents
from qa.progress import Stage
from tests import scans
from tests.make_docs import pdf_bytes

RULES = ["第一条：本通知适用于全体职工，请各部门认真执行。", "第二条：会议室每天通风两次，每次不少于三十分钟。"]
SCAN = ["第三条：食堂每桌最多坐四个人，用餐时不得交谈。", "第四条：外来人员进入园区必须扫码登记并测量体温。"]
PHOTO = ["图书馆开放时间调整为每天上午九点至下午五点。", "借阅图书须预约，每次限借三本。"]


@pytest.fixture(scope="module")
def scanned_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A PDF whose page 1 has a text layer and page 2 is a noisy scan, and a photographed page."""
    text_pdf = PdfReader(io.BytesIO(pdf_bytes([RULES])))
    scan_pdf = PdfReader(io.BytesIO(scans.image_pdf([scans.render_page(SCAN, noisy=True, seed=3)])))
    writer = PdfWriter()
    writer.add_page(text_pdf.pages[0])
    writer.add_page(scan_pdf.pages[0])
    out = io.BytesIO()
    writer.write(out)
    return {"通知.pdf": out.getvalue(), "公告.jpg": scans.jpeg_bytes(scans.render_page(PHOTO, noisy=True, seed=4))}


@pytest.fixture(autouse=True)
def _ocr_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qa-cache"))  # one cache for the module


def test_a_scanned_page_is_read_by_ocr_and_cited_as_such(scanned_files, monkeypatch):
    events: list[tuple[Stage, int, int]] = []
    doc = parse_document(scanned_files["通知.pdf"], "通知.pdf", lambda *e: events.append(e))
    assert "会议室每天通风两次" in doc.text  # page 1: its text layer
    assert "每桌最多坐四个人" in doc.text.replace(" ", "")  # page 2: OCR
    assert doc.place_at(doc.text.index("会议室")) == "第1页"
    assert doc.place_at(doc.text.index("食堂")) == "第2页（OCR）"
    assert events[0] == (Stage.OCR, 0, 1) and events[-1] == (Stage.OCR, 1, 1)  # one scanned page of one

    import qa.formats.ocr as ocr

    def no_engine(raw: bytes) -> list[str]:
        raise AssertionError("OCR ran again: the cache was not used")

    monkeypatch.setattr(ocr, "ocr_image", no_engine)
    assert parse_document(scanned_files["通知.pdf"], "通知.pdf").text == doc.text  # cached by checksum and page


def test_a_photographed_page_is_a_document(scanned_files):
    doc = parse_document(scanned_files["公告.jpg"], "公告.jpg")
    assert "每次限借三本" in doc.text.replace(" ", "")
    assert doc.places == ("第1页（OCR）",) and doc.title == "公告"  # its first line is a sentence: the file name


def test_a_scan_without_text_says_so_and_never_stops_a_build(tmp_path: Path):
    blank = scans.image_pdf([scans.render_page([], noisy=True, seed=5)])
    with pytest.raises(UnreadableFile, match="no text layer.*OCR found no text") as err:
        parse_document(blank, "空白扫描.pdf")
    assert err.value.reason == "no_text_layer"
    with pytest.raises(UnreadableFile) as bad:
        parse_document(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "坏图.png")
    assert bad.value.reason == "broken"
    (tmp_path / "空白扫描.pdf").write_bytes(blank)
    (tmp_path / "说明.txt").write_text("本文件夹存放扫描件。", encoding="utf-8")
    skipped: list[str] = []
    assert [d.path for d in read_documents(tmp_path, skipped=skipped)] == ["说明.txt"]
    assert any("空白扫描.pdf" in s for s in skipped)


def test_questions_about_scans_are_answered_at_rank_one_with_the_ocr_page(scanned_files, tmp_path: Path):
    from qa.index import build_index
    from qa.search import Retriever
    from ui.render import answer_line_html

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, raw in scanned_files.items():
        (docs / name).write_bytes(raw)
    build_index(docs, tmp_path / "index")
    retriever = Retriever.load(tmp_path / "index")
    for question, answer, file, place in [
        ("食堂每桌最多坐几个人", "四个人", "通知.pdf", "第2页（OCR）"),
        ("会议室每天通风几次", "两次", "通知.pdf", "第1页"),
        ("图书馆每次可以借几本书", "三本", "公告.jpg", "第1页（OCR）"),
    ]:
        hit = retriever.search(question).hits[0]
        start, end = hit.evidence or (0, len(hit.text))
        assert hit.sources[0].file == file and answer in hit.text[start:end].replace(" ", ""), question
        assert hit.sources[0].place_at(start) == place, question
        assert f" · {place}" in answer_line_html(hit), question
