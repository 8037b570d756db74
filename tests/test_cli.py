from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.cli import main
from tests.conftest import SEEDS


@pytest.fixture(scope="module")
def lexical_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "index"
    assert main(["index", "build", "--docs", str(SEEDS), "--index", str(folder), "--no-dense", "-q"]) == 0
    return folder


def test_build_prints_a_summary(tmp_path: Path, capsys):
    assert main(["index", "build", "--docs", str(SEEDS), "--index", str(tmp_path / "i"), "--no-dense"]) == 0
    out = capsys.readouterr()
    assert "5 documents" in out.out and "duplicates collapsed" in out.out
    assert "Reading documents" in out.err
    assert main(["index", "build", "--docs", str(SEEDS), "--index", str(tmp_path / "i"), "--no-dense"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_ask_json_is_exactly_one_object(lexical_index: Path, capsys):
    code = main(["ask", "上海全市核酸筛查采样了多少人", "--json", "--mode", "lexical", "--index", str(lexical_index)])
    assert code == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out.count("\n") == 1
    assert data["query"] == "上海全市核酸筛查采样了多少人"
    assert isinstance(data["answered"], bool)
    hit = data["hits"][0]
    assert {"rank", "score", "text", "sources", "highlights"} <= set(hit)
    assert hit["rank"] == 1 and "2566.5万人" in hit["text"]
    assert hit["sources"][0]["span"][1] > hit["sources"][0]["span"][0]
    if data["verdict"] != "not_found":  # the answer said first: a span of the top hit's text
        start, end = data["answer"]["span"]
        assert data["answer"]["rank"] == 1 and data["answer"]["text"] == hit["text"][start:end]
    else:
        assert data["answer"] is None


def test_ask_says_the_answer_first(lexical_index: Path, capsys):
    args = [
        "ask",
        "上海全市核酸筛查采样了多少人",
        "--threshold",
        "0",
        "--mode",
        "lexical",
        "--index",
        str(lexical_index),
    ]
    main([*args, "--json"])
    answer = json.loads(capsys.readouterr().out)["answer"]
    main(args)
    head = capsys.readouterr().out.splitlines()[:2]  # 答： first, after the hedge of a 可能相关 verdict
    first = head[1] if head[0].startswith("可能相关") else head[0]
    assert first.startswith(f"答：{answer['text']}  —  ") and "002_117e7d3914e89035.txt" in first, head


def test_ask_human_output_marks_terms_and_cites(lexical_index: Path, capsys):
    main(["ask", "上海核酸筛查", "-k", "2", "--mode", "lexical", "--index", str(lexical_index)])
    out = capsys.readouterr().out
    assert "#1" in out and "来源：" in out and "第7段" in out and "【上海】" in out


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_question_exits_2(lexical_index: Path, capsys, query: str):
    assert main(["ask", query, "--index", str(lexical_index), "--mode", "lexical"]) == 2
    assert "empty" in capsys.readouterr().err


def test_missing_index_and_docs_say_what_to_run(tmp_path: Path, capsys):
    assert main(["ask", "上海", "--index", str(tmp_path / "none")]) == 1
    assert "qa index build" in capsys.readouterr().err
    assert (
        main(["index", "build", "--docs", str(tmp_path / "nodocs"), "--index", str(tmp_path / "i"), "--no-dense"]) == 1
    )
    assert "does not exist" in capsys.readouterr().err


def test_info(lexical_index: Path, capsys):
    assert main(["index", "info", "--index", str(lexical_index)]) == 0
    out = capsys.readouterr().out
    assert "Passages:" in out and "up to date" in out


def test_the_engine_never_imports_its_ui():
    """`qa serve` runs `python -m ui`; nothing under qa/ imports ui or gradio."""
    import re

    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"^\s*(from|import)\s+(ui|gradio)\b", re.MULTILINE)
    offenders = [p.name for p in (root / "qa").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_serve_hands_over_to_the_ui_module(monkeypatch):
    import os
    import sys

    calls = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: calls.append(argv))
    main(["serve", "--index", "x", "--docs", "d", "--port", "7999"])
    assert calls == [
        [sys.executable, "-m", "ui", "--docs", "d", "--index", "x", "--host", "127.0.0.1", "--port", "7999"]
    ]


def test_qa_docs_lists_adds_and_removes_with_the_chats_checks(tmp_path: Path, capsys):
    import shutil

    from tests.conftest import SEEDS

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in sorted(p.name for p in SEEDS.iterdir())[:2]:
        shutil.copy(SEEDS / name, docs / name)
    index = str(tmp_path / "index")
    assert main(["index", "build", "--docs", str(docs), "--index", index, "--no-dense"]) == 0
    capsys.readouterr()
    assert main(["docs", "list", "--index", index, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    new, bad = tmp_path / "新 通知.txt", tmp_path / "程序.txt"
    new.write_text("新的通知：紫色长颈鹿每天下午三点喝茶。\n", encoding="utf-8")
    bad.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    assert main(["docs", "add", str(new), str(bad), "--index", index]) == 1  # one refused: exit 1
    out = capsys.readouterr().out
    assert "已加入：新 通知.txt（保存为 新_通知.txt）" in out and "未加入：程序.txt：看起来是二进制文件" in out
    assert (docs / "新_通知.txt").exists() and not (docs / "程序.txt").exists()
    assert main(["ask", "长颈鹿几点喝茶", "--index", index, "--mode", "lexical", "--json"]) == 0
    assert "三点" in json.loads(capsys.readouterr().out)["hits"][0]["text"]
    assert main(["docs", "remove", "新_通知.txt", "--index", index]) == 0
    assert "已删除：新_通知.txt" in capsys.readouterr().out and not (docs / "新_通知.txt").exists()
    assert main(["docs", "remove", "没有这个.txt", "--index", index]) == 1  # a QAError: the message names it
    assert "索引里没有文档 没有这个.txt" in capsys.readouterr().err
