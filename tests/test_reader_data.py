"""qa/reader/data.py on tiny inline SQuAD-format files: CMRC-like, DRCD-like (traditional) and SQuAD 2.0-like."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from qa.errors import QAError
from qa.reader.data import (
    RAW_SOURCES,
    SYNTHETIC,
    DataConfig,
    Mix,
    _quotas,
    build_dataset,
    check_allowed,
    load_articles,
    locate_answer,
    read_squad,
    sentence_spans,
    window_spans,
    write_dataset,
)


def _qa(qid: str, question: str, context: str, answer: str | None, shift: int = 0) -> dict[str, Any]:
    """A SQuAD question; answer None: unanswerable. `shift` moves the annotated offset off the answer."""
    if answer is None:
        return {"id": qid, "question": question, "answers": [], "is_impossible": True}
    start = context.index(answer)
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start + shift}]}


def _article(aid: str, title: str, paragraphs: list[tuple[str, list[tuple[str, str, str | None]]]]) -> dict[str, Any]:
    return {
        "id": aid,
        "title": title,
        "paragraphs": [{"context": ctx, "qas": [_qa(qid, q, ctx, a) for qid, q, a in qas]} for ctx, qas in paragraphs],
    }


CHANGJIANG = (
    "长江是中国第一长河。长江全长约6300公里，流经青海、西藏、四川等十一个省级行政区。"
    "长江流域面积约180万平方公里。长江三峡是著名的风景区，每年吸引大量游客！"
    "长江中下游平原土地肥沃，盛产稻米和淡水鱼。"
)
HUANGHE = "黄河是中国第二长河。黄河全长约5464公里，发源于青海省巴颜喀拉山脉。黄河流经黄土高原，携带大量泥沙，因此河水呈黄色。黄河被称为中华民族的母亲河。"
CMRC = {
    "version": "v1.0",
    "data": [
        _article(
            "TRIAL_1",
            "长江",
            [
                (
                    CHANGJIANG,
                    [
                        ("TRIAL_1_QUERY_0", "长江全长约多少公里？", "6300公里"),
                        ("TRIAL_1_QUERY_1", "长江流域面积约为多大？", "180万平方公里"),
                        ("TRIAL_1_QUERY_2", "长江三峡是什么地方？", "著名的风景区"),
                    ],
                )
            ],
        ),
        _article(
            "TRIAL_2",
            "黄河",
            [
                (
                    HUANGHE,
                    [
                        ("TRIAL_2_QUERY_0", "黄河发源于哪里？", "青海省巴颜喀拉山脉"),
                        ("TRIAL_2_QUERY_1", "黄河为什么呈黄色？", "携带大量泥沙"),
                    ],
                )
            ],
        ),
    ],
}

TAIWAN_1 = (
    "臺灣位於東亞，是一個島嶼。臺灣的首都是臺北市，人口約兩百六十萬。臺灣島的最高峰是玉山，海拔三千九百五十二公尺。"
)
TAIWAN_2 = "臺灣的氣候屬於亞熱帶與熱帶季風氣候。夏季常有颱風侵襲，帶來豐沛的雨量。"
HONGKONG = (
    "香港位於中國南部，是一個國際金融中心。香港的面積約為一千一百平方公里。維多利亞港是香港著名的海港，夜景聞名世界。"
)
DRCD = {
    "version": "1.3",
    "data": [
        {
            "id": "1001",
            "title": "臺灣",
            "paragraphs": [
                {
                    "id": "1001-1",
                    "context": TAIWAN_1,
                    "qas": [
                        # the annotated offset is 2 characters off: the answer is found again nearby
                        _qa("1001-1-1", "臺灣島的最高峰是哪一座山？", TAIWAN_1, "玉山", shift=2),
                        _qa("1001-1-2", "臺灣的首都是哪一座城市？", TAIWAN_1, "臺北市"),
                    ],
                },
                {
                    "id": "1001-2",
                    "context": TAIWAN_2,
                    "qas": [_qa("1001-2-1", "夏季常有什麼侵襲臺灣？", TAIWAN_2, "颱風")],
                },
            ],
        },
        _article("1002", "香港", [(HONGKONG, [("1002-1-1", "香港著名的海港是哪裡？", "維多利亞港")])]),
    ],
}

NILE = (
    "The Nile is a major river in Africa. It is about 6,650 km long. "
    "The Nile flows north into the Mediterranean Sea. Many ancient cities were built along its banks."
)
AMAZON = (
    "The Amazon carries more water than any other river. Its basin covers about 7 million square kilometres. "
    "The river flows east into the Atlantic Ocean."
)
EVEREST = (
    "Mount Everest is the highest mountain on Earth. Its summit is 8,849 metres above sea level. "
    "It lies on the border between Nepal and China."
)
K2 = "K2 is the second highest mountain. It is located in the Karakoram range. Climbing K2 is considered more dangerous than Everest."
SQUAD = {
    "version": "v2.0",
    "data": [
        {
            "title": "Rivers",
            "paragraphs": [
                {
                    "context": NILE,
                    "qas": [
                        _qa("r1", "How long is the Nile?", NILE, "6,650 km"),
                        _qa("r2", "How long is the Congo river?", NILE, None),
                        _qa("r3", "Into which sea does the Nile flow?", NILE, "Mediterranean Sea"),
                    ],
                },
                {
                    "context": AMAZON,
                    "qas": [
                        _qa("r4", "Where does the Amazon flow?", AMAZON, "the Atlantic Ocean"),
                        _qa("r5", "How many square kilometres does the Amazon basin cover?", AMAZON, "7 million"),
                    ],
                },
            ],
        },
        _article(
            "",
            "Mountains",
            [
                (
                    EVEREST,
                    [
                        ("m1", "How high is the summit of Mount Everest?", "8,849 metres"),
                        ("m2", "Who first climbed K2?", None),
                    ],
                ),
                (K2, [("m3", "In which range is K2 located?", "the Karakoram range")]),
            ],
        ),
    ],
}

SMALL = DataConfig(max_chars_zh=40, max_chars_en=120, mix=Mix(answerable_share=0.2))


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    for source, content in zip(RAW_SOURCES, (CMRC, DRCD, SQUAD), strict=True):
        (folder / source.file).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return folder


def _answers(raw: Path) -> dict[str, tuple[str, ...]]:
    """Every question's answers (simplified), by "<source>/<question id>"."""
    out = {}
    for source in RAW_SOURCES:
        articles, _ = load_articles(raw / source.file, source)
        out.update({f"{source.name}/{q.id}": q.answers for a in articles for q in a.questions})
    return out


