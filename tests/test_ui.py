"""The web chat (ui/app.py, ui/render.py): HTML escaping, uploads, and one live server
driven through gradio_client, as a script or another program would use it."""

from __future__ import annotations

import itertools
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa import Stage
from qa.errors import UploadError
from qa.library import safe_filename
from qa.search import Hit, SearchResult
from qa.split import Passage, Source
from tests.conftest import SEEDS, LiveApp, launched_app
from ui import render
from ui.app import FeedbackLog
from ui.progress import stage_progress
from ui.texts import EXAMPLES

UPLOAD_LIMIT = 64 * 1024
XSS_QUESTION = "蓝鲸牌保温杯的容量是多少"


# ---------------------------------------------------------------- rendering, no server


def _hit(text: str, highlights=(), evidence=None, sources=None, low=False) -> Hit:
    sources = sources or (Source("a.txt", "标题", 3, 0, len(text), 1),)
    return Hit(1, 0.5, text, sources, tuple(highlights), "id1", 0.8, low, evidence)


def test_passage_spans_are_applied_to_raw_text_and_each_piece_escaped():
    text = "前言<script>alert(1)</script>，核酸检测结果。"
    start = text.index("核酸")
    out = render.passage_html(text, [(start, start + 4)], (text.index("，") + 1, len(text)))
    assert "<script" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert '<strong class="qa-evidence" title="最相关的句子"><mark>核酸检测</mark>结果。</strong>' in out


def test_overlapping_and_out_of_range_spans_nest_properly():
    text = "上海全市核酸筛查"
    out = render.passage_html(text, [(0, 4), (2, 6), (7, 99), (5, 5)], (3, 7))
    assert (
        out
        == '<mark>上海全</mark><strong class="qa-evidence" title="最相关的句子"><mark>市核酸</mark>筛</strong><mark>查</mark>'
    )


def test_every_source_of_a_collapsed_duplicate_is_cited_and_escaped():
    sources = (Source("a<b>.txt", "<img src=x onerror=alert(1)>", 2, 0, 4, 0), Source("c.md", "丙 & 丁", 9, 0, 4, 5))
    out = render.hit_html(_hit("重复段落", sources=sources))
    assert "来源：&lt;img src=x onerror=alert(1)&gt; · a&lt;b&gt;.txt · 第2段" in out
    assert "来源：丙 &amp; 丁 · c.md · 第9段" in out
    assert "<img" not in out


def test_neighbours_are_in_a_collapsed_details_element():
    before = Passage("p0", "上一段<b>粗</b>", ())
    out = render.hit_html(_hit("本段内容"), context={("a.txt", 1): (before, None)})
    assert '<details class="qa-ctx"><summary>展开上下文</summary>' in out
    assert "上文：上一段&lt;b&gt;粗&lt;/b&gt;" in out
    assert "下文：" not in out
    assert "<details" not in render.hit_html(_hit("本段内容"), context={("a.txt", 1): (None, None)})
    assert "<details" not in render.hit_html(_hit("本段内容"), context={})  # a place not gathered: nothing shown


def test_not_found_says_so_and_marks_passages_low_confidence():
    result = SearchResult("火星", False, [_hit("最接近的段落", low=True)], "hybrid", 0.1, 0.5)
    out = render.answer_html(result)
    assert render.NOT_FOUND in out
    assert "低置信度" in out
    assert render.NOT_FOUND in render.answer_html(SearchResult("？？", False, [], "hybrid", 0.0, 0.5))


def test_question_is_escaped():
    assert render.question_html("<img src=x onerror=alert(1)>") == (
        '<span class="qa-question">&lt;img src=x onerror=alert(1)&gt;</span>'
    )


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("..\\..\\.bashrc.txt", "bashrc.txt"),
        (".hidden.md", "hidden.md"),
        ("报告 <2022>.HTML", "报告_2022.html"),
        ("a..b.md", "a.b.md"),
        ("扫描件 (1).PDF", "扫描件_1.pdf"),
        ("通知.docx", "通知.docx"),
    ],
)
def test_safe_filename(name, safe):
    assert safe_filename(name) == safe


@pytest.mark.parametrize("name", ["run.py", "x.md.exe", "noext", "...md"])
def test_safe_filename_refuses_other_types(name):
    with pytest.raises(UploadError, match="只接受"):
        safe_filename(name)


