"""The index manifest: what an index holds and how it was built, as frozen, typed data.

`manifest.json` is read here and nowhere else: callers ask a `Manifest` object, they
never index into its JSON. `Manifest.from_json` validates every field and raises
`IndexCorruptError` naming the field and the fix, so a hand-edited or foreign file
never gets halfway into the engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar, get_args

from qa.errors import IndexCorruptError

FORMAT = "qa-index"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"

StoreKind = Literal["faiss", "milvus"]
Verdict = Literal["answered", "uncertain", "not_found"]
STORE_KINDS: tuple[str, ...] = get_args(StoreKind)

T = TypeVar("T")


class _Invalid(ValueError):
    """A manifest field of the wrong shape (turned into IndexCorruptError with the fix)."""


def _get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise _Invalid(f"{where}.{key} is missing" if where else f"{key} is missing")
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise _Invalid(f"{where}.{key} should be {getattr(kind, '__name__', kind)}, not {type(value).__name__}")
    return value


def _obj(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise _Invalid(f"{where} should be an object")
    return d


@dataclass(frozen=True, slots=True)
class DocumentEntry:
    """One indexed source file (path relative to the documents folder)."""

    file: str
    title: str
    sha256: str
    bytes: int
    mtime_ns: int
    passages: int
    meta: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "documents[]") -> DocumentEntry:
        d = _obj(d, where)
        meta = _obj(d.get("meta", {}), f"{where}.meta")
        return cls(
            _get(d, "file", str, where), _get(d, "title", str, where), _get(d, "sha256", str, where),
            _get(d, "bytes", int, where), _get(d, "mtime_ns", int, where), _get(d, "passages", int, where),
            {str(k): str(v) for k, v in meta.items()},
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The embedding model: its name, where it came from, and a probe embedding that identifies it."""

    name: str
    source: str
    dimension: int
    fingerprint: str
    probe: tuple[float, ...]
    backend: str = "torch"
    normalized: bool = True

    @classmethod
    def from_dict(cls, d: Any, where: str = "model") -> ModelInfo:
        d = _obj(d, where)
        probe = _get(d, "probe", list, where)
        if not all(isinstance(x, int | float) for x in probe):
            raise _Invalid(f"{where}.probe should be a list of numbers")
        return cls(
            _get(d, "name", str, where), _get(d, "source", str, where), _get(d, "dimension", int, where),
            _get(d, "fingerprint", str, where), tuple(float(x) for x in probe),
            str(d.get("backend", "torch")), bool(d.get("normalized", True)),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Where the passages, vectors and keywords live.

    `kind` "faiss": files in the index folder (`index` names the FAISS index type).
    `kind` "milvus": collections named `collection`_* at `uri` (a Milvus Lite `.db` file,
    relative to the index folder, or an `http://host:port` server); a token, if the server
    needs one, comes from the environment variable `token_env`, never from this file.
    """

    kind: StoreKind
    index: str
    vectors: int
    dimension: int
    uri: str | None = None
    collection: str | None = None
    token_env: str | None = None
    keywords: str = "bm25s"

    @classmethod
    def from_dict(cls, d: Any, where: str = "store") -> StoreInfo:
        d = _obj(d, where)
        kind = _get(d, "kind", str, where)
        if kind not in STORE_KINDS:
            raise _Invalid(f"{where}.kind is {kind!r}; this qa knows {', '.join(STORE_KINDS)}")
        opt = {k: d[k] for k in ("uri", "collection", "token_env") if d.get(k) is not None}
        for k, v in opt.items():
            if not isinstance(v, str):
                raise _Invalid(f"{where}.{k} should be a string")
        return cls(
            kind, _get(d, "index", str, where), _get(d, "vectors", int, where), _get(d, "dimension", int, where),
            keywords=str(d.get("keywords", "bm25s")), **opt,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Splitter:
    max_chars: int
    near_dup: float
    units: str = "passage+sentences"

    @classmethod
    def from_dict(cls, d: Any, where: str = "splitter") -> Splitter:
        d = _obj(d, where)
        return cls(_get(d, "max_chars", int, where), _get(d, "near_dup", float, where), str(d.get("units", "")))


@dataclass(frozen=True, slots=True)
class Calibration:
    """The "no answer" model: a logistic confidence over named features, and the policy.

    The top hit's confidence decides the verdict: "answered" from `confident` on,
    "uncertain" (可能相关) from `threshold` on, "not_found" below `threshold`. Without a
    band (`confident` None) there are two verdicts, split at `threshold`.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    confident: float | None = None
    fitted: bool = False
    fitted_on: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def verdict(self, confidence: float, threshold: float | None = None) -> Verdict:
        """The verdict for a top hit of this confidence (`threshold` overrides the fitted one)."""
        low = self.threshold if threshold is None else threshold
        if confidence < low:
            return "not_found"
        high = self.threshold if self.confident is None else self.confident
        return "answered" if confidence >= max(high, low) else "uncertain"

    @classmethod
    def from_dict(cls, d: Any, where: str = "calibration") -> Calibration:
        d = _obj(d, where)
        features, weights = _get(d, "features", list, where), _get(d, "weights", list, where)
        if len(features) != len(weights) or not all(isinstance(f, str) for f in features):
            raise _Invalid(f"{where}: features and weights should be lists of the same length")
        if not all(isinstance(w, int | float) for w in weights):
            raise _Invalid(f"{where}.weights should be numbers")
        confident = d.get("confident")
        if confident is not None and not isinstance(confident, int | float):
            raise _Invalid(f"{where}.confident should be a number or null")
        known = {f.name for f in fields(cls)}
        return cls(
            tuple(features), tuple(float(w) for w in weights), _get(d, "bias", float, where),
            _get(d, "threshold", float, where), None if confident is None else float(confident),
            bool(d.get("fitted", False)), d.get("fitted_on") if isinstance(d.get("fitted_on"), str) else None,
            {**_obj(d.get("details", {}), f"{where}.details"), **{k: v for k, v in d.items() if k not in known}},
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"], out["weights"], out["details"] = list(self.features), list(self.weights), dict(self.details)
        return out


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything an index records about itself (see the module docstring of qa.index)."""

    qa_version: str
    created: str
    docs_dir: str
    splitter: Splitter
    tokenizer: Mapping[str, Any]
    bm25: Mapping[str, Any]
    documents: tuple[DocumentEntry, ...]
    passage_count: int
    passages_before_dedup: int
    store: StoreInfo | None
    model: ModelInfo | None
    calibration: Calibration
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    skipped: Mapping[str, FileEntry] = field(default_factory=dict)  # unreadable files seen, so they are not "new"
    generation: int = 1
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def duplicates_collapsed(self) -> int:
        return self.passages_before_dedup - self.passage_count

    @property
    def dense(self) -> bool:
        """True when the index holds vectors (else it answers in keyword mode only)."""
        return self.model is not None

    def document(self, file: str) -> DocumentEntry | None:
        return next((d for d in self.documents if d.file == file), None)

    def params(self) -> dict[str, Any]:
        """What decides how text is split and tokenized: a change forces re-splitting."""
        return {"splitter": asdict(self.splitter), "tokenizer": dict(self.tokenizer), "bm25": dict(self.bm25)}

    def with_calibration(self, calibration: Calibration) -> Manifest:
        return replace(self, calibration=calibration)

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "format_version": self.format_version, "qa_version": self.qa_version,
            "created": self.created, "generation": self.generation, "docs_dir": self.docs_dir,
            "splitter": asdict(self.splitter), "tokenizer": dict(self.tokenizer), "bm25": dict(self.bm25),
            "documents": [{**asdict(d), "meta": dict(d.meta)} for d in self.documents],
            "passage_count": self.passage_count, "passages_before_dedup": self.passages_before_dedup,
            "duplicates_collapsed": self.duplicates_collapsed,
            "store": asdict(self.store) if self.store else None,
            "model": {**asdict(self.model), "probe": list(self.model.probe)} if self.model else None,
            "calibration": self.calibration.to_dict(),
            "files": {name: asdict(f) for name, f in sorted(self.files.items())},
            "skipped": {name: asdict(f) for name, f in sorted(self.skipped.items())},
        }  # fmt: skip

    def to_json(self) -> str:
        """The manifest as JSON, with a checksum of its own content (any altered byte is caught)."""
        d = self.to_dict()
        return json.dumps({**d, "checksum": _checksum(d)}, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str, *, where: str = MANIFEST) -> Manifest:
        """Parse and validate; every problem is an IndexCorruptError that says to rebuild."""
        fix = "Rebuild the index: qa index build"
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IndexCorruptError(f"{where} is not valid JSON ({exc}). {fix}") from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise IndexCorruptError(f"{where} is not a qa index manifest. {fix}")
        if d.get("format_version") != FORMAT_VERSION:
            raise IndexCorruptError(
                f"{where} has index format {d.get('format_version')}, this qa reads format {FORMAT_VERSION}. "
                f"{fix} --force"
            )
        if d.get("checksum") != _checksum({k: v for k, v in d.items() if k != "checksum"}):
            raise IndexCorruptError(f"{where} is altered (its checksum does not match its content). {fix} --force")
        try:
            return cls._from_dict(d)
        except _Invalid as exc:
            raise IndexCorruptError(f"{where} is malformed: {exc}. {fix} --force") from exc

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        files = _obj(d.get("files", {}), "files")
        return cls(
            qa_version=_get(d, "qa_version", str, ""), created=_get(d, "created", str, ""),
            docs_dir=_get(d, "docs_dir", str, ""), splitter=Splitter.from_dict(d.get("splitter")),
            tokenizer=dict(_obj(d.get("tokenizer"), "tokenizer")), bm25=dict(_obj(d.get("bm25"), "bm25")),
            documents=tuple(
                DocumentEntry.from_dict(x, f"documents[{i}]") for i, x in enumerate(_get(d, "documents", list, ""))
            ),
            passage_count=_get(d, "passage_count", int, ""),
            passages_before_dedup=_get(d, "passages_before_dedup", int, ""),
            store=StoreInfo.from_dict(d["store"]) if d.get("store") is not None else None,
            model=ModelInfo.from_dict(d["model"]) if d.get("model") is not None else None,
            calibration=Calibration.from_dict(d.get("calibration")),
            files={
                str(name): FileEntry(_get(_obj(f, f"files.{name}"), "sha256", str, f"files.{name}"),
                                     _get(f, "bytes", int, f"files.{name}"))
                for name, f in files.items()
            },
            skipped={
                str(name): FileEntry(_get(_obj(f, f"skipped.{name}"), "sha256", str, f"skipped.{name}"),
                                     _get(f, "bytes", int, f"skipped.{name}"))
                for name, f in _obj(d.get("skipped", {}), "skipped").items()
            },
            generation=int(d.get("generation", 1)),
        )  # fmt: skip


def _checksum(d: Mapping[str, Any]) -> str:
    canonical = json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