def test_locate_answer_takes_the_occurrence_nearest_the_hint() -> None:
    text = "玉山在东。玉山在西。玉山在南。"
    assert locate_answer(text, "玉山", 5) == 5
    assert locate_answer(text, "玉山", 8) == 10
    assert locate_answer(text, "雪山", 5) == -1
    assert locate_answer(text, "", 0) == -1


def test_traditional_chinese_is_converted_and_offsets_still_point_at_the_answer(raw: Path) -> None:
    articles, dropped = load_articles(raw / "DRCD_test.json", RAW_SOURCES[1])
    assert not dropped
    questions = {q.id: (a, q) for a in articles for q in a.questions}
    for a, q in questions.values():
        paragraph = a.paragraphs[q.paragraph]
        assert paragraph[q.start : q.start + len(q.answers[0])] == q.answers[0]
        assert "臺" not in paragraph and "灣" not in q.text
    assert questions["1001-1-1"][1].answers == ("玉山",)  # its offset was 2 off
    assert questions["1001-1-2"][1].answers == ("台北市",)
    assert questions["1001-2-1"][1].answers == ("台风",)
    assert questions["1002-1-1"][1].answers == ("维多利亚港",)
    assert questions["1002-1-1"][1].text == "香港著名的海港是哪里？"
    assert articles[0].id == "drcd_test/1001"


def test_windows_are_whole_sentences_within_the_limit_and_share_one_sentence() -> None:
    text = CHANGJIANG + HUANGHE
    windows = window_spans(text, 40)
    assert len(windows) > 3
    ends = {e for _, e in sentence_spans(text)}
    starts = {s for s, _ in sentence_spans(text)}
    for (s, e), (s2, e2) in itertools.pairwise(windows):
        assert e - s <= 40 and e2 - s2 <= 40
        assert s in starts and e in ends
        last = max(x for x in starts if x < e)
        # the next window starts at this one's last sentence, unless that sentence and the next do not fit together
        assert s2 == last or (s2 == e and min(y for y in ends if y > e) - last > 40)
    assert windows[0][0] == 0 and windows[-1][1] == len(text)
    assert window_spans("短句。", 40) == [(0, 3)]
    assert window_spans("  A sentence. Another one.  ", 15) == [(2, 13), (14, 26)]


def test_an_over_long_sentence_is_cut_at_commas() -> None:
    text = "甲" * 30 + "，" + "乙" * 30 + "。"
    windows = window_spans(text, 40)
    assert [text[s:e] for s, e in windows] == ["甲" * 30 + "，", "乙" * 30 + "。"]