def test_build_events_become_chinese_labels_on_a_monotonic_bar():
    assert stage_progress(Stage.EMBED, 3, 12) == ("向量化新文本单元 3/12", pytest.approx(0.3 + 0.55 * 0.25))
    assert stage_progress(Stage.EMBED, 30, 120, 1.5)[0] == "向量化新文本单元 30/120，每秒 20.0 个，约剩 5 秒"
    assert stage_progress(Stage.EMBED, 10, 1000, 2.0)[0].endswith("约剩 3 分 18 秒")
    assert stage_progress(Stage.READ, 0, 5)[0] == "读取文档"
    assert stage_progress(Stage.OCR, 2, 10, 4.0)[0] == "文字识别（OCR）第 2/10 页，每秒 0.5 页，约剩 16 秒"
    events = [(stage, done, 4) for stage in Stage if stage != Stage.OCR for done in range(5)]
    shares = [stage_progress(*e)[1] for e in events]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(shares)) and shares[0] > 0 and shares[-1] == 1.0


def test_the_bar_holds_while_a_file_is_ocrd_inside_reading():
    from ui.progress import _reporter

    seen: list[tuple[float, str]] = []
    report = _reporter(lambda share, desc: seen.append((share, desc)))  # type: ignore[arg-type]
    for stage, done, total in [(Stage.READ, 0, 4), (Stage.READ, 2, 4), (Stage.OCR, 0, 3), (Stage.OCR, 2, 3),
                               (Stage.READ, 3, 4), (Stage.SPLIT, 0, 1)]:  # fmt: skip
        report(stage, done, total)
    shares = [share for share, _ in seen]
    assert all(b >= a for a, b in itertools.pairwise(shares))  # OCR's own span starts lower: the bar never goes back
    assert seen[3][1].startswith("文字识别（OCR）第 2/3 页")


def test_every_unreadable_reason_has_a_chinese_message():
    from typing import get_args

    from qa.documents import Unreadable
    from qa.library import _UNREADABLE

    assert set(_UNREADABLE) == set(get_args(Unreadable))


def test_feedback_log_appends_one_line_per_vote(tmp_path):
    log = FeedbackLog(tmp_path / "feedback" / "feedback.jsonl")
    log.append({"vote": "up", "query": "问题", "hits": ["a", "b"]})
    log.append({"vote": "down", "query": "问题", "hits": ["a"]})
    lines = [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]
    assert [r["vote"] for r in lines] == ["up", "down"]
    assert lines[0]["hits"] == ["a", "b"] and lines[0]["time"]


# ---------------------------------------------------------------- one live server


@pytest.fixture(scope="module")
def server(tmp_path_factory, seed_index, real_encoder) -> Iterator[LiveApp]:
    with launched_app(tmp_path_factory.mktemp("ui"), seed_index, real_encoder, max_upload_bytes=UPLOAD_LIMIT) as app:
        yield app


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=False)


def _search(client, question: str, **kwargs: Any) -> dict[str, Any]:
    return client.predict(question, api_name="/search", **kwargs)


def _upload(client, *paths: Path) -> str:
    from gradio_client import handle_file

    status, *_ = client.predict([handle_file(str(p)) for p in paths], api_name="/upload")
    return status


def test_server_binds_localhost(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_question_returns_cited_passages(client):
    result = _search(client, "上海全市核酸筛查采样了多少人")
    assert result["answered"] is True
    top = result["hits"][0]
    assert "2566.5万人" in top["text"]
    html = result["html"]
    for hit in result["hits"]:
        for s in hit["sources"]:
            assert f"来源：{s['title']} · {s['file']} · 第{s['paragraph']}段" in html
    assert "<mark>" in html and 'class="qa-evidence"' in html
    assert "展开上下文" in html


def test_chat_endpoint_appends_question_and_answer(client):
    history, box = client.predict("上海全市核酸筛查采样了多少人", [], api_name="/chat")
    assert box == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    answer = history[1]["content"][0]["text"]
    assert "2566.5万人" in answer and "来源：" in answer


def test_not_found_answer_lists_low_confidence_passages(client):
    result = _search(client, "上海全市核酸筛查采样了多少人", threshold=1.5)
    assert result["answered"] is False
    assert render.NOT_FOUND in result["html"]
    assert result["html"].count("低置信度") >= len(result["hits"]) > 0


def test_settings_reach_the_search(client):
    result = _search(client, "上海全市核酸筛查采样了多少人", k=2, mode="lexical")
    assert result["mode"] == "lexical" and len(result["hits"]) == 2


def test_empty_question_is_a_clear_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="问题为空"):
        _search(client, "   ")


