from __future__ import annotations

import re
import shutil
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qa.errors import IndexMismatchError, QueryError
from qa.index import build_index
from qa.search import Retriever, highlight_spans
from qa.split import normalize
from tests.fakes import HashEncoder


@pytest.fixture(scope="module")
def retriever(hash_index: Path) -> Retriever:
    return Retriever.load(hash_index, encoder=HashEncoder())


def test_result_contract(retriever: Retriever):
    result = retriever.search("上海全市核酸筛查采样了多少人", k=5)
    assert isinstance(result.answered, bool)
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    assert "2566.5万人" in result.hits[0].text
    d = result.to_dict()
    assert {"query", "answered", "hits"} <= set(d)
    assert {"rank", "score", "text", "sources", "highlights"} <= set(d["hits"][0])
    assert set(d["hits"][0]["sources"][0]) == {"file", "title", "paragraph", "span", "page", "last_page", "place"}


def test_the_answer_is_the_top_hits_best_sentence_unless_nothing_is_found(retriever: Retriever):
    from qa.search import Answer

    result = retriever.search("上海全市核酸筛查采样了多少人", k=5, threshold=0.0)
    top = result.hits[0]
    start, end = top.evidence or (0, len(top.text))
    assert result.answer == Answer(top.text[start:end], 1, (start, end))
    assert result.to_dict()["answer"] == {"text": top.text[start:end], "rank": 1, "span": [start, end]}
    refused = retriever.search("上海全市核酸筛查采样了多少人", k=5, threshold=1.01)
    assert refused.verdict == "not_found" and refused.answer is None and refused.to_dict()["answer"] is None


def test_a_duplicate_passage_appears_once_and_cites_every_place(retriever: Retriever):
    hits = retriever.search("全市共采样2566.5万人", k=10, mode="lexical").hits
    assert len({h.id for h in hits}) == len(hits)
    assert len({normalize(h.text) for h in hits}) == len(hits)
    top = hits[0]
    assert len(top.sources) == 2
    assert {s.paragraph for s in top.sources} == {7, 74}


def test_highlights_mark_query_terms(retriever: Retriever):
    hit = retriever.search("上海 核酸筛查", k=1, mode="lexical").hits[0]
    marked = {normalize(hit.text[s:e]) for s, e in hit.highlights}
    assert {"上海", "全市核酸筛查"} & marked or "上海" in marked


def test_highlight_spans_survive_full_width_text():
    text = "ＣＯＶＩＤ－１９疫情，上海核酸"
    spans = highlight_spans(text, ["covid", "上海"])
    assert [unicodedata.normalize("NFKC", text[s:e]).lower() for s, e in spans] == ["covid", "上海"]


@pytest.mark.parametrize("query", ["", "   ", "\n\t　"])
def test_empty_query_is_a_value_error(retriever: Retriever, query: str):
    with pytest.raises(ValueError, match="empty"):
        retriever.search(query)
    with pytest.raises(QueryError):
        retriever.search(query)


@pytest.mark.parametrize("query", ["😷😷🦠", "。。。！？", "!!! ???", "……"])
def test_punctuation_or_emoji_only_is_not_answered(retriever: Retriever, query: str):
    result = retriever.search(query)
    assert result.answered is False and result.hits == []


def test_a_very_long_query_is_truncated_with_a_warning(retriever: Retriever):
    result = retriever.search("上海核酸检测" * 2000, k=3)
    assert len(result.query) == 1000
    assert result.warnings and "cut" in result.warnings[0]
    assert len(result.hits) == 3


def test_bad_arguments(retriever: Retriever):
    with pytest.raises(ValueError, match="mode"):
        retriever.search("上海", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        retriever.search("上海", k=0)


def test_every_mode_and_fusion(hash_index: Path):
    for fusion in ("rrf", "weighted", "dense-first"):
        r = Retriever.load(hash_index, encoder=HashEncoder(), fusion=fusion)
        for mode in ("hybrid", "dense", "lexical"):
            hits = r.search("上海全市核酸筛查采样", k=3, mode=mode).hits
            assert len(hits) == 3 and all(0 <= h.confidence <= 1 for h in hits)


def test_concurrent_searches_agree(retriever: Retriever):
    queries = ["上海全市核酸筛查", "动态清零", "武汉医疗队", "疫苗接种", "外防输入内防反弹"] * 8
    expected = {q: [h.id for h in retriever.search(q).hits] for q in set(queries)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda q: (q, [h.id for h in retriever.search(q).hits]), queries))
    assert all(ids == expected[q] for q, ids in got)


