from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qa.cli import main
from qa.errors import QuerySetError
from qa.evaluate import evaluate, load_queries, missing_answers, summarize
from qa.index import build_index
from qa.search import Retriever
from tests.conftest import QUERIES
from tests.fakes import HashEncoder

DEV = QUERIES.parent / "dev.jsonl"


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "query": "上海", "answers": ["x"]', "not valid JSON"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"id": "a", "query": "  ", "answers": []}', '"query" must be'),
        ('{"id": "a", "query": "上海", "answers": "2566.5万人"}', '"answers" must be a list'),
        ('{"id": "a", "query": "上海", "answers": [""]}', '"answers" must be a list'),
    ],
)
def test_malformed_lines_are_reported_with_their_number(tmp_path: Path, line: str, message: str):
    good = '{"id": "ok", "query": "上海", "answers": []}'
    path = _write(tmp_path, [good, "", line])
    with pytest.raises(QuerySetError, match=rf"q\.jsonl:3: .*{message}"):
        load_queries(path)


def test_duplicate_ids_and_missing_files(tmp_path: Path):
    row = '{"id": "a", "query": "上海", "answers": []}'
    with pytest.raises(QuerySetError, match="duplicate id"):
        load_queries(_write(tmp_path, [row, row]))
    with pytest.raises(QuerySetError, match="does not exist"):
        load_queries(tmp_path / "none.jsonl")


def test_the_shipped_query_set_is_broad_and_every_answer_is_in_the_corpus(hash_index: Path):
    queries = load_queries(QUERIES)
    kinds = [q.kind for q in queries]
    assert len(queries) >= 80
    assert kinds.count("english") >= 10 and kinds.count("unanswerable") >= 10
    assert {"fact", "keyword", "why", "how", "mixed", "typo"} <= set(kinds)
    assert all(q.answerable == (q.kind != "unanswerable") for q in queries)
    retriever = Retriever.load(hash_index, encoder=HashEncoder())
    assert missing_answers(queries, retriever) == []
    files = {s.file for p in retriever.index.passages for s in p.sources
             for q in queries if any(a in p.text for a in q.answers)}  # fmt: skip
    assert len(files) == 5, "the set must cover all five seed documents"


def test_metrics_on_a_hand_made_example():
    def row(answerable: bool, first: int | None, ranks: list[int], total: int, verdict: str, conf: float) -> dict:
        return {"answerable": answerable, "first_relevant_rank": first, "relevant_ranks": ranks, "relevant_total": total,
                "answered": verdict != "not_found", "verdict": verdict, "confidence": conf}  # fmt: skip

    rows = [
        row(True, 1, [1, 3], 2, "answered", 0.9),
        row(True, 4, [4], 1, "not_found", 0.2),
        row(True, None, [], 1, "uncertain", 0.5),
        row(False, None, [], 0, "not_found", 0.1),
        row(False, None, [], 0, "answered", 0.7),
    ]
    m = summarize(rows, k=10)
    assert m["hit@1"] == pytest.approx(1 / 3, abs=1e-3)
    assert m["hit@5"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["mrr@10"] == pytest.approx((1 + 0.25) / 3, abs=1e-3)
    assert m["recall@10"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-3)
    assert m["abstain_precision"] == 0.5 and m["abstain_recall"] == 0.5
    assert m["refused_answerable"] == pytest.approx(1 / 3, abs=1e-3)
    assert m["uncertain_answerable"] == pytest.approx(1 / 3, abs=1e-3)
    assert m["refused_unanswerable"] == 0.5 and m["answered_unanswerable"] == 0.5
    assert m["auroc"] == pytest.approx(4 / 6, abs=1e-3)  # answerable 0.9, 0.2, 0.5 vs unanswerable 0.1, 0.7
    assert m["answered_answerable"] == pytest.approx(1 / 3, abs=1e-3)
    assert "answer_f1" not in m  # no row says an answer


def test_answer_metrics_follow_the_cmrc_script():
    from qa.evaluate import em_f1, holds

    assert em_f1("2566.5万人", ["2566.5万人"]) == (1.0, 1.0)
    em, f1 = em_f1("全市共采样2566.5万人。", ["2566.5万人"])
    assert em == 0.0  # a sentence is no exact match ...
    assert 0.4 < f1 < 1.0  # ... but overlaps: 2566.5 is one word, 万 and 人 two characters, of 7 shown
    assert em_f1("北京", ["上海", "北京"]) == (1.0, 1.0)  # the best gold answer counts
    assert em_f1("", ["上海"]) == (0.0, 0.0)
    assert holds("截至4月5日8时，全市共采样2566.5萬人", ["2566.5万人"])  # folded: traditional, spaces
    assert not holds("全市共采样", ["2566.5万人"])


def test_evaluate_uses_the_same_search(hash_index: Path):
    retriever = Retriever.load(hash_index, encoder=HashEncoder())
    queries = load_queries(QUERIES)[:12]
    result = evaluate(retriever, queries, k=5, mode="lexical")
    assert len(result.rows) == 12 and 0 <= result.metrics["hit@5"] <= 1
    assert json.loads(result.to_json())["metrics"] == result.metrics


def test_eval_command_writes_report_plot_and_calibration(hash_index: Path, tmp_path: Path, capsys):
    index = tmp_path / "index"
    shutil.copytree(hash_index, index)
    dev = DEV.read_text(encoding="utf-8").splitlines()
    unanswerable = [line for line in dev if '"answers": []' in line]
    lines = (
        [line for line in dev if line not in unanswerable][:20]
        + unanswerable[:8]
        + [
            '{"id": "bogus", "query": "上海", "answers": ["这句话不在语料里"], "kind": "fact"}',
        ]
    )
    qfile = _write(tmp_path, lines)
    report, plot = tmp_path / "r.md", tmp_path / "p.png"
    import qa.search

    real_load = qa.search.Retriever.load.__func__  # type: ignore[attr-defined]

    def load(cls, index_dir, **kw):
        return real_load(cls, index_dir, encoder=HashEncoder(), **{k: v for k, v in kw.items() if k != "encoder"})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qa.search.Retriever, "load", classmethod(load))
        code = main(
            ["eval", str(qfile), "--index", str(index), "--report", str(report), "--plot", str(plot), "--calibrate"]
        )
    assert code == 0
    out = capsys.readouterr()
    assert "bogus" in out.err and "counts as a miss" in out.err
    assert "| hit@1 |" in out.out and "hybrid" in out.out and "lexical" in out.out
    assert "| answer_f1 |" in out.out and "| kind (n) | answered | uncertain | not found |" in out.out
    text = report.read_text(encoding="utf-8")
    assert "## Verdicts and the answer said first" in text
    assert "## Metrics per mode" in text and "## Per query: hybrid" in text and "bogus" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cal = json.loads((index / "manifest.json").read_text(encoding="utf-8"))["calibration"]
    assert cal["fitted"] is True and cal["fitted_on"] == str(qfile)
    Retriever.load(index, encoder=HashEncoder())  # the manifest change keeps the index loadable


