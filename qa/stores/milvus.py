"""The Milvus stores: passages, their sentence units with vectors, and keywords in Milvus collections.

One index is four collections named after `StoreInfo.collection` (say `qa_default`):

    qa_default_passages   passage_id (key), text, sources (JSON)
    qa_default_places     place (key: a hash of a file and a position in it), passage_id; for
                          neighbours, by key
    qa_default_units      unit_id "passage:start:end" (key), passage_id, start, end, vector
                          (inner product of unit vectors = cosine)
    qa_default_keywords   passage_id (key), its jieba words and their pinyin as whitespace-joined
                          folded tokens (qa.lexical), and three Milvus BM25 functions over them
    qa_default_meta       the manifest in chunks of at most 60 KB, its generation (row "head"),
                          and a "dirty" row while an update is under way

The same calls run against a Milvus Lite file (`INDEX/milvus.db`, one process at a time)
and a server (`http://host:19530`: Milvus Lite's server mode, Standalone, Distributed).

Scores mean what they mean in qa.stores.local. Keywords: Milvus's BM25 function computes
Lucene BM25 from the same tokens with k1 1.2, b 0.75, and keeps the document count, the
document frequencies and the average length up to date across upserts and deletes; its
score carries a factor k1 + 1 that bm25s's Lucene variant leaves out, divided out here.
The idf of a token is the score of a single-token query on a third BM25 index over the
words with k1 0 and b 0 (its score is then the idf alone), so it always agrees with the
scores. Fusion, confidence and highlights stay in qa.search, on the client.

Updates are in place. An update writes units and keywords first and passages last, so a
passage that is in the passages collection has its units and keywords; the manifest (and
its generation, which other processes poll) is written after everything else. A build marks
the store dirty before its first write and the manifest write clears the mark; a build that
finds the mark repairs the collections by comparing their passage ids.

pymilvus is imported on first use: `qa` works without it (`pip install -e '.[milvus]'`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import numpy as np

from qa.cache import cache_root, write_atomic
from qa.errors import IndexCorruptError, IndexMismatchError, QAError, StoreError
from qa.lexical import BM25_PARAMS, pinyin_terms, tokenize
from qa.manifest import MANIFEST, Manifest, StoreInfo
from qa.split import Passage, Source
from qa.stores import Neighbours, ScoredUnit, Stores, Unit, check_query
from qa.stores.rows import source_from_dict, source_to_dict

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[milvus]'"
DEFAULT_DB = "milvus.db"  # in the index folder
KEYWORDS_KIND = "milvus-bm25"
# Rows per insert: 1,000 was the fastest per row on Milvus Lite (2,000 was 1.4-1.9x slower,
# one batch of 5,000 took 75 s); see docs/milvus.md.
BATCH = 1000
UNIT_QUERY_PASSAGES = 200  # passages per unit query: their units stay under Milvus's 16,384-row window
MAX_UNITS_PER_PASSAGE = 64  # a passage and its sentences (a handful); more fill the limit, and are fetched instead
MAX_LIMIT = 16384  # Milvus's largest top-k and query window
MAX_VARCHAR_BYTES = 65535  # Milvus counts VARCHAR length in UTF-8 bytes (Lite does not check it; Standalone does)
MAX_JSON_BYTES = 65536
MANIFEST_CHUNK_BYTES = 60_000
TIE_MARGIN = 16  # extra keyword hits fetched so that ties at the k-th score are broken like bm25s
READ_TIMEOUT = 30  # seconds (int: pymilvus retries within it; without one it retries 75 times)
WRITE_TIMEOUT = 300
EMPTY = "\u2205"  # the token bm25s gives a passage without words: the same document lengths here
K1, B = cast(float, BM25_PARAMS["k1"]), cast(float, BM25_PARAMS["b"])  # Lucene, as bm25s
K1_PLUS_1 = K1 + 1.0
# Vector index: "auto" is FLAT (exact) on a Lite file and HNSW on a server, falling back to FLAT
# when the server is Milvus Lite (its local mode builds no HNSW). $QA_MILVUS_INDEX overrides it.
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")
HNSW_BUILD = {"M": 16, "efConstruction": 200}
HNSW_EF = 1024  # FAISS HNSW needs 256 for recall@10 0.94 at 400k e5 vectors; a server gets more; at least the limit
IVF_NLIST, IVF_NPROBE = 1024, 32
_SERVER = re.compile(r"^(https?|tcp|grpc|unix)://", re.IGNORECASE)
_DB_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,36}$")  # milvus_lite's rule for the file name
_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_ASCII_SPACE = str.maketrans({c: "\u2423" for c in " \t\n\r\v\f"})  # Milvus's whitespace tokenizer splits there

T = TypeVar("T")


# ---------------------------------------------------------------- pymilvus, lazily


def _pymilvus() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus_lite imports pkg_resources, which warns
            import pymilvus
    except ImportError as exc:
        raise QAError(
            f"The Milvus store needs pymilvus and milvus-lite, which are not installed ({exc}). Install them: {INSTALL}"
        ) from exc
    logging.getLogger("pymilvus").setLevel(logging.ERROR)  # iterator and retry chatter
    return pymilvus


def available() -> bool:
    """True when pymilvus (and so this store) can be used."""
    try:
        _pymilvus()
    except QAError:
        return False
    return True


# ---------------------------------------------------------------- where


def is_server(uri: str) -> bool:
    return bool(_SERVER.match(uri))


def _check_db_path(path: Path) -> None:
    if path.suffix != ".db":
        raise QAError(f"--uri {path}: a Milvus Lite file name ends in .db; a server is http://host:19530.")
    if not _DB_NAME.match(path.name):
        raise QAError(
            f"--uri {path}: Milvus Lite accepts file names of at most 36 letters, digits, '.', '-' and '_'. "
            f"Choose another name, e.g. {DEFAULT_DB}."
        )


def store_info(uri: str | None, token_env: str | None, folder: str | Path) -> StoreInfo:
    """Where a new Milvus index lives: `uri` is a Milvus Lite file (default INDEX/milvus.db,
    recorded relative to the index folder when inside it) or a server URL; a token is read
    from the environment variable `token_env` when connecting, never written down. The
    collections are named after the index folder (qa_<folder name>) or $QA_MILVUS_COLLECTION."""
    folder = Path(folder)
    if uri is None:
        stored = DEFAULT_DB
    elif is_server(uri):
        stored = uri.rstrip("/")
    else:
        path = Path(uri).expanduser().resolve()
        _check_db_path(path)
        try:
            stored = path.relative_to(folder.resolve()).as_posix()
        except ValueError:
            stored = str(path)
    if token_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
        raise QAError(f"--token-env {token_env!r} is not an environment variable name (e.g. MILVUS_TOKEN).")
    collection = (
        os.environ.get("QA_MILVUS_COLLECTION") or "qa_" + re.sub(r"[^A-Za-z0-9_]", "_", folder.resolve().name)[:64]
    )
    if not _COLLECTION.match(collection):
        raise QAError(
            f"{collection!r} is not a Milvus collection name (letters, digits and '_', not starting with a digit). "
            f"Set QA_MILVUS_COLLECTION to one."
        )
    return StoreInfo("milvus", "milvus", 0, 0, uri=stored, collection=collection, token_env=token_env,
                     keywords=KEYWORDS_KIND)  # fmt: skip


def resolve_uri(info: StoreInfo, folder: str | Path) -> str:
    """The URL, or the absolute path of the Lite file (a relative one is in the index folder)."""
    if not info.uri:
        raise IndexCorruptError(f"The manifest of {folder} names no Milvus uri. Rebuild: qa index build --store milvus")
    if is_server(info.uri):
        return info.uri
    path = Path(info.uri).expanduser()
    return str(path if path.is_absolute() else Path(folder).resolve() / path)


def _token(info: StoreInfo) -> str:
    if not info.token_env:
        return ""
    value = os.environ.get(info.token_env)
    if not value:
        raise StoreError(
            f"The Milvus server at {info.uri} takes its token from ${info.token_env}, which is not set. "
            f"Export it (e.g. export {info.token_env}=user:password) and try again."
        )
    return value


def _hold_file_lock(path: Path, what: str) -> TextIO:
    """An exclusive lock of our own on `path` (milvus_lite's own lock file can be removed by a
    failed second opener: see docs/milvus.md), held until the file is closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise StoreError(
            f"{what} is in use by {holder}: a Milvus Lite file serves one process at a time. Stop that "
            f"process, or serve the file to several processes over a port (docs/milvus.md, 'Several servers')."
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()}\n")
    f.flush()
    return f