@pytest.mark.parametrize("question", EXAMPLES)
def test_example_questions_are_answered(client, question):
    assert _search(client, question)["answered"] is True, (
        f"example {question!r} is not answered: replace it in ui/app.py"
    )


def test_document_content_and_titles_are_escaped(client):
    result = _search(client, XSS_QUESTION)
    top = result["hits"][0]
    assert top["sources"][0]["file"] == "xss.html"
    assert "<script>" in top["text"]  # the raw text does hold the markup …
    html = result["html"]
    assert "<script" not in html and "<img" not in html  # … the HTML never does
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "来源：&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;安全测试 · xss.html" in html
    history, _ = client.predict(XSS_QUESTION, [], api_name="/chat")
    assert "<script" not in history[1]["content"][0]["text"]


def test_upload_becomes_searchable(client, server, tmp_path):
    note = tmp_path / "长颈鹿笔记.md"
    note.write_text("# 长颈鹿笔记\n\n紫色长颈鹿每天傍晚在图书馆里阅读量子力学教材。\n", encoding="utf-8")
    status = _upload(client, note)
    assert "已加入：长颈鹿笔记.md" in status and "索引已更新" in status
    assert (server.docs / "长颈鹿笔记.md").is_file()
    top = _search(client, "紫色长颈鹿在图书馆里读什么")["hits"][0]
    assert "量子力学教材" in top["text"]
    assert top["sources"][0]["file"] == "长颈鹿笔记.md"


