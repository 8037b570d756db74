from __future__ import annotations

from qa.documents import Document, read_documents
from qa.split import collapse_duplicates, normalize, pack_sentences, split_document, split_sentences
from tests.conftest import SEEDS


def _doc(text: str, path: str = "t.txt") -> Document:
    return Document(path=path, title="标题", text=text, sha256="0" * 64)


def test_sentences_end_at_chinese_and_western_marks_with_closing_quotes():
    text = "他说：“坚持就是胜利！”我们同意。真的吗？Yes! 好；继续…… 完"
    parts = [text[s:e] for s, e in split_sentences(text)]
    assert parts == ["他说：“坚持就是胜利！”", "我们同意。", "真的吗？", "Yes!", "好；", "继续……", "完"]


def test_decimal_points_do_not_end_sentences():
    text = "全市共采样2566.5万人、242.7万管。其余样本还在检测。"
    assert [text[s:e] for s, e in split_sentences(text)] == ["全市共采样2566.5万人、242.7万管。", "其余样本还在检测。"]


def test_passages_never_cut_inside_a_sentence_unless_it_is_too_long():
    text = "第一句话比较短。" * 10 + "这是一个非常长的句子，" * 30 + "。"
    spans = pack_sentences(text, 50)
    assert all(e - s <= 50 for s, e in spans)
    sentence_ends = {e for _, e in split_sentences(text)}
    short_part = [e for s, e in spans if e <= 80]
    assert all(e in sentence_ends for e in short_part)
    assert "".join(text[s:e] for s, e in spans) == text


def test_passages_carry_exact_provenance():
    doc = _doc(
        "第一段说的是疫情防控。😷 English mixed 中文，全角标点！\n第二段<第一句>讲的是核酸检测。第二句讲的是疫苗接种工作。"
    )
    passages = split_document(doc, max_chars=20)
    for p in passages:
        src = p.source
        assert doc.text[src.start : src.end] == p.text
        assert src.file == "t.txt" and src.title == "标题"
    assert [p.source.paragraph for p in passages] == [1, 1, 1, 2, 2]
    assert [p.source.order for p in passages] == list(range(len(passages)))


def test_ids_are_content_hashes():
    a = split_document(_doc("同一句话。"))[0]
    b = split_document(_doc("同一句话。", path="other.txt"))[0]
    c = split_document(_doc("同一句话 。"))[0]
    assert a.id == b.id == c.id
    assert len(a.id) == 16


def test_exact_and_near_duplicates_collapse_and_keep_every_source():
    base = (
        "各级党组织要坚持人民至上、生命至上，坚持外防输入、内防反弹，坚持动态清零，不断提高科学精准防控水平，"
        "统筹好疫情防控和经济社会发展，最大限度保护人民生命安全和身体健康。"
    )
    near = base.replace("最大限度", "最大程度")
    docs = [_doc(base + "\n" + "无关的一段话，讲的是别的事情。", "a.txt"), _doc(base, "b.txt"), _doc(near, "c.txt")]
    passages = [p for d in docs for p in split_document(d)]
    merged = collapse_duplicates(passages)
    assert len(merged) == 2
    top = next(p for p in merged if len(p.sources) > 1)
    assert [s.file for s in top.sources] == ["a.txt", "b.txt", "c.txt"]
    assert len(collapse_duplicates(passages, near_dup=1.0)) == 3


def test_short_headings_that_differ_are_not_merged():
    a = split_document(_doc("上海疫情支援的心得体会篇1", "a.txt"))
    b = split_document(_doc("上海疫情支援的心得体会篇10", "b.txt"))
    assert len(collapse_duplicates(a + b)) == 2


def test_a_heading_opens_the_next_paragraph_passage():
    doc = _doc("【篇1】疫情防控工作会议讲话\n今天召开全省疫情防控工作会议。下面，我强调几点意见。")
    passages = split_document(doc)
    assert len(passages) == 1
    src = passages[0].source
    assert src.paragraph == 1 and src.start == 0 and doc.text[src.start : src.end] == passages[0].text
    assert passages[0].text.startswith("【篇1】") and passages[0].text.endswith("几点意见。")


def test_seed_duplicates_cite_every_place():
    docs = read_documents(SEEDS)
    passages = collapse_duplicates([p for d in docs for p in split_document(d)])
    shanghai = [p for p in passages if "全市共采样2566.5万人" in p.text]
    assert len(shanghai) == 1, "篇1 and 篇10 of 002 repeat this paragraph: it must be one passage"
    assert len(shanghai[0].sources) == 2
    assert {s.file for s in shanghai[0].sources} == {"002_117e7d3914e89035.txt"}
    ids = [p.id for p in passages]
    assert len(ids) == len(set(ids))
    keys = [normalize(p.text) for p in passages]
    assert len(keys) == len(set(keys))