def _lite_lock_path(db: Path) -> Path:
    return db.parent / f".{db.name}.qa.lock"


# ---------------------------------------------------------------- one client per (uri, token)


class Connection:
    """One MilvusClient for a uri and token, shared by every store of this process (the chat
    updates the index in the process that searches it, and a Lite file admits one process)."""

    def __init__(self, uri: str, token: str) -> None:
        pm = _pymilvus()
        self.uri = uri
        self.local = not is_server(uri)
        self._lock: TextIO | None = None
        self._loaded: set[str] = set()
        self._error: type[Exception] = pm.exceptions.MilvusException
        self.consistency = os.environ.get("QA_MILVUS_CONSISTENCY", "Strong")
        if self.local:
            self._lock = _hold_file_lock(_lite_lock_path(Path(uri)), uri)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.client = pm.MilvusClient(uri=uri, token=token, timeout=READ_TIMEOUT)
        except Exception as exc:
            self._release()
            raise StoreError(
                f"Milvus at {uri} cannot be opened ({_message(exc)}). "
                + (
                    "Check that its folder is writable."
                    if self.local
                    else "Check --uri, the token, and that the server runs."
                )
            ) from exc

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """client.method(...), with a timeout, and Milvus's errors as StoreError."""
        kwargs.setdefault("timeout", READ_TIMEOUT)
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except self._error as exc:
            raise StoreError(f"Milvus at {self.uri}: {method} failed ({_message(exc)}).") from exc

    def read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A read at the configured consistency ($QA_MILVUS_CONSISTENCY, default Strong)."""
        kwargs.setdefault("consistency_level", self.consistency)
        return self(method, *args, **kwargs)

    def write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", WRITE_TIMEOUT)
        return self(method, *args, **kwargs)

    def count(self, name: str) -> int:
        rows = self.read("query", name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def rows(self, name: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row of a collection, a batch at a time."""
        it = self("query_iterator", name, batch_size=BATCH, filter="", output_fields=fields,
                  consistency_level=self.consistency)  # fmt: skip
        try:
            while True:
                try:
                    batch = it.next()
                except self._error as exc:
                    raise StoreError(f"Milvus at {self.uri}: reading {name} failed ({_message(exc)}).") from exc
                if not batch:
                    return
                yield from batch
        finally:
            it.close()

    def has(self, name: str) -> bool:
        return bool(self("has_collection", name))

    def ensure_loaded(self, name: str) -> None:
        if name in self._loaded:
            return
        state = self("get_load_state", name)
        if "Loaded" not in str(state.get("state") if isinstance(state, dict) else state):
            self.write("load_collection", name)
        self._loaded.add(name)

    def drop(self, name: str) -> None:
        if self.has(name):
            self.write("drop_collection", name)
        self._loaded.discard(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.local:
            with contextlib.suppress(Exception):
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0][:300]


_connections: dict[tuple[str, str], Connection] = {}
_connections_lock = threading.Lock()


def connect(info: StoreInfo, folder: str | Path) -> Connection:
    """This process's connection to the store of `info` (opened on first use)."""
    uri, token = resolve_uri(info, folder), _token(info)
    key = (uri, hashlib.sha256(token.encode()).hexdigest())
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = Connection(uri, token)
        return conn


def close(info: StoreInfo, folder: str | Path) -> None:
    """Close this process's connection to the store of `info` (a Lite file is then free for
    another process); the next use opens it again."""
    uri = resolve_uri(info, folder)
    with _connections_lock:
        for key in [k for k in _connections if k[0] == uri]:
            _connections.pop(key).close()


def close_all() -> None:
    with _connections_lock:
        while _connections:
            _connections.popitem()[1].close()


# ---------------------------------------------------------------- writers