def test_upload_never_overwrites_a_file(client, server, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "同名.txt", tmp_path / "b" / "同名.txt"
    first.write_text("第一份同名文件：珊瑚礁里住着会唱歌的海马。\n", encoding="utf-8")
    second.write_text("第二份同名文件：沙漠里的仙人掌会在月圆之夜开花。\n", encoding="utf-8")
    assert "已加入：同名.txt" in _upload(client, first)
    status = _upload(client, second)
    assert "已加入：同名.txt（保存为 同名-2.txt）" in status
    assert "珊瑚礁" in (server.docs / "同名.txt").read_text(encoding="utf-8")
    assert "仙人掌" in (server.docs / "同名-2.txt").read_text(encoding="utf-8")
    assert "内容与已有文档 同名.txt 相同" in _upload(client, first)


def test_bad_uploads_are_refused_one_by_one_and_the_server_stays_up(client, server, tmp_path):
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))  # a PNG header would be read as a scan
    large = tmp_path / "large.md"
    large.write_text("很长的文档。" * (UPLOAD_LIMIT // 10), encoding="utf-8")
    empty = tmp_path / "empty.md"
    empty.write_bytes(b"")
    script = tmp_path / "evil.py"
    script.write_text("import os\n", encoding="utf-8")
    good = tmp_path / "good.md"
    good.write_text("一份正常的文档：北极熊喜欢在冰面上晒太阳。\n", encoding="utf-8")
    status = _upload(client, binary, large, empty, script, good)
    assert "未加入：image.txt：看起来是二进制文件" in status
    assert "未加入：large.md：文件太大" in status
    assert "未加入：empty.md：文件是空的" in status
    assert "未加入：evil.py：不支持这种文件类型" in status
    assert "已加入：good.md" in status
    assert (
        sorted(p.name for p in server.docs.iterdir() if p.name in {"image.txt", "large.md", "empty.md", "evil.py"})
        == []
    )
    assert _search(client, "上海全市核酸筛查采样了多少人")["answered"] is True


def test_remove_document(client, server, tmp_path):
    from gradio_client.exceptions import AppError

    doc = tmp_path / "待删除.md"
    doc.write_text("这份待删除的文档说：橙色企鹅在火山口附近滑雪。\n", encoding="utf-8")
    _upload(client, doc)
    assert "橙色企鹅" in _search(client, "橙色企鹅在哪里滑雪")["hits"][0]["text"]
    status, table, _ = client.predict("待删除.md", api_name="/remove")
    assert "已删除：待删除.md" in status
    assert "待删除.md" not in [row[1] for row in table["data"]]
    assert not (server.docs / "待删除.md").exists()
    assert all("橙色企鹅" not in h["text"] for h in _search(client, "橙色企鹅在哪里滑雪")["hits"])
    with pytest.raises(AppError, match="索引里没有文档"):
        client.predict("../index/manifest.json", api_name="/remove")
    with pytest.raises(AppError, match="&lt;img src=x onerror=alert\\(1\\)&gt;"):  # errors show as HTML toasts
        client.predict("<img src=x onerror=alert(1)>.md", api_name="/remove")
    assert (server.index / "manifest.json").is_file()


def test_removing_a_linked_document_removes_the_link_not_its_target(tmp_path):
    from qa.index import build_index
    from qa.library import Library
    from qa.search import Retriever
    from tests.fakes import HashEncoder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("甲文档：紫色河马在湖边跳舞。\n", encoding="utf-8")
    (docs / "b.txt").write_text("乙文档：绿色鹦鹉会说三种方言。\n", encoding="utf-8")
    (docs / "c.txt").symlink_to("a.txt")  # a link inside the folder is indexed as its own document
    build_index(docs, tmp_path / "index", encoder=HashEncoder())
    library = Library(Retriever.load(tmp_path / "index", encoder=HashEncoder()), docs)
    assert {d["file"] for d in library.documents()} == {"a.txt", "b.txt", "c.txt"}
    library.remove("c.txt")
    assert not (docs / "c.txt").is_symlink() and (docs / "a.txt").read_text(encoding="utf-8").startswith("甲文档")
    assert {d["file"] for d in library.documents()} == {"a.txt", "b.txt"}


def test_a_citation_opens_its_document_and_offers_the_original_file(client, server):
    top = _search(client, "上海全市核酸筛查采样了多少人")["hits"][0]
    source = top["sources"][0]
    start, end = source["span"]
    request = render.source_link(
        Source(source["file"], source["title"], source["paragraph"], start, end, 0), top["evidence"]
    )
    html, download = client.predict(request, api_name="/source")
    assert 'id="qa-here"' in html and "2566.5万人" in html
    assert download["visible"] is True and download["label"] == f"下载原文件：{source['file']}"
    copy = download["value"]  # a copy, served from Gradio's cache, not from the documents folder
    assert copy["orig_name"] == source["file"] and str(server.docs) not in copy["path"]
    with urllib.request.urlopen(copy["url"], timeout=10) as response:
        assert response.read() == (server.docs / source["file"]).read_bytes()
    html, download = client.predict("#qa-src=0%7C1%7C-1%7C-1%7C..%2F..%2Fetc%2Fpasswd", api_name="/source")
    assert "无法打开原文" in html and download["visible"] is False  # only indexed files, and no button


def test_docs_index_and_feedback_are_not_served(server):
    for path in (server.docs / "xss.html", server.index / "manifest.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=10)
        assert err.value.code in (403, 404)


def test_serve_updates_a_stale_index_then_reports_a_busy_port(server, seed_index, tmp_path, capsys):
    from ui.serve import serve

    docs, index = tmp_path / "docs", tmp_path / "index"
    shutil.copytree(SEEDS, docs)
    shutil.copytree(seed_index, index)  # built from another folder: serve must bring it up to date
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    assert serve(docs_dir=docs, index_dir=index, host="127.0.0.1", port=port) == 1
    err = capsys.readouterr().err
    assert f"Updating the index in {index}" in err and "Index ready" in err
    assert f"cannot listen on 127.0.0.1:{port}" in err and f"--port {port + 1}" in err


# ---------------------------------------------------------------- hostile and odd input

SEED_QUESTION = "上海全市核酸筛查采样了多少人"
ODD_QUESTIONS = {
    "long": "上海全市核酸筛查采样了多少人" + "啊" * 100_000,
    "control": "上海全市核酸筛查\x00\x07\x1b[31m采样了多少人\x7f",
    "invisible": "上海\u200b全市\u200c核酸\u200d筛查\ufeff采样了\u202e多少人\u200f",
    "emoji": "😷🦠💉👨‍👩‍👧",
    "html": '<script>window.__xss=1</script><img src=x onerror="alert(1)">上海核酸筛查',
    "sql": "上海'; DROP TABLE passages; -- \" OR 1=1 /*",
    "javascript": "javascript:alert(document.cookie)",
    "template": "{{7*7}} ${7*7} <%= 7*7 %> %s%s%s%n",
}


def _no_markup_from(html: str) -> None:
    assert "<script" not in html and "<img" not in html and 'onerror="' not in html
    assert 'href="javascript:' not in html


@pytest.mark.parametrize("kind", list(ODD_QUESTIONS))
def test_odd_questions_get_a_defined_escaped_answer(client, kind):
    question = ODD_QUESTIONS[kind]
    result = _search(client, question)
    assert set(result) >= {"answered", "verdict", "hits", "html"}
    _no_markup_from(result["html"])
    history, box = client.predict(question, [], api_name="/chat")
    assert box == "" and [m["role"] for m in history] == ["user", "assistant"]
    _no_markup_from(history[0]["content"][0]["text"] + history[1]["content"][0]["text"])
    if kind == "emoji":
        assert result["answered"] is False and result["hits"] == []
    if kind == "long":
        assert "cut to its first 1000" in result["html"]


def test_invisible_characters_do_not_change_the_answer(client):
    plain, odd = _search(client, SEED_QUESTION), _search(client, ODD_QUESTIONS["invisible"])
    assert [h["id"] for h in odd["hits"]] == [h["id"] for h in plain["hits"]]
    assert odd["query"] == SEED_QUESTION  # searched without them, shown without them


def test_odd_documents_get_a_defined_result_and_nothing_indexed_is_lost(client, server, tmp_path):
    import httpx

    indexed = set(_indexed_files(server))
    gbk = tmp_path / "国标编码.txt"
    gbk.write_bytes("国标编码的说明：白色的熊猫在竹林里弹钢琴。\n".encode("gbk"))
    page = tmp_path / "链接.html"
    page.write_text(
        '<html><body><p>橘色的海豚会写诗。<a href="javascript:window.__xss=1">点我</a>'
        '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script></p></body></html>',
        encoding="utf-8",
    )
    huge = tmp_path / "巨大.txt"
    huge.write_bytes(("很长的文档。" * 200_000).encode("utf-8")[: 10 * 1024 * 1024])
    status = _upload(client, gbk, page)
    assert "已加入：国标编码.txt" in status and "已加入：链接.html" in status
    assert "熊猫" in _search(client, "白色的熊猫在哪里弹钢琴")["hits"][0]["text"]
    result = _search(client, "橘色的海豚会做什么")
    assert "海豚" in result["hits"][0]["text"]
    _no_markup_from(result["html"])
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks first …
        _upload(client, huge)
    refused = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("巨大.txt", huge.read_bytes())}, timeout=60)
    assert refused.status_code == 413  # … and so does the server: Gradio's ceiling is 4 × the app's limit
    assert indexed <= set(_indexed_files(server))
    assert _search(client, SEED_QUESTION)["answered"] is True


def test_an_uploaded_name_with_dot_dot_stays_in_the_documents_folder(client, server, tmp_path):
    import httpx

    response = httpx.post(
        f"{server.url}gradio_api/upload",
        files={"files": ("../../逃逸.md", "# 逃逸\n\n这份文档想写到文档文件夹外面：绿色的企鹅。\n".encode())},
        timeout=60,
    )
    response.raise_for_status()
    (path,) = response.json()
    status, *_ = client.predict([{"path": path, "meta": {"_type": "gradio.FileData"}}], api_name="/upload")
    assert "已加入：" in status
    stored = [p for p in server.docs.rglob("*.md") if "绿色的企鹅" in p.read_text(encoding="utf-8")]
    assert [p.parent for p in stored] == [server.docs]
    assert [p for p in server.docs.parent.rglob("*.md") if "逃逸" in p.name and p.parent != server.docs] == []


def _indexed_files(server: LiveApp) -> list[str]:
    from qa.index import Index

    return [d.file for d in Index.open(server.index).manifest.documents]