def test_save_load_gives_identical_top_k(hash_index: Path, tmp_path: Path, retriever: Retriever):
    copy = tmp_path / "copy"
    shutil.copytree(hash_index, copy)
    again = Retriever.load(copy, encoder=HashEncoder())
    for q in ["上海全市核酸筛查", "动态清零总方针", "How many people were sampled?"]:
        a = [(h.id, round(h.score, 6)) for h in retriever.search(q, k=10).hits]
        b = [(h.id, round(h.score, 6)) for h in again.search(q, k=10).hits]
        assert a == b


def test_neighbours_follow_document_order(retriever: Retriever):
    hit = retriever.search("上海全市核酸筛查采样", k=1, mode="lexical").hits[0]
    before, after = retriever.neighbours(hit.sources[0])
    assert before is not None and after is not None
    assert before.sources[0].end <= hit.sources[0].start or any(s.file != hit.sources[0].file for s in before.sources)


def test_a_lexical_only_index_refuses_dense_modes(tmp_path: Path):
    from tests.conftest import SEEDS

    build_index(SEEDS, tmp_path / "lex", dense=False)
    r = Retriever.load(tmp_path / "lex")
    assert r.search("上海全市核酸筛查采样了多少人", mode="lexical").answered
    with pytest.raises(IndexMismatchError, match="--mode lexical"):
        r.search("上海", mode="hybrid")


def test_a_different_model_than_the_index_is_refused(hash_index: Path):
    with pytest.raises(IndexMismatchError, match="qa index build"):
        Retriever.load(hash_index, encoder=HashEncoder(name="test/other"))
    r = Retriever.load(hash_index, encoder=HashEncoder(dimension=32))
    with pytest.raises(IndexMismatchError, match="dim 64.*dim 32"):
        r.search("上海")


def test_lexical_mode_never_embeds_the_question_and_judges_it_by_keywords(hash_index: Path):
    """Lexical mode answers from BM25 alone: no query vector, keyword-only confidence, the
    evidence sentence chosen by keyword coverage; the three verdicts still come out."""
    from qa import calibration

    encoder = HashEncoder()
    r = Retriever.load(hash_index, encoder=encoder)
    r.warm_up()
    before = encoder.calls
    result = r.search("上海全市核酸筛查采样了多少人", k=3, mode="lexical")
    assert encoder.calls == before
    assert r.calibration_for("lexical") is calibration.LEXICAL_DEFAULT
    assert r.calibration_for("hybrid") is r.calibration
    top = result.hits[0]
    assert "2566.5万人" in top.text and top.features["dense"] == 0.0
    assert result.verdict == calibration.LEXICAL_DEFAULT.verdict(top.confidence)
    assert top.evidence is not None and "核酸筛查" in top.text[top.evidence[0] : top.evidence[1]]
    assert r.search("红烧肉的家常做法步骤", mode="lexical").verdict == "not_found"
    assert encoder.calls == before
    r.search("上海全市核酸筛查采样了多少人", k=3, mode="hybrid")
    assert encoder.calls == before + 1


def test_the_evidence_sentence_weighs_the_question_s_keywords_with_its_cosine(monkeypatch):
    import numpy as np

    import qa.search
    from qa.search import EVIDENCE_KEYWORD_WEIGHT, evidence_span
    from qa.stores import ScoredUnit, Unit

    monkeypatch.setattr(qa.search, "EVIDENCE_LEAD_IN_CHARS", 0)  # these sentences are short: weigh them alone

    text = "上海4日启动了核酸筛查。截至5日全市共采样2566.5万人。"
    whole, first, second = Unit("p", 0, len(text)), Unit("p", 0, 12), Unit("p", 12, len(text))
    tokens, weights = ["采样", "多少"], np.array([3.0, 1.0])
    close = 0.5 * EVIDENCE_KEYWORD_WEIGHT  # the first sentence is nearer in cosine, by less than the keyword share
    units = [ScoredUnit(whole, 0.9), ScoredUnit(first, 0.8 + close), ScoredUnit(second, 0.8)]
    assert evidence_span(units, text, tokens, weights) == (12, len(text))  # holds 采样: 3/4 of the weight
    units[1] = ScoredUnit(first, 0.8 + EVIDENCE_KEYWORD_WEIGHT)  # far nearer in cosine: it wins
    assert evidence_span(units, text, tokens, weights) == (0, 12)
    assert evidence_span(units[:1], text, tokens, weights) is None  # one sentence: no evidence span