class _WriterLock:
    """Re-entrant in this process (the chat's upload builds while holding it), exclusive
    between processes on this machine (a lock file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.file: TextIO | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.rlock:
            if self.depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                f = self.path.open("a", encoding="utf-8")
                fcntl.flock(f, fcntl.LOCK_EX)  # another writer on this machine finishes first
                self.file = f
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.file is not None:
                    self.file.close()
                    self.file = None


_writers: dict[Path, _WriterLock] = {}


def writer_lock(info: StoreInfo, folder: str | Path) -> contextlib.AbstractContextManager[None]:
    """Held while an index on this store is written. Milvus has no transactions, so one writer
    at a time: the lock covers the processes of one machine (a file beside the Lite file, or
    in the cache folder for a server); writers on several machines must take turns themselves."""
    uri = resolve_uri(info, folder)
    if is_server(uri):
        digest = hashlib.sha256(f"{uri}|{info.collection}".encode()).hexdigest()[:16]
        path = cache_root() / "milvus" / f"{digest}.lock"
    else:
        db = Path(uri)
        path = db.parent / f".{db.name}.qa-writer.lock"
    with _connections_lock:
        lock = _writers.setdefault(path, _WriterLock(path))
    return lock.hold()


# ---------------------------------------------------------------- rows


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ids_expr(field: str, ids: Iterable[str]) -> str:
    return f"{field} in {json.dumps(list(ids), ensure_ascii=False)}"


def _place(file: str, order: int) -> str:
    """A fixed-size key for "position `order` in `file`" (no file name in a filter expression)."""
    return hashlib.blake2b(f"{file}\x00{order}".encode(), digest_size=8).hexdigest()


def _utf8(value: str) -> int:
    return len(value.encode("utf-8"))


def _passage_row(p: Passage) -> dict[str, Any]:
    sources = [source_to_dict(s) for s in p.sources]  # with the page: a PDF citation keeps it
    if _utf8(p.text) > MAX_VARCHAR_BYTES:
        raise StoreError(
            f"Passage {p.id} of {p.source.file} is {_utf8(p.text)} bytes of UTF-8, over Milvus's VARCHAR limit "
            f"of {MAX_VARCHAR_BYTES}. Build with a smaller --max-chars, or keep this index on FAISS."
        )
    size = _utf8(json.dumps(sources, ensure_ascii=False))
    if size > MAX_JSON_BYTES:
        raise StoreError(
            f"Passage {p.id} stands in {len(p.sources)} places ({size} bytes of sources), over Milvus's JSON "
            f"limit of {MAX_JSON_BYTES} bytes. Remove the duplicated documents, or keep this index on FAISS."
        )
    return {"passage_id": p.id, "text": p.text, "sources": sources, "dummy": [1.0, 0.0]}


def _passage(row: dict[str, Any]) -> Passage:
    return Passage(str(row["passage_id"]), str(row["text"]), tuple(source_from_dict(s) for s in row["sources"]))


def _reading_order(p: Passage) -> tuple[str, int]:
    return (p.source.file, p.source.order)


def _terms(tokens: Sequence[str]) -> str:
    """Tokens as Milvus's whitespace analyzer will split them back (spaces inside a token kept apart)."""
    return " ".join(t.translate(_ASCII_SPACE) for t in tokens)


# ---------------------------------------------------------------- passages


class MilvusPassageStore:
    """Passages by id, with their provenance; a second collection maps each place (a file and
    a position in it) to the passage standing there, for neighbours.

    (Not an ARRAY field of places: with one, pymilvus 2.5 fails on every query that finds
    nothing, measured against Milvus Lite 2.5.1.)"""

    def __init__(self, conn: Connection, name: str, places: str) -> None:
        self._conn = conn
        self.name = name
        self.places = places

    def __len__(self) -> int:
        return self._conn.count(self.name)

    def ids(self) -> set[str]:
        return {str(r["passage_id"]) for r in self._conn.rows(self.name, ["passage_id"])}

    def get(self, ids: Sequence[str]) -> list[Passage]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Passage] = {}
        for batch in _batches(wanted, BATCH):
            rows = self._conn.read("get", self.name, ids=list(batch), output_fields=["passage_id", "text", "sources"])
            found.update((str(r["passage_id"]), _passage(r)) for r in rows)
        return [found[i] for i in ids if i in found]

    def __iter__(self) -> Iterator[Passage]:
        rows = self._conn.rows(self.name, ["passage_id", "text", "sources"])
        return iter(sorted((_passage(r) for r in rows), key=_reading_order))

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        return self.neighbours_of([source])[(source.file, source.order)]

    def neighbours_of(self, sources: Sequence[Source]) -> dict[tuple[str, int], Neighbours]:
        """Two round trips for all of them: the places around each, then their passages."""
        around = {(s.file, s.order): (_place(s.file, s.order - 1), _place(s.file, s.order + 1)) for s in sources}
        wanted = sorted({place for pair in around.values() for place in pair})
        at: dict[str, str] = {}
        for batch in _batches(wanted, BATCH):
            rows = self._conn.read("get", self.places, ids=list(batch), output_fields=["passage_id"])
            at.update((r["place"], str(r["passage_id"])) for r in rows)
        found = {p.id: p for p in self.get(sorted(set(at.values())))}
        return {key: (found.get(at.get(b, "")), found.get(at.get(a, ""))) for key, (b, a) in around.items()}

    def upsert(self, passages: Sequence[Passage]) -> None:
        latest = {p.id: p for p in passages}
        rows = [_passage_row(p) for p in latest.values()]  # all checked before the first write
        places = {_place(s.file, s.order): p.id for p in passages for s in p.sources}
        self._delete_places(latest)  # a passage that moved leaves its old places
        for batch in _batches([{"place": k, "passage_id": v, "dummy": [1.0, 0.0]} for k, v in places.items()], BATCH):
            self._conn.write("upsert", self.places, list(batch))
        for batch in _batches(rows, BATCH):
            self._conn.write("upsert", self.name, list(batch))

    def delete(self, ids: Collection[str]) -> None:
        for batch in _batches(sorted(set(ids)), BATCH):
            self._conn.write("delete", self.name, ids=list(batch))
        self._delete_places(ids)

    def _delete_places(self, ids: Collection[str]) -> None:
        for batch in _batches(sorted(set(ids)), BATCH):
            self._conn.write("delete", self.places, filter=_ids_expr("passage_id", batch))

    def reindex_places(self) -> None:
        """Map every place again from the passages (after an interrupted update)."""
        self._conn.drop(self.places)
        _create_places(self._conn, self.places)
        rows = {_place(s.file, s.order): str(r["passage_id"]) for r in self._conn.rows(self.name, ["passage_id", "sources"])
                for s in _passage({**r, "text": ""}).sources}  # fmt: skip
        for batch in _batches([{"place": k, "passage_id": v, "dummy": [1.0, 0.0]} for k, v in rows.items()], BATCH):
            self._conn.write("upsert", self.places, list(batch))


# ---------------------------------------------------------------- vectors