def test_positives_point_at_their_answer_and_negatives_never_hold_it(raw: Path) -> None:
    data = build_dataset(raw, SMALL)
    answers = _answers(raw)
    examples = data.train + data.val
    kinds = {e.negative for e in examples}
    assert kinds >= {"none", "squad2_adversarial", *SYNTHETIC}, kinds
    for e in examples:
        key = e.id.rsplit("/", 1)[0]
        if e.answerable:
            assert e.context[e.answer_start : e.answer_start + len(e.answer_text)] == e.answer_text
            assert e.answer_text in answers[key] and len(e.context) <= (40 if e.lang == "zh" else 120)
        else:
            assert (e.answer_text, e.answer_start) == ("", -1)
            for answer in answers[key]:
                assert answer.lower() not in e.context.lower(), e
    zh = [e for e in examples if e.lang == "zh"]
    assert all("臺" not in e.context for e in zh)
    assert len({(e.question, e.context) for e in examples}) == len(examples)


def test_every_line_has_exactly_the_documented_fields(raw: Path, tmp_path: Path) -> None:
    write_dataset(build_dataset(raw, SMALL), tmp_path / "out")
    types = {
        "id": str,
        "question": str,
        "context": str,
        "answerable": bool,
        "answer_text": str,
        "answer_start": int,
        "source": str,
        "article": str,
        "negative": str,
        "lang": str,
    }
    lines = [json.loads(line) for name in ("train", "val") for line in (tmp_path / "out" / f"{name}.jsonl").open()]
    assert lines
    for line in lines:
        assert list(line) == list(types)
        assert all(type(line[k]) is t for k, t in types.items())
        assert line["source"] in {"cmrc_trial", "drcd_test", "squad2_dev"} and line["lang"] in {"zh", "en"}
        assert line["article"].startswith(line["source"] + "/")
        assert line["answerable"] == (line["negative"] == "none")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["examples"] == len(lines) == sum(stats["by_split"].values())


def test_articles_are_split_whole_and_no_validation_passage_is_seen_in_training(raw: Path) -> None:
    data = build_dataset(raw, SMALL)
    train_articles, val_articles = {e.article for e in data.train}, {e.article for e in data.val}
    assert train_articles and val_articles and not train_articles & val_articles
    assert {e.source for e in data.val} == {"cmrc_trial", "drcd_test", "squad2_dev"}
    assert not {e.context for e in data.train} & {e.context for e in data.val}


def test_the_same_seed_writes_the_same_files(raw: Path, tmp_path: Path) -> None:
    for out in ("a", "b"):
        write_dataset(build_dataset(raw, SMALL), tmp_path / out)
    for name in ("train.jsonl", "val.jsonl", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ids = [json.loads(line)["id"] for line in (tmp_path / "a" / "train.jsonl").open()]
    assert ids == sorted(ids)


def test_the_mix_sets_the_share_of_answerable_examples(raw: Path) -> None:
    data = build_dataset(raw, DataConfig(max_chars_zh=40, max_chars_en=120, mix=Mix(answerable_share=0.6, retrieved=0)))
    examples = data.train + data.val
    assert "retrieved" not in {e.negative for e in examples}
    mine = [e for e in examples if e.source == "cmrc_trial"]
    positives = sum(e.answerable for e in mine)
    assert len(mine) - positives == round(positives * 0.4 / 0.6)


def test_quotas_follow_the_weights_and_pass_on_what_a_kind_lacks() -> None:
    quotas = _quotas({"deleted_sentence": 10, "other_paragraph": 1, "wrong_type": 0, "retrieved": 10}, Mix(), 12)
    assert quotas["other_paragraph"] == 1 and quotas["wrong_type"] == 0
    assert quotas["deleted_sentence"] + quotas["retrieved"] == 11
    assert (
        sum(_quotas({"deleted_sentence": 2, "other_paragraph": 2, "wrong_type": 2, "retrieved": 2}, Mix(), 50).values())
        == 8
    )
    with pytest.raises(QAError, match="answerable_share"):
        Mix(answerable_share=1.5)


@pytest.mark.parametrize("name", ["cmrc2018_dev.json", "DRCD_dev.json", "DRCD_training.json"])
def test_held_out_files_are_refused_by_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(CMRC), encoding="utf-8")
    with pytest.raises(QAError, match="held out to measure the reader"):
        check_allowed(path)
    with pytest.raises(QAError, match="held out"):
        read_squad(path)
    with pytest.raises(QAError, match="held out"):
        load_articles(tmp_path / name.upper(), RAW_SOURCES[0])


def test_a_missing_raw_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(QAError, match=r"cmrc2018_trial\.json not found.*SOURCES\.md"):
        build_dataset(tmp_path)
