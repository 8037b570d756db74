"""Every format in one documents folder, as an office has them: a PDF with a scanned page, a
photographed notice, a .docx, a legacy .doc, a workbook and a deck, generated at test time and
indexed together with the real model. Each question must be answered at rank 1, by the right
file, citing the right page, sheet and row, or slide in its 答： line."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader, PdfWriter

from tests import scans
from tests.make_docs import doc_bytes, docx_bytes, pdf_bytes, pptx_bytes, xlsx_bytes
from tests.test_formats import NOTICE
from tests.test_office import DECK, MEMO, STAFF, STOCK
from tests.test_scanned_documents import PHOTO, RULES, SCAN

# question, words of the answer, the file, where the 答： line cites it (None: a format without pages)
QUESTIONS = [
    ("食堂每桌最多坐几个人", "四个人", "通知.pdf", "第2页（OCR）"),
    ("会议室每天通风几次", "两次", "通知.pdf", "第1页"),
    ("图书馆每次可以借几本书", "三本", "公告.jpg", "第1页（OCR）"),
    ("1月22日的值班领导是谁", "李娜", "notice.docx", None),
    ("春节值班电话是多少", "010-12345678", "春节通知.doc", None),
    ("王五的电话是多少", "13700003333", "值班表.xlsx", "工作表 人员名单 · 第6行"),
    ("消毒液放在哪个仓库", "二号仓库", "值班表.xlsx", "工作表 物资 · 第3行"),
    ("进入病区要戴什么口罩", "N95", "培训.pptx", "第2张幻灯片"),
    ("核酸检测在什么地点", "体育馆一楼", "培训.pptx", "第3张幻灯片"),
]


def _scanned_pdf() -> bytes:
    """Page 1 with a text layer, page 2 a noisy scan."""
    writer = PdfWriter()
    writer.add_page(PdfReader(io.BytesIO(pdf_bytes([RULES]))).pages[0])
    writer.add_page(PdfReader(io.BytesIO(scans.image_pdf([scans.render_page(SCAN, noisy=True, seed=3)]))).pages[0])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory):
    from qa.index import build_index
    from qa.search import Retriever

    root = tmp_path_factory.mktemp("every-format")
    docs = root / "docs"
    docs.mkdir()
    files = {
        "通知.pdf": _scanned_pdf(),
        "公告.jpg": scans.jpeg_bytes(scans.render_page(PHOTO, noisy=True, seed=4)),
        "notice.docx": docx_bytes(NOTICE),
        "春节通知.doc": doc_bytes(MEMO),
        "值班表.xlsx": xlsx_bytes([STAFF, STOCK]),
        "培训.pptx": pptx_bytes(DECK),
    }
    for name, raw in files.items():
        (docs / name).write_bytes(raw)
    report = build_index(docs, root / "index")
    assert report.documents == len(files) and not report.skipped, report.skipped
    return Retriever.load(root / "index")


@pytest.mark.parametrize(("question", "answer", "file", "place"), QUESTIONS, ids=[q[0] for q in QUESTIONS])
def test_each_question_is_answered_at_rank_one_citing_the_right_place(
    retriever, question: str, answer: str, file: str, place: str | None
):
    from ui.render import answer_line_html

    result = retriever.search(question)
    hit = result.hits[0]
    start, end = hit.evidence or (0, len(hit.text))
    assert hit.sources[0].file == file, (question, hit.sources[0].file, hit.text)
    assert answer in hit.text[start:end].replace(" ", ""), (question, hit.text[start:end])
    assert hit.sources[0].place_at(start) == place
    line = answer_line_html(hit)
    assert (f" · {place}" in line) if place else ("页" not in line.split("来源：")[-1])
