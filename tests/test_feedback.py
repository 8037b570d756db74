from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.cli import main
from qa.errors import QuerySetError
from qa.evaluate import load_queries
from qa.feedback import FeedbackLog, export_queries, read_votes


def _log(tmp_path: Path) -> Path:
    log = FeedbackLog(tmp_path / "feedback" / "feedback.jsonl")
    log.append(
        {
            "vote": "up",
            "query": "上海全市核酸筛查采样了多少人",
            "hits": ["p1", "p2"],
            "evidence": "全市共采样2566.5万人",
        }
    )
    log.append({"vote": "down", "query": "红烧肉怎么做", "hits": ["p9"], "evidence": "无关"})
    log.append({"vote": "up", "query": "红烧肉怎么做", "hits": ["p9"]})
    log.append({"vote": "down", "query": "红烧肉怎么做", "hits": ["p9"]})  # the last vote counts
    log.append({"vote": "up", "query": "撤回的问题", "hits": ["p3"], "evidence": "x"})
    log.append({"vote": "cleared", "query": "撤回的问题", "hits": ["p3"]})
    log.path.open("a", encoding="utf-8").write("not json\n")
    return log.path


def test_votes_become_query_set_lines(tmp_path: Path):
    lines = export_queries(read_votes(_log(tmp_path)))
    by_query = {line["query"]: line for line in lines}
    assert set(by_query) == {"上海全市核酸筛查采样了多少人", "红烧肉怎么做"}
    up = by_query["上海全市核酸筛查采样了多少人"]
    assert up["answers"] == ["全市共采样2566.5万人"] and up["passages"] == ["p1"]
    down = by_query["红烧肉怎么做"]
    assert down["answers"] == [] and down["review"] is True and down["kind"] == "unanswerable"


def test_the_export_round_trips_through_load_queries(tmp_path: Path, capsys):
    log = _log(tmp_path)
    out = tmp_path / "mine.jsonl"
    assert main(["feedback", "export", "--log", str(log), "-o", str(out)]) == 0
    assert "qa eval" in capsys.readouterr().err
    queries = load_queries(out)
    assert {q.answerable for q in queries} == {True, False}
    assert next(q for q in queries if not q.answerable).review
    assert all(json.loads(line)["id"].startswith("fb-") for line in out.read_text(encoding="utf-8").splitlines())


def test_a_missing_log_says_where_votes_come_from(tmp_path: Path):
    with pytest.raises(QuerySetError, match="No feedback log.*qa serve"):
        read_votes(tmp_path / "nothing.jsonl")
