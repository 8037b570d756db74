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

from tests.conftest import LiveApp, launched_app

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
    box = page.locator("#qa-question textarea")
    box.fill(question)
    box.press("Enter")
    page.locator("#qa-chat .qa-answer").last.wait_for()


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


def test_a_full_queue_is_said_in_chinese(browser, hash_index):
    import httpx

    from tests.conftest import tiny_queue
    from ui.app import BUSY_MESSAGE

    with tiny_queue(hash_index) as (url, encoder):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.locator("#qa-question textarea").wait_for()
        for question in ("慢问题一", "慢问题二"):  # one running, one waiting: the queue is full
            data = {"data": [question, 5, "hybrid", None]}
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