class MilvusVectorStore:
    """Unit vectors (a passage whole and each of its sentences), searched by inner product.

    `search` asks Milvus for the best units and keeps each passage's best; `unit_scores` gives
    the cosine of every unit of the candidates, exactly (see `_exact_scores`), as the FAISS store.
    """

    def __init__(self, conn: Connection, name: str, dimension: int, index_type: str) -> None:
        self._conn = conn
        self.name = name
        self._dimension = dimension
        self.index_type = index_type

    @property
    def kind(self) -> str:
        return f"milvus-{self.index_type.lower().replace('_', '-')}-ip"

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return self._conn.count(self.name)

    def upsert(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self._dimension)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        last = {f"{u.passage}:{u.start}:{u.end}": i for i, u in enumerate(units)}  # a unit given twice: the last
        rows = sorted(last.values())
        self.delete({u.passage for u in units})
        for batch in _batches(rows, BATCH):  # lists of floats a batch at a time: 100k units would take GBs
            self._conn.write("insert", self.name, [
                {"unit_id": f"{units[i].passage}:{units[i].start}:{units[i].end}", "passage_id": units[i].passage,
                 "start": units[i].start, "end": units[i].end, "vector": vectors[i].tolist()}
                for i in batch
            ])  # fmt: skip

    def delete(self, passage_ids: Collection[str]) -> None:
        for batch in _batches(sorted(set(passage_ids)), BATCH):
            self._conn.write("delete", self.name, filter=_ids_expr("passage_id", batch))

    def _check(self, query: np.ndarray) -> np.ndarray:
        return check_query(query, self._dimension)

    def _search_params(self, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index_type == "HNSW":
            params = {"ef": max(limit, HNSW_EF)}
        elif self.index_type == "IVF_FLAT":
            params = {"nprobe": IVF_NPROBE}
        return {"metric_type": "IP", "params": params}

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k passages with the best units, each scored by its best unit: the best 4k units
        (at least 64), widened while they name fewer than k passages. Not a grouping search
        (`group_by_field`): on Milvus Lite 2.5.1 at 400k units (FLAT) it took 127 ms p50 where
        200 units took 52 ms (bench/milvus_scale.py; docs/milvus.md)."""
        q = self._check(query).tolist()
        want = min(max(4 * k, 64), MAX_LIMIT)
        while True:
            hits = self._conn.read("search", self.name, data=[q], anns_field="vector", limit=want,
                                   output_fields=["passage_id"], search_params=self._search_params(want))[0]  # fmt: skip
            best: dict[str, float] = {}
            for h in hits:  # best first
                best.setdefault(str(h["entity"]["passage_id"]), float(h["distance"]))
            if len(best) >= k or len(hits) < want or want >= MAX_LIMIT:
                return sorted(best.items(), key=lambda kv: -kv[1])[:k]
            want = min(want * 4, MAX_LIMIT)

    def unit_scores(self, query: np.ndarray, passage_ids: Collection[str]) -> dict[str, list[ScoredUnit]]:
        q = self._check(query)
        rows: list[tuple[str, int, int, float]] = []
        for batch in _batches(sorted(set(passage_ids)), UNIT_QUERY_PASSAGES):
            rows += self._exact_scores(q, batch)
        # The whole passage (start 0, longest) first, then its sentences in order: as the FAISS store.
        rows.sort(key=lambda r: (r[0], r[1], r[1] - r[2]))
        out: dict[str, list[ScoredUnit]] = {}
        for pid, start, end, score in rows:
            out.setdefault(pid, []).append(ScoredUnit(Unit(pid, start, end), score))
        return out

    def _exact_scores(self, q: np.ndarray, ids: Sequence[str]) -> list[tuple[str, int, int, float]]:
        """(passage, start, end, cosine) of every unit of these passages. On a FLAT index a search
        restricted to them is exhaustive (and half the time of fetching the vectors, measured);
        an approximate index may skip some of them (Milvus Lite ignores IVF's nprobe: measured),
        so their vectors are fetched instead."""
        limit = min(MAX_LIMIT, MAX_UNITS_PER_PASSAGE * len(ids))
        if self.index_type == "FLAT":
            hits = self._conn.read("search", self.name, data=[q.tolist()], anns_field="vector", limit=limit,
                                   filter=_ids_expr("passage_id", ids), output_fields=["passage_id", "start", "end"],
                                   search_params=self._search_params(limit))[0]  # fmt: skip
            if len(hits) < limit:
                return [(str(h["entity"]["passage_id"]), int(h["entity"]["start"]), int(h["entity"]["end"]),
                         float(h["distance"])) for h in hits]  # fmt: skip
        rows = self._conn.read("query", self.name, filter=_ids_expr("passage_id", ids),
                               output_fields=["passage_id", "start", "end", "vector"])  # fmt: skip
        if not rows:
            return []
        scores = (np.asarray([r["vector"] for r in rows], dtype=np.float32) @ q).tolist()
        return [
            (str(r["passage_id"]), int(r["start"]), int(r["end"]), float(s)) for r, s in zip(rows, scores, strict=True)
        ]


# ---------------------------------------------------------------- keywords


class MilvusKeywordStore:
    """BM25 of the passages' jieba words and of the pinyin of their Chinese words (qa.lexical),
    computed by Milvus's BM25 functions over whitespace-joined tokens; the sum of the two
    channels is taken here, exactly (a threshold algorithm over both rankings)."""

    kind = KEYWORDS_KIND

    def __init__(self, conn: Connection, name: str) -> None:
        self._conn = conn
        self.name = name
        # idf needs the passage count and each token's document frequency: two round trips a
        # question. They change only with the collection, and an index is reopened when another
        # process changes it (Retriever.refresh), so they are kept until this store writes.
        self._count: int | None = None
        self._idf: dict[str, float] = {}

    def __len__(self) -> int:
        if self._count is None:
            self._count = self._conn.count(self.name)
        return self._count

    def _changed(self) -> None:
        self._count, self._idf = None, {}

    def upsert(self, passages: Sequence[Passage]) -> None:
        self._changed()
        rows: dict[str, dict[str, Any]] = {}
        for p in passages:
            tokens = tokenize(p.text)
            row = {
                "passage_id": p.id,
                "words": _terms(tokens) or EMPTY,
                "pinyin": _terms(pinyin_terms(tokens)) or EMPTY,
            }
            size = max(_utf8(row["words"]), _utf8(row["pinyin"]))
            if size > MAX_VARCHAR_BYTES:
                raise StoreError(
                    f"The keywords of passage {p.id} ({p.source.file}) take {size} bytes, over Milvus's VARCHAR "
                    f"limit of {MAX_VARCHAR_BYTES}. Build with a smaller --max-chars, or keep this index on FAISS."
                )
            rows[p.id] = row
        for batch in _batches(list(rows.values()), BATCH):
            self._conn.write("upsert", self.name, list(batch))

    def delete(self, passage_ids: Collection[str]) -> None:
        self._changed()
        for batch in _batches(sorted(set(passage_ids)), BATCH):
            self._conn.write("delete", self.name, ids=list(batch))

    def _bm25(self, field: str, query: str, limit: int, ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """(passage id, BM25 on bm25s's scale) of the passages matching `query`, best first."""
        if not query or limit <= 0:
            return []
        hits = self._conn.read("search", self.name, data=[query], anns_field=field, limit=limit,
                               filter=_ids_expr("passage_id", ids) if ids is not None else "",
                               search_params={"metric_type": "BM25"})[0]  # fmt: skip
        return [(str(h["id"]), float(h["distance"]) / K1_PLUS_1) for h in hits if h["distance"] > 0]

    def _fill(self, field: str, query: str, got: list[tuple[str, float]], limit: int,
              ids: Iterable[str]) -> dict[str, float]:  # fmt: skip
        """One channel's scores of `ids`: those in its ranking, the others asked for (or 0 when the
        ranking was not cut by `limit`, so nothing else matches)."""
        scores = dict(got)
        missing = [i for i in ids if i not in scores]
        if missing and len(got) >= limit:
            for batch in _batches(missing, BATCH):
                scores.update(self._bm25(field, query, len(batch), batch))
        return scores

    def search(self, tokens: Sequence[str], latin: Sequence[str], k: int) -> list[tuple[str, float]]:
        words, pinyin = _terms(tokens), _terms(latin)
        if not words and not pinyin:
            return []
        limit = min(k + TIE_MARGIN, MAX_LIMIT)
        while True:
            a = self._bm25("words_sparse", words, limit)
            b = self._bm25("pinyin_sparse", pinyin, limit)
            ids = list(dict.fromkeys([i for i, _ in a] + [i for i, _ in b]))
            sa = self._fill("words_sparse", words, a, limit, ids) if b else dict(a)
            sb = self._fill("pinyin_sparse", pinyin, b, limit, ids) if b else {}
            ranked = sorted(((i, sa.get(i, 0.0) + sb.get(i, 0.0)) for i in ids), key=lambda kv: (-kv[1], kv[0]))
            # A passage in neither ranking scores at most the sum of their last scores: once the
            # k-th total is above that, the top k is exact (ties included: bm25s breaks them by id).
            bound = (a[-1][1] if len(a) >= limit else 0.0) + (b[-1][1] if len(b) >= limit else 0.0)
            if bound == 0.0 or limit >= MAX_LIMIT or (len(ranked) >= k and ranked[k - 1][1] > bound):
                return [(i, s) for i, s in ranked[:k] if s > 0]
            limit = min(limit * 4, MAX_LIMIT)

    def scores(self, tokens: Sequence[str], latin: Sequence[str], passage_ids: Collection[str]) -> dict[str, float]:
        out = dict.fromkeys(passage_ids, 0.0)
        ids = list(out)
        for field, query in (("words_sparse", _terms(tokens)), ("pinyin_sparse", _terms(latin))):
            if query:
                for batch in _batches(ids, BATCH):
                    for i, s in self._bm25(field, query, len(batch), batch):
                        out[i] += s
        return out

    def idf(self, tokens: Sequence[str]) -> np.ndarray:
        """Lucene idf, log(1 + (N - df + 0.5) / (df + 0.5)), as LexicalIndex.idf: the score of the
        token alone on the k1 0, b 0 index; a token no passage uses gets the value for df 0."""
        tokens = list(tokens)
        if not tokens:
            return np.zeros(0, dtype=np.float32)
        unseen = np.log(1 + (len(self) + 0.5) / 0.5)  # df 0
        new = [t for t in dict.fromkeys(tokens) if t not in self._idf]
        for batch in _batches(new, BATCH):
            results = self._conn.read("search", self.name, data=[_terms([t]) for t in batch], anns_field="words_idf",
                                      limit=1, search_params={"metric_type": "BM25"})  # fmt: skip
            self._idf.update(
                (t, float(hits[0]["distance"]) if hits else unseen) for t, hits in zip(batch, results, strict=True)
            )
        return np.array([self._idf[t] for t in tokens], dtype=np.float32)


# ---------------------------------------------------------------- the manifest in Milvus


class Meta:
    """The manifest kept in Milvus, so that every process (on any machine) using the store sees
    updates: chunk rows "manifest:<generation>:<i>", then the "head" row naming the generation,
    its chunk count and checksum. Only the head is read to notice a change (a few ms)."""

    HEAD, DIRTY = "head", "dirty"

    def __init__(self, conn: Connection, name: str) -> None:
        self._conn = conn
        self.name = name

    def _head(self) -> dict[str, Any] | None:
        rows = self._conn("get", self.name, ids=[self.HEAD], output_fields=["generation", "value"],
                          consistency_level="Strong")  # fmt: skip
        return rows[0] if rows else None

    def generation(self) -> int | None:
        head = self._head()
        return int(head["generation"]) if head else None

    def read(self, newer_than: int | None = None) -> str | None:
        """The manifest's JSON (None if there is none, or none newer than `newer_than`)."""
        for _ in range(3):  # a writer may replace the chunks between the head and them
            head = self._head()
            if head is None or (newer_than is not None and int(head["generation"]) <= newer_than):
                return None
            gen, info = int(head["generation"]), json.loads(head["value"])
            keys = [f"manifest:{gen}:{i}" for i in range(int(info["chunks"]))]
            rows = {r["key"]: r["value"] for r in self._conn("get", self.name, ids=keys, output_fields=["value"],
                                                             consistency_level="Strong")}  # fmt: skip
            text = "".join(rows.get(k, "") for k in keys)
            if hashlib.sha256(text.encode()).hexdigest() == info["sha256"]:
                return text
            time.sleep(0.05)
        raise IndexCorruptError(
            f"The manifest kept in {self.name} at {self._conn.uri} is incomplete. Rebuild: qa index build --store milvus"
        )

    def write(self, text: str, generation: int) -> None:
        chunks = _chunks(text, MANIFEST_CHUNK_BYTES)
        rows = [{"key": f"manifest:{generation}:{i}", "generation": generation, "value": c, "dummy": [1.0, 0.0]}
                for i, c in enumerate(chunks)]  # fmt: skip
        for batch in _batches(rows, 16):
            self._conn.write("upsert", self.name, list(batch))
        head = json.dumps({"chunks": len(chunks), "sha256": hashlib.sha256(text.encode()).hexdigest()})
        self._conn.write("upsert", self.name, [{"key": self.HEAD, "generation": generation, "value": head,
                                                "dummy": [1.0, 0.0]}])  # fmt: skip
        # Keep the previous generation for a reader between its head and its chunks.
        self._conn.write("delete", self.name, filter=f'key like "manifest:%" and generation < {generation - 1}')

    def dirty(self) -> bool:
        return bool(self._conn("get", self.name, ids=[self.DIRTY], output_fields=["key"], consistency_level="Strong"))

    def mark_dirty(self) -> None:
        self._conn.write("upsert", self.name, [{"key": self.DIRTY, "generation": 0, "value": f"pid {os.getpid()}",
                                                "dummy": [1.0, 0.0]}])  # fmt: skip

    def clear_dirty(self) -> None:
        self._conn.write("delete", self.name, ids=[self.DIRTY])


def _chunks(text: str, limit: int) -> list[str]:
    """`text` cut into pieces of at most `limit` UTF-8 bytes, on character boundaries."""
    data = text.encode("utf-8")
    out, start = [], 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out or [""]


# ---------------------------------------------------------------- collections


def _names(collection: str) -> dict[str, str]:
    return {part: f"{collection}_{part}" for part in ("passages", "places", "units", "keywords", "meta")}


def _create(conn: Connection, name: str, fields: list[tuple[str, Any, dict[str, Any]]],
            indexes: list[tuple[str, str, str, dict[str, Any]]], functions: Sequence[Any] = ()) -> None:  # fmt: skip
    schema = conn.client.create_schema(auto_id=False, enable_dynamic_field=False)
    for field, dtype, kwargs in fields:
        schema.add_field(field, dtype, **kwargs)
    for fn in functions:
        schema.add_function(fn)
    params = conn.client.prepare_index_params()
    for field, index_type, metric, extra in indexes:
        if metric:
            params.add_index(field_name=field, index_type=index_type, metric_type=metric, params=extra)
        else:  # a scalar index
            params.add_index(field_name=field, index_type=index_type, params=extra)
    conn.write("create_collection", name, schema=schema, index_params=params)
    conn.ensure_loaded(name)


def _dummy(dt: Any) -> tuple[str, Any, dict[str, Any]]:
    # Standalone wants a vector field in every collection; a 2-d constant costs nothing.
    return ("dummy", dt.FLOAT_VECTOR, {"dim": 2})


def _create_passages(conn: Connection, name: str) -> None:
    dt = _pymilvus().DataType
    _create(conn, name, [
        ("passage_id", dt.VARCHAR, {"is_primary": True, "max_length": 64}),
        ("text", dt.VARCHAR, {"max_length": MAX_VARCHAR_BYTES}),
        ("sources", dt.JSON, {}),
        _dummy(dt),
    ], [("dummy", "FLAT", "L2", {})])  # fmt: skip


def _create_places(conn: Connection, name: str) -> None:
    dt = _pymilvus().DataType
    _create(conn, name, [
        ("place", dt.VARCHAR, {"is_primary": True, "max_length": 16}),
        ("passage_id", dt.VARCHAR, {"max_length": 64}),
        _dummy(dt),
    ], [("dummy", "FLAT", "L2", {})])  # fmt: skip


def _create_meta(conn: Connection, name: str) -> None:
    dt = _pymilvus().DataType
    _create(conn, name, [
        ("key", dt.VARCHAR, {"is_primary": True, "max_length": 128}),
        ("generation", dt.INT64, {}),
        ("value", dt.VARCHAR, {"max_length": MAX_VARCHAR_BYTES}),
        _dummy(dt),
    ], [("dummy", "FLAT", "L2", {})])  # fmt: skip


def _bm25_index(k1: float | str, b: float | str) -> dict[str, Any]:
    return {"inverted_index_algo": "DAAT_MAXSCORE", "bm25_k1": k1, "bm25_b": b}


def _create_keywords(conn: Connection, name: str) -> None:
    pm = _pymilvus()
    dt, fn, bm25 = pm.DataType, pm.Function, pm.FunctionType.BM25
    text = {"max_length": MAX_VARCHAR_BYTES, "enable_analyzer": True, "analyzer_params": {"tokenizer": "whitespace"}}
    _create(conn, name, [
        ("passage_id", dt.VARCHAR, {"is_primary": True, "max_length": 64}),
        ("words", dt.VARCHAR, text),
        ("pinyin", dt.VARCHAR, text),
        ("words_sparse", dt.SPARSE_FLOAT_VECTOR, {}),
        ("pinyin_sparse", dt.SPARSE_FLOAT_VECTOR, {}),
        ("words_idf", dt.SPARSE_FLOAT_VECTOR, {}),
    ], [
        ("words_sparse", "SPARSE_INVERTED_INDEX", "BM25", _bm25_index(K1, B)),
        ("pinyin_sparse", "SPARSE_INVERTED_INDEX", "BM25", _bm25_index(K1, B)),
        # k1 0 and b 0 leave the idf alone. Strings: pymilvus drops a parameter of 0.0 (measured).
        ("words_idf", "SPARSE_INVERTED_INDEX", "BM25", _bm25_index("0", "0")),
    ], [
        fn(name="words_bm25", function_type=bm25, input_field_names=["words"], output_field_names=["words_sparse"]),
        fn(name="pinyin_bm25", function_type=bm25, input_field_names=["pinyin"], output_field_names=["pinyin_sparse"]),
        fn(name="words_idf", function_type=bm25, input_field_names=["words"], output_field_names=["words_idf"]),
    ])  # fmt: skip


def _wanted_index() -> str:
    wanted = os.environ.get("QA_MILVUS_INDEX", "auto").upper()
    if wanted != "AUTO" and wanted not in INDEX_TYPES:
        raise QAError(f"QA_MILVUS_INDEX={wanted} is not one of auto, {', '.join(INDEX_TYPES)}.")
    return wanted


def _create_units(conn: Connection, name: str, dimension: int) -> str:
    """Create the units collection; returns its index type."""
    dt = _pymilvus().DataType
    fields = [
        ("unit_id", dt.VARCHAR, {"is_primary": True, "max_length": 96}),
        ("passage_id", dt.VARCHAR, {"max_length": 64}),
        ("start", dt.INT32, {}),
        ("end", dt.INT32, {}),
        ("vector", dt.FLOAT_VECTOR, {"dim": dimension}),
    ]
    wanted = _wanted_index()
    index_type = ("FLAT" if conn.local else "HNSW") if wanted == "AUTO" else wanted
    params = {"HNSW": HNSW_BUILD, "IVF_FLAT": {"nlist": IVF_NLIST}}.get(index_type, {})
    # An INVERTED index on passage_id, which unit_scores filters the units of ~100 passages by: for
    # a server (not measured here); Milvus Lite 2.5.1 gains nothing (400k units: 21.7 ms with it,
    # 21.2 without; docs/milvus.md).
    by_passage: tuple[str, str, str, dict[str, Any]] = ("passage_id", "INVERTED", "", {})
    try:
        _create(conn, name, fields, [("vector", index_type, "IP", params), by_passage])
    except StoreError as exc:
        if wanted != "AUTO" or "local mode only support" not in str(exc):
            raise
        # A Milvus Lite server: its local mode builds FLAT, IVF_FLAT and AUTOINDEX only.
        log.info("The Milvus at %s builds no HNSW (Milvus Lite); the units get an exact FLAT index.", conn.uri)
        conn.drop(name)
        index_type = "FLAT"
        _create(conn, name, fields, [("vector", index_type, "IP", {}), by_passage])
    return index_type


def _index_type(conn: Connection, name: str) -> str:
    info = conn("describe_index", name, "vector")
    return str((info or {}).get("index_type") or "FLAT").upper()


def _dimension(conn: Connection, name: str) -> int:
    fields = conn("describe_collection", name).get("fields", [])
    vector: dict[str, Any] = next((f for f in fields if f.get("name") == "vector"), {})
    return int(vector.get("params", {}).get("dim", 0))


def _bm25_params(conn: Connection, name: str) -> tuple[float, float] | None:
    info = conn("describe_index", name, "words_sparse") or {}
    try:
        return float(info["bm25_k1"]), float(info["bm25_b"])
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------- what qa.index calls


def open_stores(folder: str | Path, info: StoreInfo, *, create: bool = False, reset: bool = False,
                dimension: int | None = None) -> Stores:  # fmt: skip
    """The stores of the index in `folder`. With `create` (a build, under `writer_lock`): make
    missing collections, drop them first with `reset`, mark the store dirty and repair what an
    interrupted update left behind. Without: check that the collections are there."""
    conn = connect(info, folder)
    names = _names(str(info.collection))
    if create:
        return _open_for_writing(conn, names, reset, dimension)
    fix = f"Rebuild the index: qa index build --index {folder} --store milvus --uri {info.uri}"
    dense = info.dimension > 0 and info.index != "none"
    for part in ("passages", "places", "keywords", *(("units",) if dense else ())):
        if not conn.has(names[part]):
            raise IndexCorruptError(f"The Milvus collection {names[part]} is missing at {conn.uri}. {fix}")
        conn.ensure_loaded(names[part])
    vectors = None
    if dense:
        dim = _dimension(conn, names["units"])
        if dim != info.dimension:
            raise IndexCorruptError(
                f"The Milvus collection {names['units']} holds vectors of dimension {dim}, the manifest says "
                f"{info.dimension}. {fix} --force"
            )
        vectors = MilvusVectorStore(conn, names["units"], dim, _index_type(conn, names["units"]))
    return Stores(_passages(conn, names), MilvusKeywordStore(conn, names["keywords"]), vectors)


def _passages(conn: Connection, names: dict[str, str]) -> MilvusPassageStore:
    return MilvusPassageStore(conn, names["passages"], names["places"])


def _open_for_writing(conn: Connection, names: dict[str, str], reset: bool, dimension: int | None) -> Stores:
    if not conn.has(names["meta"]):
        _create_meta(conn, names["meta"])
    meta = Meta(conn, names["meta"])
    was_dirty = meta.dirty()
    meta.mark_dirty()  # before the first change; the manifest write clears it
    if reset:
        for part in ("passages", "places", "units", "keywords"):
            conn.drop(names[part])
    if not conn.has(names["passages"]):
        _create_passages(conn, names["passages"])
    if not conn.has(names["places"]):
        _create_places(conn, names["places"])
    if conn.has(names["keywords"]) and _bm25_params(conn, names["keywords"]) != (K1, B):
        conn.drop(names["keywords"])  # Milvus fixes k1 and b when it builds the index: build a new one
    if not conn.has(names["keywords"]):
        _create_keywords(conn, names["keywords"])
    vectors = None
    if dimension is not None:
        if conn.has(names["units"]) and _dimension(conn, names["units"]) != dimension:
            raise IndexMismatchError(
                f"The Milvus collection {names['units']} at {conn.uri} holds vectors of dimension "
                f"{_dimension(conn, names['units'])}, the model gives {dimension}. Rebuild: qa index build --force"
            )
        if conn.has(names["units"]):
            index_type = _index_type(conn, names["units"])
        else:
            index_type = _create_units(conn, names["units"], dimension)
        vectors = MilvusVectorStore(conn, names["units"], dimension, index_type)
    elif conn.has(names["units"]):
        conn.drop(names["units"])
    for part in ("passages", "places", "keywords", *(("units",) if vectors is not None else ())):
        conn.ensure_loaded(names[part])
    stores = Stores(_passages(conn, names), MilvusKeywordStore(conn, names["keywords"]), vectors)
    if was_dirty and not reset:
        repair(stores)
    return stores


def _unit_passages(vectors: MilvusVectorStore) -> set[str]:
    conn = vectors._conn
    return {str(r["passage_id"]) for r in conn.rows(vectors.name, ["passage_id"])}


def repair(stores: Stores) -> int:
    """Undo what an interrupted update left behind: units and keywords of passages that are not
    in the passages collection, and passages whose units or keywords are missing (the build that
    follows adds them again whole); and map the places again. Returns how many passages were touched."""
    assert isinstance(stores.passages, MilvusPassageStore) and isinstance(stores.keywords, MilvusKeywordStore)
    kw = stores.keywords
    have = stores.passages.ids()
    keywords = {str(r["passage_id"]) for r in kw._conn.rows(kw.name, ["passage_id"])}
    units = _unit_passages(stores.vectors) if isinstance(stores.vectors, MilvusVectorStore) else have
    incomplete = (have - keywords) | (have - units)
    orphans = (keywords | units) - have
    if incomplete or orphans:
        log.warning("Repairing the Milvus store after an interrupted update: %d incomplete passages, "
                    "%d left-over ones.", len(incomplete), len(orphans))  # fmt: skip
        if stores.vectors is not None:
            stores.vectors.delete(incomplete | orphans)
        kw.delete(incomplete | orphans)
        stores.passages.delete(incomplete)
    stores.passages.reindex_places()
    return len(incomplete | orphans)


def commit(stores: Stores, manifest: Manifest) -> None:
    """Check, before the manifest is written, that the collections hold what it says."""
    _check_counts(stores, manifest, "after the update")


def _check_counts(stores: Stores, manifest: Manifest, when: str) -> None:
    passages, keywords = len(stores.passages), len(stores.keywords)
    vectors = len(stores.vectors) if stores.vectors is not None else 0
    want = manifest.store.vectors if manifest.store is not None else 0
    if passages != manifest.passage_count or keywords != passages or vectors != want:
        raise IndexCorruptError(
            f"The Milvus store holds {passages} passages, {keywords} keyword rows and {vectors} vectors {when}, "
            f"the manifest says {manifest.passage_count} passages and {want} vectors. "
            f"Run qa index build again to repair it (or --force to rebuild)."
        )


def verify(folder: str | Path, manifest: Manifest) -> None:
    """An index on Milvus is whole: no update was interrupted, and the counts agree with the manifest."""
    assert manifest.store is not None
    conn = connect(manifest.store, folder)
    names = _names(str(manifest.store.collection))
    if not conn.has(names["meta"]) or Meta(conn, names["meta"]).dirty():
        raise IndexCorruptError(f"An update of the Milvus store at {conn.uri} was interrupted. Run qa index build.")
    _check_counts(open_stores(folder, manifest.store), manifest, "")


def save_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Write the manifest into Milvus (a new generation for every process that polls it), and
    clear the dirty mark of the update it completes."""
    assert manifest.store is not None
    conn = connect(manifest.store, folder)
    name = _names(str(manifest.store.collection))["meta"]
    if not conn.has(name):
        _create_meta(conn, name)
    meta = Meta(conn, name)
    meta.write(manifest.to_json(), manifest.generation)
    meta.clear_dirty()


def _meta(info: StoreInfo, folder: str | Path) -> Meta | None:
    conn = connect(info, folder)
    name = _names(str(info.collection))["meta"]
    return Meta(conn, name) if conn.has(name) else None


def load_manifest(info: StoreInfo, folder: str | Path, *, newer_than: int | None = None) -> Manifest | None:
    """The manifest kept in Milvus (None if there is none, or none newer than `newer_than`)."""
    meta = _meta(info, folder)
    text = meta.read(newer_than) if meta is not None else None
    if text is None:
        return None
    return Manifest.from_json(text, where=f"the manifest in {meta.name if meta else ''} at {info.uri}")


def generation(info: StoreInfo, folder: str | Path) -> int | None:
    """The generation of the manifest kept in Milvus (a get of one row)."""
    meta = _meta(info, folder)
    return meta.generation() if meta is not None else None


# ---------------------------------------------------------------- the backend


class MilvusBackend:
    """Milvus's life as a store: collections updated in place, marked dirty while an update runs
    and repaired by the next build; the manifest is kept in Milvus too, so every process and
    machine sharing the store sees the newest generation."""

    kind = "milvus"
    # A first build that failed leaves its Lite file (and lock files) in the new folder.
    leftovers = frozenset(
        {DEFAULT_DB, f".{DEFAULT_DB}.lock", f".{DEFAULT_DB}.qa.lock", f".{DEFAULT_DB}.qa-writer.lock"}
    )

    def info(self, uri: str | None, token_env: str | None, folder: Path) -> StoreInfo:
        return store_info(uri, token_env, folder)

    def open(self, folder: Path, manifest: Manifest) -> Stores:
        assert manifest.store is not None
        return open_stores(folder, manifest.store, create=False)

    def for_update(self, folder: Path, old: Manifest | None, info: StoreInfo, dimension: int | None,
                   *, fresh: bool) -> Stores:  # fmt: skip
        return open_stores(folder, info, create=True, reset=fresh, dimension=dimension)

    def commit(self, folder: Path, manifest: Manifest, stores: Stores) -> None:
        """The collections checked against the manifest, then the manifest written (Milvus, folder)."""
        commit(stores, manifest)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_manifest(folder, manifest)

    def save_manifest(self, folder: Path, manifest: Manifest) -> None:
        save_manifest(folder, manifest)
        write_atomic(folder / MANIFEST, manifest.to_json().encode("utf-8"))

    def verify(self, folder: Path, manifest: Manifest) -> None:
        verify(folder, manifest)

    def writer_lock(self, info: StoreInfo, folder: Path) -> contextlib.AbstractContextManager[None]:
        return writer_lock(info, folder)

    def shared_manifest(self, info: StoreInfo, folder: Path, newer_than: int) -> Manifest | None:
        return load_manifest(info, folder, newer_than=newer_than)

    def generation(self, info: StoreInfo, folder: Path) -> int | None:
        return generation(info, folder)


BACKEND = MilvusBackend()


# ---------------------------------------------------------------- Milvus Lite as a server


@contextlib.contextmanager
def serve_lite(db: str | Path, port: int, host: str = "127.0.0.1", *, ready_seconds: float = 60.0) -> Iterator[str]:
    """Serve a Milvus Lite file to several processes at http://host:port while the block runs
    (for tests and a single machine; Standalone is the server for production, docs/milvus.md).

    Holds this package's lock on the file, so no process opens it directly meanwhile."""
    _pymilvus()
    from milvus_lite.server import Server

    path = Path(db).resolve()
    _check_db_path(path)
    lock = _hold_file_lock(_lite_lock_path(path), str(path))
    server = Server(str(path), address=f"{host}:{port}")
    try:
        if not server.init() or not server.start():
            raise StoreError(f"Milvus Lite could not serve {path} on {host}:{port}.")
        deadline = time.monotonic() + ready_seconds
        while not _listening(host, port):
            if server._p is None or server._p.poll() is not None or time.monotonic() > deadline:
                raise StoreError(f"Milvus Lite did not start serving {path} on {host}:{port}.")
            time.sleep(0.1)
        yield f"http://{host}:{port}"
    finally:
        _stop(server._p)
        server._p = None
        server.stop()  # releases milvus_lite's own lock file
        lock.close()


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # the binary exits at once; its data is already on disk
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