def test_a_lead_in_sentence_goes_on_with_the_next_one():
    import numpy as np

    from qa.search import EVIDENCE_LEAD_IN_CHARS, evidence_span
    from qa.stores import ScoredUnit, Unit

    lead, answer = "最后，我提3点要求。", "一要狠抓工作落实，二要增强忧患意识，三要提高工作本领，这是今天会议的要求。"
    text = lead + answer
    assert len(lead) < EVIDENCE_LEAD_IN_CHARS <= len(answer)
    whole, first, second = Unit("p", 0, len(text)), Unit("p", 0, len(lead)), Unit("p", len(lead), len(text))
    tokens, weights = ["要求"], np.array([1.0])
    units = [ScoredUnit(whole, 0.9), ScoredUnit(first, 0.95), ScoredUnit(second, 0.5)]
    assert evidence_span(units, text, tokens, weights) == (0, len(text))  # the lead-in and what it leads to
    units = [ScoredUnit(whole, 0.9), ScoredUnit(first, 0.5), ScoredUnit(second, 0.95)]
    assert evidence_span(units, text, tokens, weights) == (len(lead), len(text))  # a long sentence stands alone
    colon = "各单位须做到以下几点，具体要求如下：" + answer
    units = [ScoredUnit(Unit("p", 0, len(colon)), 0.9), ScoredUnit(Unit("p", 0, 18), 0.95),
             ScoredUnit(Unit("p", 18, len(colon)), 0.5)]  # fmt: skip
    assert evidence_span(units, colon, tokens, weights) == (0, len(colon))  # a colon leads in whatever its length
    units = [ScoredUnit(whole, 0.9), ScoredUnit(second, 0.5), ScoredUnit(Unit("p", len(text) - 3, len(text)), 0.95)]
    assert evidence_span(units, text, tokens, weights) == (len(text) - 3, len(text))  # nothing after the last


def test_confidence_never_rises_down_the_list_and_every_view_shows_the_same(retriever: Retriever):
    from ui.render import answer_html

    for question in ("上海全市核酸筛查采样了多少人", "钟南山说了什么", "口罩", "疫苗接种的好处"):
        result = retriever.search(question, k=10)
        confidences = [h.confidence for h in result.hits]
        assert confidences, question
        assert confidences == sorted(confidences, reverse=True), question
        assert all(h.low_confidence == (h.confidence < result.threshold) for h in result.hits)
        shown = [int(m) for m in re.findall(r"(\d+)%</span>", answer_html(result))]
        assert shown == [round(h.confidence * 100) for h in result.hits]  # the chat shows the API's figures
        assert [h["confidence"] for h in result.to_dict()["hits"]] == [round(c, 4) for c in confidences]


def test_a_reply_renders_from_context_gathered_once_never_from_the_store(retriever: Retriever, monkeypatch):
    from ui.render import answer_html

    result = retriever.search("上海全市核酸筛查采样了多少人", k=3)
    context = retriever.context(result.hits, 3)
    assert set(context) == {(s.file, s.order) for h in result.hits for s in h.sources[:3]}

    def no_store(*_: object) -> None:
        raise AssertionError("the renderer reached the store")

    monkeypatch.setattr(type(retriever.index.stores.passages), "neighbours", no_store)
    html = answer_html(result, context)
    before, after = context[(result.hits[0].sources[0].file, result.hits[0].sources[0].order)]
    assert before is not None or after is not None
    assert "展开上下文" in html and all(p is None or p.text[:20] in html for p in (before, after))