def test_qa_evaluate_is_callable_however_it_was_imported(hash_index: Path):
    import qa
    import qa.evaluate  # makes the attribute the module

    retriever = Retriever.load(hash_index, encoder=HashEncoder())
    queries = qa.load_queries(QUERIES)[:3]
    assert qa.evaluate(retriever, queries, k=3, mode="lexical").metrics["queries"] == 3


def test_policy_thresholds_hold_their_shares():
    import numpy as np

    from qa.evaluate import answer_threshold, refusal_threshold

    answerable = np.linspace(0.2, 0.99, 100)
    t = refusal_threshold(answerable, 0.03)
    assert (answerable < t).sum() == 3
    unanswerable = np.linspace(0.01, 0.6, 50)
    c = answer_threshold(unanswerable, 0.10)
    assert (unanswerable >= c).sum() == 5
    assert refusal_threshold(answerable, 0.0) < answerable.min()


def test_calibrate_fits_a_policy_on_out_of_fold_confidences(hash_index: Path):
    from qa.evaluate import calibrate

    retriever = Retriever.load(hash_index, encoder=HashEncoder())
    queries = load_queries(DEV)
    result = evaluate(retriever, queries, k=5)
    cal = calibrate(result, retriever, max_false_refusals=0.03, max_false_answers=0.1, source="dev")
    assert cal.fitted and cal.fitted_on == "dev" and cal.confident is not None and cal.confident >= cal.threshold
    vetoed = [r["top_features"]["untyped"] for r in result.rows if r["answerable"] and r["top_features"]]
    # the levels come from the model without the veto (≤ 3% refused); the veto only lowers
    assert cal.details["cv_refused_answerable"] <= 0.03 + sum(vetoed) / len(vetoed) and cal.details["folds"] == 5
    assert cal.features[-1] == "untyped" and cal.weights[-1] <= 0.0
    assert cal.verdict(cal.threshold - 1e-6) == "not_found"
    assert cal.verdict(cal.confident) == "answered"
    if cal.confident > cal.threshold:
        assert cal.verdict((cal.threshold + cal.confident) / 2) == "uncertain"


def test_cross_docs_counts_answers_in_the_left_out_document_as_unanswerable(tmp_path: Path):
    from qa.evaluate import Query, cross_document_eval

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("蓝鲸牌保温杯的容量是七百毫升，可以保温十二个小时。", encoding="utf-8")
    (docs / "b.txt").write_text("新冠病毒疫苗接种后需要留观三十分钟。", encoding="utf-8")
    (docs / "c.txt").write_text("上海四月四日启动了全市核酸筛查。", encoding="utf-8")
    build_index(docs, tmp_path / "index", encoder=HashEncoder())
    retriever = Retriever.load(tmp_path / "index", encoder=HashEncoder())
    queries = [Query("q1", "保温杯能保温多久", ("保温十二个小时",)), Query("q2", "留观多久", ("留观三十分钟",))]
    result = cross_document_eval(retriever, queries, k=3)
    rows = {(r["left_out"], r["id"]): r for r in result.rows}
    assert len(rows) == 6
    assert rows[("a.txt", "q1")]["answerable"] is False and rows[("b.txt", "q1")]["answerable"] is True
    assert rows[("b.txt", "q2")]["answerable"] is False and rows[("c.txt", "q2")]["answerable"] is True
    assert result.metrics["answerable"] == 4 and result.metrics["unanswerable"] == 2
