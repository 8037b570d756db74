"""The web chat in a real Chromium (Debian's, driven by Playwright; nothing is downloaded).

Without /usr/bin/chromium these tests skip, or fail under CI with the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SEEDS, LiveApp, launched_app

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
TIMEOUT_MS = 30_000
LIKE = re.compile(r"^(Like|赞)$")  # the thumbs-up button's label, in English or Chinese


def _require_chromium() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed"
    if missing:
        message = f"{missing}: run `make browser` (Debian's chromium and CJK fonts) and `make install`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory, seed_index, real_encoder) -> Iterator[LiveApp]:
    _require_chromium()
    with launched_app(tmp_path_factory.mktemp("ui-browser"), seed_index, real_encoder) as app:
        yield app


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    yield page
    context.close()


def ask(page, question: str) -> None:
    """Ask in the chat and wait for the new reply (not an earlier one)."""
    before = page.locator("#qa-chat .qa-answer").count()
    box = page.locator("#qa-question textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(f"() => document.querySelectorAll('#qa-chat .qa-answer').length > {before}")


def test_question_shows_answer_with_citation(page, server):
    ask(page, "上海全市核酸筛查采样了多少人")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "2566.5万人" in answer.inner_text()
    assert answer.locator(".qa-cite").first.inner_text().startswith("来源：")
    assert answer.locator("mark").count() > 0
    context = answer.locator("details.qa-ctx").first
    context.locator("summary").click()
    assert context.locator("p").first.is_visible()
    context.locator("summary").click()
    page.wait_for_timeout(300)  # let the chat settle before the picture
    first = answer.locator(".qa-hit").first
    first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-answer.png"))

    page.locator("#qa-chat").get_by_role("button", name=LIKE).last.click()
    page.get_by_text("已记录反馈").first.wait_for()
    votes = [json.loads(line) for line in server.feedback.read_text(encoding="utf-8").splitlines()]
    assert votes[-1]["vote"] == "up" and votes[-1]["query"] == "上海全市核酸筛查采样了多少人"
    assert votes[-1]["hits"]


def test_clear_button_empties_the_chat(page):
    ask(page, "温杯烫盏是什么意思")
    page.locator("#qa-clear").click()
    page.locator("#qa-chat .qa-answer").first.wait_for(state="detached")


def test_markup_in_documents_is_shown_as_text_and_never_runs(page):
    ask(page, "蓝鲸牌保温杯的容量是多少")
    answer = page.locator("#qa-chat .qa-answer").last
    text = answer.inner_text()
    assert "<script>window.__xss=1</script>" in text
    assert '<img src=x onerror="window.__xss=1">安全测试' in text
    assert answer.locator("script, img").count() == 0
    page.wait_for_timeout(500)  # give an injected handler the time to fire
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.get_by_role("tab", name="文档").click()
    page.get_by_text('<img src=x onerror="window.__xss=1">安全测试', exact=True).wait_for()
    assert page.evaluate("typeof window.__xss") == "undefined"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(300)  # let the chat settle before the picture
    page.screenshot(path=str(ARTIFACTS / name))


def _upload(page, paths: list[Path]) -> str:
    """Upload files through the documents tab and wait for the index update; returns the status."""
    page.get_by_role("tab", name="文档").click()
    page.locator("input[type=file][multiple]").set_input_files([str(p) for p in paths])  # not the table's CSV input
    page.get_by_role("button", name="上传并更新索引").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('索引已更新') || t.value.includes('未加入'))",
        timeout=180_000,
    )
    status = page.evaluate("() => [...document.querySelectorAll('textarea')].map(t => t.value).join('\\n')")
    page.get_by_role("tab", name="问答").click()
    return status


def test_the_start_of_a_new_reply_stays_in_view(page):
    ask(page, "上海全市核酸筛查采样了多少人")
    ask(page, "人类战胜传染病最有效的办法是什么")
    page.wait_for_timeout(500)
    chat = page.locator("#qa-chat").bounding_box()
    reply = page.locator("#qa-chat .qa-answer").last.bounding_box()
    assert chat and reply
    assert chat["y"] - 5 <= reply["y"] <= chat["y"] + chat["height"] * 0.5, (chat, reply)
    answer = page.locator("#qa-chat .qa-answer").last
    assert answer.locator(".qa-answerline").inner_text().startswith("答：")
    assert answer.locator("details.qa-more > summary").inner_text().startswith("更多相关段落")
    _shot(page, "ui-reply-start.png")


def test_a_citation_opens_the_source_viewer_at_the_passage(page):
    ask(page, "上海全市核酸筛查采样了多少人")
    answer = page.locator("#qa-chat .qa-answer").last
    answer.locator("a.qa-cite-link").first.click()
    here = page.locator("#qa-viewer #qa-here")
    here.wait_for()
    assert "2566.5万人" in here.inner_text()
    assert here.locator("strong.qa-evidence").count() == 1
    page.wait_for_timeout(300)
    viewer, box = page.locator("#qa-viewer").bounding_box(), here.bounding_box()
    assert viewer and box and box["y"] < page.viewport_size["height"], (viewer, box)  # scrolled to it
    assert "上海疫情支援的心得体会" in page.locator("#qa-viewer .qa-src-head").inner_text()
    _shot(page, "ui-viewer.png")
    with page.expect_download() as download:  # the original file, offered beside the viewer
        page.locator("#qa-download").click()
    assert download.value.suggested_filename == "002_117e7d3914e89035.txt"
    assert Path(download.value.path()).read_bytes() == (SEEDS / "002_117e7d3914e89035.txt").read_bytes()


def test_a_follow_up_is_searched_with_the_question_before_it(page):
    ask(page, "上海4月4日启动全市核酸筛查，截至4月5日8时全市一共采样了多少人？")
    ask(page, "那已经检测完的有多少管？")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "按上文理解为" in answer.inner_text()
    assert "192.5万管" in answer.text_content()
    _shot(page, "ui-followup.png")


def test_uploaded_pdf_and_docx_are_answered_with_page_and_heading(page, tmp_path):
    from tests.make_docs import docx_bytes, layout, pdf_bytes
    from tests.test_formats import FOOTER, HEADER, NOTICE, RULES

    pdf, docx = tmp_path / "防疫物资储备管理办法.pdf", tmp_path / "春节通知.docx"
    pdf.write_bytes(pdf_bytes(layout(RULES, lines_per_page=4), header=HEADER, footer=FOOTER))
    docx.write_bytes(docx_bytes(NOTICE))
    status = _upload(page, [pdf, docx])
    assert "索引已更新" in status, status
    ask(page, "储备物资可以挪用吗")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "不得挪用" in answer.text_content()
    cite = answer.locator(".qa-cite").first.inner_text()
    assert ".pdf" in cite and re.search(r"第\d+(–\d+)?页", cite), cite  # a range when the passage crosses pages
    _shot(page, "ui-upload-pdf.png")
    ask(page, "春节值班领导是谁")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "张伟" in answer.text_content()  # among the passages shown (the model ranks a seed passage first)
    cites = [c.text_content() or "" for c in answer.locator(".qa-cite").all()]
    assert any("关于做好春节期间疫情防控工作的通知" in c and "春节通知.docx" in c for c in cites), cites
    _shot(page, "ui-upload-docx.png")


def test_an_uploaded_workbook_and_scan_are_answered_with_sheet_row_and_ocr_page(page, tmp_path):
    from tests import scans
    from tests.make_docs import xlsx_bytes
    from tests.test_office import STAFF, STOCK
    from tests.test_scanned_documents import PHOTO

    book, scan = tmp_path / "值班表.xlsx", tmp_path / "图书馆公告.jpg"
    book.write_bytes(xlsx_bytes([STAFF, STOCK]))
    scan.write_bytes(scans.jpeg_bytes(scans.render_page(PHOTO, noisy=True, seed=4)))
    status = _upload(page, [book, scan])
    assert "索引已更新" in status and "图书馆公告.jpg" in status, status
    ask(page, "图书馆每次可以借几本书")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "三本" in (answer.locator(".qa-answerline").text_content() or "").replace(" ", "")
    cite = answer.locator(".qa-cite").first.inner_text()
    assert "图书馆公告.jpg" in cite and "第1页（OCR）" in cite, cite
    _shot(page, "ui-upload-scan.png")
    ask(page, "王五的电话是多少")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "13700003333" in (answer.locator(".qa-answerline").text_content() or "")
    cite = answer.locator(".qa-cite").first.inner_text()
    assert "值班表.xlsx" in cite and "工作表 人员名单 · 第6行" in cite, cite
    _shot(page, "ui-upload-xlsx.png")


def test_a_hostile_pdf_stays_inert(page, tmp_path):
    from tests.make_docs import pdf_bytes

    hostile = tmp_path / "hostile.pdf"
    lines = ["紫色长颈鹿安全演练说明。", "<script>window.__xss=1</script>", '<img src=x onerror="window.__xss=1">']
    hostile.write_bytes(pdf_bytes([lines]))
    assert "索引已更新" in _upload(page, [hostile])
    ask(page, "紫色长颈鹿安全演练")
    answer = page.locator("#qa-chat .qa-answer").last
    assert "<script>window.__xss=1</script>" in answer.text_content()
    assert answer.locator("script, img").count() == 0
    answer.locator("a.qa-cite-link").first.click()
    page.locator("#qa-viewer #qa-here").wait_for()
    assert page.locator("#qa-viewer script, #qa-viewer img").count() == 0
    page.wait_for_timeout(500)
    assert page.evaluate("typeof window.__xss") == "undefined"
    _shot(page, "ui-hostile-pdf.png")


def test_a_full_queue_is_said_in_chinese(browser, hash_index):
    import httpx

    from tests.conftest import tiny_queue
    from ui.scripts import BUSY_MESSAGE

    with tiny_queue(hash_index) as (url, encoder):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.locator("#qa-question textarea").wait_for()
        for question in ("慢问题一", "慢问题二"):  # one running, one waiting: the queue is full
            data = {"data": [question, 5, "hybrid", None, None]}
            assert httpx.post(f"{url}gradio_api/call/search", json=data, timeout=30).status_code == 200
            if question == "慢问题一":
                assert encoder.waiting.acquire(timeout=30)
        box = page.locator("#qa-question textarea")
        box.fill("温杯烫盏是什么意思")
        box.press("Enter")
        page.get_by_text(BUSY_MESSAGE).first.wait_for()
        assert "currently busy" not in page.evaluate("document.body.innerText")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-busy.png"))
        encoder.gate.set()
        context.close()
