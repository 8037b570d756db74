from __future__ import annotations

from pathlib import Path

import numpy as np

from qa.lexical import LexicalIndex, latin_terms, pinyin_terms, tokenize


def test_tokenize_normalizes_and_drops_punctuation_and_stopwords():
    tokens = tokenize("上海全市核酸筛查采样了多少人？！ＣＯＶＩＤ－19😷<p>的")
    assert "上海" in tokens and "核酸" in tokens and "筛查" in tokens
    assert "covid" in tokens and "19" in tokens
    assert not {"？", "！", "了", "多少", "的", "😷", "<", "p>"} & set(tokens)


def test_search_mode_yields_sub_words():
    assert {"中华", "人民", "共和国", "中华人民共和国"} <= set(tokenize("中华人民共和国"))


def test_punctuation_only_has_no_tokens():
    assert tokenize("。。！？……") == []


def test_bm25_ranks_and_round_trips_without_pickle(tmp_path: Path):
    texts = ["上海启动全市核酸筛查。", "武汉医疗队支援上海。", "今天天气很好。"]
    index = LexicalIndex.build(texts)
    q = tokenize("上海核酸筛查")
    scores = index.scores(q)
    assert int(np.argmax(scores)) == 0 and scores[2] == 0
    index.save(tmp_path / "bm25")
    assert all(p.suffix in (".npy", ".json") for p in (tmp_path / "bm25").rglob("*") if p.is_file())
    again = LexicalIndex.load(tmp_path / "bm25")
    assert np.allclose(again.scores(q), scores)
    assert again.scores(["不存在的词"]).sum() == 0


def test_traditional_characters_match_simplified_text():
    assert "四宝" in tokenize("防疫四寶是指哪四樣措施")
    index = LexicalIndex.build(["防疫四宝：口罩、消毒液、体温计和手套。", "其他内容。"])
    assert index.scores(tokenize("防疫四寶"))[0] > 0


def test_english_names_meet_chinese_words_through_pinyin():
    assert {"zhongnanshan", "wuhan", "tongji"} <= set(pinyin_terms(tokenize("钟南山院士和武汉同济医院")))
    assert "zhongnanshan" in latin_terms("What did Zhong Nanshan say?")
    assert "what" not in latin_terms("What did Zhong Nanshan say?")
    index = LexicalIndex.build(["钟南山说现在还不是摘口罩的时候。", "上海启动全市核酸筛查。"])
    scores = index.scores(tokenize("Zhong Nanshan masks"), latin_terms("Zhong Nanshan masks"))
    assert scores[0] > 0 and scores[1] == 0


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["上海", "核酸", "筛查", "武汉", "钟南山", "口罩", "疫苗", "医疗队", "方舱", "隔离", "社区", "志愿者"]
    return ["，".join(rng.choice(words, size=int(rng.integers(1, 6)))) + "。" for _ in range(n)]


def test_top_k_is_the_best_of_the_full_scores_without_sorting_them():
    index = LexicalIndex.build(_corpus(400))
    for query, latin in (
        ("上海核酸", []),
        ("钟南山", []),
        ("方舱 隔离 社区 志愿者 上海", []),
        ("Zhong Nanshan", ["zhongnanshan"]),
    ):
        tokens = tokenize(query)
        full = index.scores(tokens, latin)
        for k in (1, 7, 50, 1000):
            positions, scores = index.top_k(tokens, latin, k)
            assert len(positions) == min(k, int((full > 0).sum())) and len(set(positions.tolist())) == len(positions)
            assert np.allclose(scores, full[positions], rtol=1e-6) and np.all(np.diff(scores) <= 0)
            rest = np.setdiff1d(np.arange(len(full)), positions)
            assert full[rest].max(initial=0) <= scores[-1] * (1 + 1e-6)  # nothing left out beats the last one
        some = np.array([0, 3, 17, 399])
        assert np.allclose(index.scores_at(tokens, latin, some), full[some], rtol=1e-6)
    assert index.top_k(["不存在的词"], [], 5)[0].size == 0


def test_postings_ascend_within_each_term():
    """`scores_at` binary-searches each term's postings: bm25s must keep them in document order."""
    index = LexicalIndex.build(_corpus(300, seed=1))
    for bm25 in (index.bm25, index.pinyin):
        indptr, indices = bm25.scores["indptr"], bm25.scores["indices"]
        for t in range(len(indptr) - 1):
            assert np.all(np.diff(indices[indptr[t] : indptr[t + 1]]) > 0)
