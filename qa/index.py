"""Stage 4: build, save, load and update the on-disk index folder (e.g. `vectors/default/`).

The folder holds plain files only, each checksummed in `manifest.json`:

    manifest.json     format version, parameters, model, documents, calibration, checksums
    passages.jsonl    one passage per line: id, text, sources
    units.npy         int32 rows (passage, start, end): the passage and its sentences, embedded
    vectors.npy       float32 unit vectors (L2-normalized), the source of truth for updates
    dense.faiss       FAISS index over vectors.npy
    bm25/             bm25s arrays (.npy, loaded with allow_pickle=False) and JSON

A build writes a temporary folder beside the target, fsyncs it and renames it into
place, so a crash leaves the previous index (or, between the two renames, a backup
that `load_index` restores). Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa import DEFAULT_DOCS, DEFAULT_INDEX, __version__, calibration
from qa.documents import Document, iter_files, read_documents
from qa.embed import Encoder, SentenceTransformerEncoder, configured_model, fingerprint, probe_vector
from qa.errors import IndexCorruptError, IndexMissingError, QAError
from qa.lexical import BM25_PARAMS, STOPWORDS, LexicalIndex
from qa.split import (
    DEFAULT_MAX_CHARS,
    DEFAULT_NEAR_DUP,
    Passage,
    Source,
    collapse_duplicates,
    split_document,
    split_sentences,
)
from qa.vectors import FaissStore

log = logging.getLogger(__name__)

FORMAT = "qa-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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


@dataclass
class LoadedIndex:
    """An index folder read into memory and verified."""

    folder: Path
    manifest: dict[str, Any]
    passages: list[Passage]
    lexical: LexicalIndex
    units: np.ndarray | None = None
    vectors: np.ndarray | None = None
    store: FaissStore | None = None
    by_id: dict[str, int] = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return self.store is not None


# ---------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a JSON file by temp file + fsync + rename (used for manifest updates)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _backup_name(target: Path) -> Path:
    return target.parent / f".{target.name}.previous"


def _recover(target: Path) -> None:
    """Finish a swap that a crash interrupted: put the previous index back in place."""
    backup = _backup_name(target)
    if not target.exists() and (backup / MANIFEST).exists():
        log.warning("Restoring the previous index %s from %s (a build was interrupted).", target, backup)
        os.replace(backup, target)


def _swap_into_place(tmp: Path, target: Path) -> None:
    backup = _backup_name(target)
    if backup.exists():
        shutil.rmtree(backup)
    if target.exists():
        os.replace(target, backup)
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if backup.exists():
        shutil.rmtree(backup)


def _check_target(target: Path) -> None:
    """Refuse to replace a folder that is not a qa index: it belongs to the user."""
    if not target.exists():
        return
    if not target.is_dir():
        raise QAError(f"{target} exists and is not a folder. Choose another --index path.")
    if any(target.iterdir()) and not (target / MANIFEST).exists():
        raise QAError(
            f"{target} is not empty and holds no qa index ({MANIFEST} missing); it is left untouched. "
            f"Choose another --index path, or empty that folder yourself."
        )


# ---------------------------------------------------------------- building


def sentence_units(passages: list[Passage]) -> np.ndarray:
    """Rows (passage, start, end): each passage whole, plus each of its sentences if it has several.

    Sentence vectors give fine-grained evidence (and help cross-lingual questions); a
    passage's dense score is the best of its units.
    """
    rows: list[tuple[int, int, int]] = []
    for i, p in enumerate(passages):
        rows.append((i, 0, len(p.text)))
        spans = split_sentences(p.text)
        if len(spans) > 1:
            rows.extend((i, s, e) for s, e in spans if e - s >= 4)
    return np.asarray(rows, dtype=np.int32).reshape(-1, 3)


def unit_texts(passages: list[Passage], units: np.ndarray) -> list[str]:
    return [passages[p].text[s:e] for p, s, e in units.tolist()]


def _passage_json(p: Passage) -> str:
    sources = [
        {"file": s.file, "title": s.title, "paragraph": s.paragraph, "span": [s.start, s.end], "order": s.order,
         "page": s.page}
        for s in p.sources
    ]  # fmt: skip
    return json.dumps({"id": p.id, "text": p.text, "sources": sources}, ensure_ascii=False)


def _passage_from_json(line: str) -> Passage:
    d = json.loads(line)
    sources = tuple(
        Source(s["file"], s["title"], int(s["paragraph"]), int(s["span"][0]), int(s["span"][1]), int(s["order"]),
               s.get("page"))  # older indexes have no page
        for s in d["sources"]
    )  # fmt: skip
    return Passage(d["id"], d["text"], sources)


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


def _document_entry(doc: Document, root: Path, passages: int) -> dict[str, Any]:
    stat = (root / doc.path).stat()
    return {
        "file": doc.path,
        "title": doc.title,
        "sha256": doc.sha256,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "passages": passages,
        "meta": dict(doc.meta),
    }


def _previous_vectors(target: Path, model_entry: dict[str, Any]) -> tuple[dict[str, np.ndarray], str | None]:
    """Unit vectors of the existing index, keyed by unit text, when they can be reused."""
    if not (target / MANIFEST).exists():
        return {}, "no index yet"
    try:
        old = load_index(target)
    except QAError as exc:
        return {}, f"the existing index cannot be read ({exc})"
    old_model = old.manifest.get("model")
    if not old_model:
        return {}, "the existing index has no vectors"
    if old_model["name"] != model_entry["name"] or old_model["fingerprint"] != model_entry["fingerprint"]:
        return {}, f"the model changed ({old_model['name']} -> {model_entry['name']})"
    assert old.units is not None and old.vectors is not None
    texts = unit_texts(old.passages, old.units)
    return dict(zip(texts, old.vectors, strict=True)), None


def build_index(
    docs_dir: str | Path = DEFAULT_DOCS,
    index_dir: str | Path = DEFAULT_INDEX,
    *,
    model: str | None = None,
    encoder: Encoder | None = None,
    dense: bool = True,
    max_chars: int = DEFAULT_MAX_CHARS,
    near_dup: float = DEFAULT_NEAR_DUP,
    force: bool = False,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build (or update) the index of `docs_dir` in `index_dir`.

    Over an existing index, only text that is new is embedded; a change of model or of the
    splitter's parameters forces a full rebuild, and the report says why.
    """
    started = time.perf_counter()
    say = on_stage or (lambda _msg: None)
    root, target = Path(docs_dir), Path(index_dir)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        _recover(target)
        say(f"Reading documents in {root}")
        skipped: list[str] = []
        docs = read_documents(root, skipped=skipped)
        params = _params(max_chars, near_dup)
        old = _read_manifest_quietly(target)
        if not force and old and _unchanged(target, old, docs, params, root, dense, model, encoder):
            return BuildReport(
                str(target), len(docs), old["passage_count"], old["duplicates_collapsed"], old.get("unit_count", 0),
                0, 0, time.perf_counter() - started, None, True, tuple(skipped),
            )  # fmt: skip
        say("Splitting into passages")
        per_doc = [split_document(d, max_chars) for d in docs]
        all_passages = [p for ps in per_doc for p in ps]
        passages = collapse_duplicates(all_passages, near_dup)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "qa_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **params,
            "docs_dir": str(root.resolve()),
            "documents": [_document_entry(d, root, len(ps)) for d, ps in zip(docs, per_doc, strict=True)],
            "passage_count": len(passages),
            "passages_before_dedup": len(all_passages),
            "duplicates_collapsed": len(all_passages) - len(passages),
            "model": None,
            "vector_store": None,
        }
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)
        embedded = reused = units = 0
        reason: str | None = None
        try:
            say("Indexing keywords (jieba + BM25)")
            with (tmp / "passages.jsonl").open("w", encoding="utf-8") as f:
                f.writelines(_passage_json(p) + "\n" for p in passages)
            LexicalIndex.build([p.text for p in passages]).save(tmp / "bm25")  # always rebuilt: it is cheap
            if dense:
                enc = encoder or SentenceTransformerEncoder(model)
                say(f"Loading model {enc.name}")
                manifest["model"] = _model_entry(enc)
                previous, reason = _reusable_vectors(target, old, manifest, force)
                manifest["vector_store"], embedded, reused = _write_vectors(tmp, passages, enc, previous, progress, say)
                units = manifest["unit_count"] = manifest["vector_store"]["count"]
            manifest["calibration"] = calibration.for_manifest(old, manifest["model"])
            manifest["files"] = {
                p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            with (tmp / MANIFEST).open("w", encoding="utf-8") as f:
                json.dump(manifest, f, ensure_ascii=False, indent=2)
            _fsync_tree(tmp)
            _swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return BuildReport(
        str(target), len(docs), len(passages), manifest["duplicates_collapsed"], units,
        embedded, reused, time.perf_counter() - started, reason, False, tuple(skipped),
    )  # fmt: skip


def _model_entry(enc: Encoder) -> dict[str, Any]:
    """What the manifest records of the model; the probe embedding identifies its behaviour."""
    probe = probe_vector(enc)
    return {
        "name": enc.name,
        "source": enc.source,
        "dimension": enc.dimension,
        "fingerprint": fingerprint(probe),
        "probe": [round(float(x), 6) for x in probe],
        "normalized": True,
    }


def _reusable_vectors(
    target: Path, old: dict[str, Any] | None, manifest: dict[str, Any], force: bool
) -> tuple[dict[str, np.ndarray], str | None]:
    """Vectors of the existing index that stay valid, keyed by text, and why none are, if so."""
    if force:
        return {}, "--force"
    if old and old.get("splitter") != manifest["splitter"]:
        return {}, "the splitter parameters changed"
    return _previous_vectors(target, manifest["model"])


def _write_vectors(
    folder: Path, passages: list[Passage], enc: Encoder, previous: dict[str, np.ndarray],
    progress: bool, say: Callable[[str], None],
) -> tuple[dict[str, Any], int, int]:  # fmt: skip
    """Embed the new units, write units.npy, vectors.npy and dense.faiss; returns the
    manifest's vector store entry and how many texts were embedded and reused."""
    units = sentence_units(passages)
    texts = unit_texts(passages, units)
    unique = set(texts)
    todo = sorted(unique - previous.keys())
    say(f"Embedding {len(todo)} new text units ({len(unique) - len(todo)} reused)")
    fresh = dict(zip(todo, enc.encode_passages(todo, progress=progress), strict=True)) if todo else {}
    vectors = np.stack([fresh[t] if t in fresh else previous[t] for t in texts]).astype(np.float32)
    np.save(folder / "units.npy", units, allow_pickle=False)
    np.save(folder / "vectors.npy", vectors, allow_pickle=False)
    store = FaissStore.build(vectors)
    store.save(folder / "dense.faiss")
    entry = {"kind": store.kind, "count": len(store), "dimension": store.dimension}
    return entry, len(todo), len(unique) - len(todo)


def _read_manifest_quietly(target: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(target)
    except QAError:
        return None


def _unchanged(
    folder: Path, manifest: dict[str, Any], docs: list[Document], params: dict[str, Any], root: Path,
    dense: bool, model: str | None, encoder: Encoder | None,
) -> bool:  # fmt: skip
    """True when the index already reflects these documents, parameters and model."""
    if any(manifest.get(k) != v for k, v in params.items()):
        return False
    if manifest.get("docs_dir") != str(root.resolve()):
        return False
    old = {d["file"]: d["sha256"] for d in manifest.get("documents", [])}
    if old != {d.path: d.sha256 for d in docs}:
        return False
    has_model = manifest.get("model") is not None
    if dense != has_model:
        return False
    if dense:
        wanted = encoder.name if encoder is not None else (model or configured_model())
        if manifest["model"]["name"] != wanted:
            return False
    try:
        verify_files(folder, manifest)
    except QAError:
        return False
    return True


# ---------------------------------------------------------------- loading


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """The manifest of an index folder, checked for format and version."""
    folder = Path(index_dir)
    _recover(folder)
    path = folder / MANIFEST
    if not folder.exists() or not path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise IndexCorruptError(
                f"{path} is missing, so {folder} is not a usable index. Rebuild it: qa index build --index {folder}"
            )
        raise IndexMissingError(f"No index in {folder}. Build it first: qa index build --index {folder}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(
            f"{path} is not valid JSON ({exc}). Rebuild the index: qa index build --index {folder}"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexCorruptError(
            f"{path} is not a qa index manifest. Rebuild the index: qa index build --index {folder}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{folder} has index format {manifest.get('format_version')}, this qa reads format {FORMAT_VERSION}. "
            f"Rebuild it: qa index build --index {folder}"
        )
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is present, of the right size and checksum."""
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        fix = f"Rebuild the index: qa index build --index {folder}"
        if not path.is_file():
            raise IndexCorruptError(f"Index file {path} is missing. {fix}")
        if path.stat().st_size != entry["bytes"]:
            raise IndexCorruptError(
                f"Index file {path} is truncated or altered (size {path.stat().st_size}, expected {entry['bytes']}). {fix}"
            )
        if sha256_file(path) != entry["sha256"]:
            raise IndexCorruptError(f"Index file {path} is altered (checksum mismatch). {fix}")


def load_index(index_dir: str | Path) -> LoadedIndex:
    """Read and verify an index folder."""
    folder = Path(index_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    fix = f"Rebuild the index: qa index build --index {folder}"
    try:
        with (folder / "passages.jsonl").open(encoding="utf-8") as f:
            passages = [_passage_from_json(line) for line in f if line.strip()]
        lexical = LexicalIndex.load(folder / "bm25")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise IndexCorruptError(f"Index in {folder} cannot be read ({exc}). {fix}") from exc
    if len(passages) != manifest["passage_count"]:
        raise IndexCorruptError(
            f"{folder / 'passages.jsonl'} holds {len(passages)} passages, the manifest says {manifest['passage_count']}. {fix}"
        )
    loaded = LoadedIndex(folder, manifest, passages, lexical, by_id={p.id: i for i, p in enumerate(passages)})
    if manifest.get("model"):
        try:
            loaded.units = np.load(folder / "units.npy", allow_pickle=False)
            loaded.vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"Vectors in {folder} cannot be read ({exc}). {fix}") from exc
        store = manifest["vector_store"]
        loaded.store = FaissStore.load(
            folder / "dense.faiss", kind=store["kind"], dimension=store["dimension"], count=store["count"]
        )
        if loaded.vectors.shape != (store["count"], store["dimension"]) or len(loaded.units) != store["count"]:
            raise IndexCorruptError(f"Vectors in {folder} do not match the manifest. {fix}")
    return loaded


def stale_documents(manifest: dict[str, Any]) -> list[str]:
    """Differences between the documents on disk and those the index was built from."""
    root = Path(manifest.get("docs_dir", ""))
    if not root.is_dir():
        return [f"the documents folder {root} no longer exists"]
    indexed = {d["file"]: d for d in manifest.get("documents", [])}
    on_disk = {p.relative_to(root).as_posix(): p for p in iter_files(root)}
    changes = [f"new: {f}" for f in sorted(set(on_disk) - set(indexed))]
    changes += [f"deleted: {f}" for f in sorted(set(indexed) - set(on_disk))]
    for f in sorted(set(indexed) & set(on_disk)):
        stat, entry = on_disk[f].stat(), indexed[f]
        if stat.st_size == entry["bytes"] and stat.st_mtime_ns == entry.get("mtime_ns"):
            continue  # untouched since the build: no need to read it
        if stat.st_size != entry["bytes"] or sha256_file(on_disk[f]) != entry["sha256"]:
            changes.append(f"changed: {f}")
    return changes
