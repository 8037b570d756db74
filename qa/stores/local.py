"""The embedded stores: plain files in the index folder, FAISS for vectors, bm25s for keywords.

    passages.jsonl        one passage per line: id, text, sources
    passages.*.npy        where each line starts, the ids and the places, sorted (PassageFile)
    units.npy             passage id of each unit vector (fixed-width unicode, no pickle)
    spans.npy             int32 (start, end) of each unit in its passage's text
    vectors.npy           float32 unit vectors, L2-normalized; memory-mapped on load
    dense.faiss           FAISS index over vectors.npy (exact below ANN_MIN_VECTORS, then HNSW, then IVF)
    bm25/                 bm25s arrays (.npy, allow_pickle=False) and their passage ids

Each store changes in memory (`upsert`, `delete`) and writes its files with `save(folder)`;
`LocalBackend.commit` writes a whole new folder and renames it into place (qa.folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

from qa.cache import write_atomic
from qa.errors import IndexCorruptError, QAError
from qa.folder import fsync_tree, sha256_file, swap_into_place, verify_files
from qa.lexical import LexicalIndex, tokenize
from qa.manifest import MANIFEST, FileEntry, Manifest, StoreInfo
from qa.split import Passage, Source
from qa.stores import Neighbours, ScoredUnit, Stores, Unit, check_query
from qa.stores.rows import source_from_dict, source_to_dict

log = logging.getLogger(__name__)

# Which FAISS index, by the number of unit vectors (about 4 a passage), chosen on
# bench/scale.py's measurements (bench/RESULTS.md: recombined seed text, 200 real questions,
# recall@10 of passages against exact search; times on a busy 2-core machine, one thread):
# - exact search below ANN_MIN_VECTORS: 20 ms at 40k vectors, growing linearly with them;
# - HNSW (M 32) up to IVF_MIN_VECTORS: at 400k vectors efSearch 256 reaches recall 0.944 in
#   14 ms (128: 0.89 in 1.9 ms); IVF with 8-bit codes (2529 lists) 0.926 at nprobe 128 in 15 ms
#   (64: 0.878 in 3.4 ms). e5's vectors crowd together (unrelated sentences have cosines
#   around 0.9), so both need far more probes than usual. HNSW is a little better at equal
#   time; it costs memory, a copy of the vectors plus the graph (1.8 kB a vector against
#   384 B), and build time (400k vectors: 15 min on that machine against 5);
# - IVF with 8-bit codes (nlist 2*sqrt(vectors)) from IVF_MIN_VECTORS on, where HNSW's copy
#   would pass 3.5 GB and its build take hours. At 1M passages (4M vectors, 4096 lists; 100
#   real questions; AMX Xeon, one thread, 2026-12-06) recall@10 of the search (units proposed,
#   then scored exactly) and p50: nprobe 32 0.898 in 3.9 ms, 64 0.953 in 6.8 ms, 128 0.978 in
#   14 ms; on 200 questions 64 fell to 0.944, hence IVF_NPROBE. Tried and dropped, each slower
#   at equal recall: 16,384 lists (HNSW quantizer) 0.945 at nprobe 192 in 10 ms, 4-bit codes
#   0.948 in 9.7 ms, PQ fast-scan with an 8-bit refine below 0.61 at any setting (e5's crowded
#   vectors defeat coarse codes), centered vectors (balanced lists) 0.76 in 3.8 ms, vectors
#   projected to 192 dimensions 0.929 in 7.4 ms.
# Every candidate's units are then scored exactly from vectors.npy (`unit_scores`).
ANN_MIN_VECTORS = 100_000
IVF_MIN_VECTORS = 2_000_000
HNSW_M = 32
HNSW_EF_SEARCH = 256
IVF_LISTS_PER_SQRT = 2  # nlist = 2 * sqrt(vectors), rounded to a power of two
IVF_NPROBE = 96  # recall@10 0.962 at 1M passages on 200 questions (64: 0.944, 80: 0.955, 128: 0.971)
IVF_TRAIN_PER_LIST = 32  # k-means sample: 32 vectors a list
ADD_BLOCK = 250_000  # vectors added to a FAISS index at a time
KINDS = ("faiss-flat-ip", "faiss-ivf-sq8-ip", "faiss-hnsw-ip")
ID_DTYPE = "<U16"  # passage ids are 16 hex digits (qa.split.passage_id)
FIX = "Rebuild the index: qa index build --force"


# ---------------------------------------------------------------- passages


def passage_to_json(p: Passage) -> str:
    sources = [source_to_dict(s) for s in p.sources]
    return json.dumps({"id": p.id, "text": p.text, "sources": sources}, ensure_ascii=False)


def passage_from_json(line: str) -> Passage:
    d = json.loads(line)
    return Passage(str(d["id"]), str(d["text"]), tuple(source_from_dict(s) for s in d["sources"]))


def reading_order(p: Passage) -> tuple[str, int]:
    return (p.source.file, p.source.order)


class PassageTable:
    """Passages by id, saved as `passages.jsonl` in reading order beside the arrays that find a
    line without parsing the others (`PassageFile`).

    Loaded, a table of fewer than LAZY_MIN_PASSAGES passages is parsed whole into memory (each
    fetch is then free); a larger one stays on disk and parses only the lines a search fetches,
    which keeps a million passages' open at a fraction of a second and their memory at the
    arrays' (about 40 bytes a passage) instead of 13 s and 1 GB of objects. The first change
    (`upsert`, `delete`) reads a table on disk into memory.
    """

    FILE = "passages.jsonl"

    def __init__(self, passages: Sequence[Passage] = (), *, file: PassageFile | None = None) -> None:
        self._file = file
        self._by_id: dict[str, Passage] = {}
        self._at: dict[tuple[str, int], str] = {}
        self.upsert(passages)

    def __len__(self) -> int:
        return len(self._file) if self._file is not None else len(self._by_id)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def ids(self) -> set[str]:
        return self._file.ids() if self._file is not None else set(self._by_id)

    def get(self, ids: Sequence[str]) -> list[Passage]:
        if self._file is not None and 2 * len(ids) > len(self._file):
            self._in_memory()  # most of the table (an update compares every kept passage): read it once
        if self._file is not None:
            return self._file.get(ids)
        return [self._by_id[i] for i in ids if i in self._by_id]

    def __iter__(self) -> Iterator[Passage]:
        if self._file is not None:
            return iter(self._file)
        return iter(sorted(self._by_id.values(), key=reading_order))

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        if self._file is not None:
            return self._file.at(source.file, source.order - 1), self._file.at(source.file, source.order + 1)
        before = self._at.get((source.file, source.order - 1))
        after = self._at.get((source.file, source.order + 1))
        return (self._by_id.get(before) if before else None, self._by_id.get(after) if after else None)

    def neighbours_of(self, sources: Sequence[Source]) -> dict[tuple[str, int], Neighbours]:
        return {(s.file, s.order): self.neighbours(s) for s in sources}

    def _in_memory(self) -> None:
        """Before a change: read a table that is on disk into memory."""
        if self._file is not None:
            file, self._file = self._file, None
            self.upsert(list(file))

    def upsert(self, passages: Sequence[Passage]) -> None:
        if not passages:
            return
        self._in_memory()
        self.delete([p.id for p in passages if p.id in self._by_id])
        for p in passages:
            self._by_id[p.id] = p
            self._at.update({(s.file, s.order): p.id for s in p.sources})

    def delete(self, ids: Collection[str]) -> None:
        if not ids:
            return
        self._in_memory()
        for i in ids:
            p = self._by_id.pop(i, None)
            for s in p.sources if p else ():
                if self._at.get((s.file, s.order)) == i:
                    del self._at[(s.file, s.order)]

    def save(self, folder: Path) -> None:
        PassageFile.write(folder, self.FILE, self)

    @classmethod
    def load(cls, folder: Path) -> PassageTable:
        try:
            file = PassageFile.open(folder, cls.FILE)
            if file is not None and len(file) >= LAZY_MIN_PASSAGES:
                return cls(file=file)
            if file is not None:
                return cls(list(file))
            with (folder / cls.FILE).open(encoding="utf-8") as f:  # an index written before PassageFile
                return cls([passage_from_json(line) for line in f if line.strip()])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise IndexCorruptError(f"{folder / cls.FILE} cannot be read ({exc}). {FIX}") from exc


LAZY_MIN_PASSAGES = 20_000  # from here on a loaded table stays on disk (PassageTable)


def place_key(file: str, order: int) -> int:
    """A passage's place (document, order) as 64 bits; a lookup checks the passage it finds,
    so two places with the same key cannot be confused."""
    digest = hashlib.blake2b(f"{file}\x00{order}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class PassageFile:
    """`passages.jsonl` read in place (memory-mapped), with three small arrays written beside it
    so that a fetch parses only the lines it wants:

        passages.offsets.npy   int64, the byte offset of each line, and the file's size last
        passages.ids.npy       (id, line) sorted by id: a binary search finds a passage
        passages.places.npy    (place_key(file, order), line) sorted, one row per source: a
                               binary search finds a passage's neighbours
    """

    OFFSETS, IDS, PLACES = "passages.offsets.npy", "passages.ids.npy", "passages.places.npy"
    PLACE_DTYPE = np.dtype([("key", "<u8"), ("line", "<i8")])

    def __init__(self, path: Path, data: mmap.mmap | bytes, offsets: np.ndarray, ids: np.ndarray,
                 id_lines: np.ndarray, place_keys: np.ndarray, place_lines: np.ndarray) -> None:  # fmt: skip
        self._path = path
        self._data = data
        self._offsets = offsets
        self._ids, self._id_lines = ids, id_lines
        self._place_keys, self._place_lines = place_keys, place_lines

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def line(self, i: int) -> Passage:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        try:
            return passage_from_json(self._data[start:end].decode("utf-8"))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise IndexCorruptError(f"{self._path} cannot be read at line {i + 1} ({exc}). {FIX}") from exc

    def __iter__(self) -> Iterator[Passage]:
        return (self.line(i) for i in range(len(self)))

    def ids(self) -> set[str]:
        return {i.decode("ascii") for i in self._ids.tolist()}

    def get(self, ids: Sequence[str]) -> list[Passage]:
        out = []
        for pid in ids:
            line = self._find(pid)
            if line is not None:
                out.append(self.line(line))
        return out

    def _find(self, pid: str) -> int | None:
        if not pid.isascii():
            return None
        key = pid.encode("ascii")
        i = int(self._ids.searchsorted(key))
        return int(self._id_lines[i]) if i < len(self._ids) and self._ids[i] == key else None

    def at(self, file: str, order: int) -> Passage | None:
        """The passage at this place, if any."""
        key = np.uint64(place_key(file, order))
        i = int(self._place_keys.searchsorted(key))
        while i < len(self._place_keys) and self._place_keys[i] == key:
            p = self.line(int(self._place_lines[i]))
            if any(s.file == file and s.order == order for s in p.sources):
                return p
            i += 1
        return None

    @classmethod
    def write(cls, folder: Path, name: str, passages: Iterable[Passage]) -> None:
        offsets, ids, places = [0], [], []
        with (folder / name).open("wb") as f:
            for line_no, p in enumerate(passages):
                line = (passage_to_json(p) + "\n").encode("utf-8")
                f.write(line)
                offsets.append(offsets[-1] + len(line))
                ids.append(p.id)
                places += [(place_key(s.file, s.order), line_no) for s in p.sources]
        if not all(i.isascii() for i in ids):
            return  # only hex ids (qa.split.passage_id) have the fixed-width array: read whole
        id_array = np.array(ids, dtype=f"S{max((len(i) for i in ids), default=1)}")
        order = np.argsort(id_array, kind="stable")
        id_rows = np.empty(len(ids), dtype=[("id", id_array.dtype), ("line", "<i8")])
        id_rows["id"], id_rows["line"] = id_array[order], order
        place_rows = np.array(places, dtype=cls.PLACE_DTYPE)
        place_rows = place_rows[np.argsort(place_rows["key"], kind="stable")]
        np.save(folder / cls.OFFSETS, np.array(offsets, dtype="<i8"), allow_pickle=False)
        np.save(folder / cls.IDS, id_rows, allow_pickle=False)
        np.save(folder / cls.PLACES, place_rows, allow_pickle=False)

    @classmethod
    def open(cls, folder: Path, name: str) -> PassageFile | None:
        """The file with its arrays, checked against each other; None without the arrays."""
        path = folder / name
        if not all((folder / n).exists() for n in (cls.OFFSETS, cls.IDS, cls.PLACES)):
            return None
        offsets = np.load(folder / cls.OFFSETS, allow_pickle=False)
        id_rows = np.load(folder / cls.IDS, allow_pickle=False)
        place_rows = np.load(folder / cls.PLACES, allow_pickle=False)
        size = path.stat().st_size
        n = len(offsets) - 1
        if (
            offsets.ndim != 1 or n < 0 or offsets[0] != 0 or offsets[-1] != size or np.any(np.diff(offsets) <= 0)
            or id_rows.dtype.names != ("id", "line") or len(id_rows) != n
            or place_rows.dtype != cls.PLACE_DTYPE or len(place_rows) < n
            or (n and (id_rows["line"].min() < 0 or id_rows["line"].max() >= n))
            or (len(place_rows) and (place_rows["line"].min() < 0 or place_rows["line"].max() >= n))
        ):  # fmt: skip
            raise ValueError(f"its arrays ({cls.OFFSETS}, {cls.IDS}, {cls.PLACES}) do not match it")
        data: mmap.mmap | bytes = b""
        if size:
            with path.open("rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(
            path, data, offsets, np.ascontiguousarray(id_rows["id"]), np.ascontiguousarray(id_rows["line"]),
            np.ascontiguousarray(place_rows["key"]), np.ascontiguousarray(place_rows["line"]),
        )  # fmt: skip


# ---------------------------------------------------------------- vectors


class FaissVectorStore:
    """Unit vectors in a numpy array (memory-mapped when loaded) and a FAISS index over them:
    exact inner product for small collections, HNSW from `ANN_MIN_VECTORS` on, IVF with 8-bit
    codes from `IVF_MIN_VECTORS` on (`kind` forces one of `KINDS`). Approximate scores only
    choose the candidates: every candidate's units are scored exactly (`unit_scores`)."""

    def __init__(self, dimension: int, passages: np.ndarray, spans: np.ndarray, vectors: np.ndarray,
                 index: faiss.Index | None = None, *, kind: str | None = None,
                 reader: RowReader | None = None) -> None:  # fmt: skip
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self._kind = kind
        self._dimension = dimension
        self._passages = passages  # (n,) passage id of each unit
        self._spans = spans  # (n, 2) int32
        self._vectors = vectors  # (n, dimension) float32
        self._reader = reader  # reads rows of a memory-mapped `vectors` from its file
        self._index = index
        self._rows: _UnitGroups | None = None

    @classmethod
    def empty(cls, dimension: int) -> FaissVectorStore:
        return cls(dimension, np.zeros(0, ID_DTYPE), np.zeros((0, 2), np.int32), np.zeros((0, dimension), np.float32))

    @property
    def kind(self) -> str:
        if self._kind is not None:
            return self._kind
        if self._index is not None:
            return _kind_of(self._index)
        n = len(self)
        if n >= IVF_MIN_VECTORS:
            return "faiss-ivf-sq8-ip"
        return "faiss-hnsw-ip" if n >= ANN_MIN_VECTORS else "faiss-flat-ip"

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return len(self._passages)

    # ------------------------------------------------------------ changes

    def upsert(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self._dimension)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        self.delete({u.passage for u in units})
        self._passages = np.concatenate([self._passages, np.array([u.passage for u in units], ID_DTYPE)])
        self._spans = np.concatenate(
            [self._spans, np.array([(u.start, u.end) for u in units], np.int32).reshape(-1, 2)]
        )
        self._vectors = np.concatenate([self._vectors, vectors])
        self._changed()

    def delete(self, passage_ids: Collection[str]) -> None:
        if not len(passage_ids) or not len(self):
            return
        keep = ~np.isin(self._passages, np.array(list(passage_ids), ID_DTYPE))
        if keep.all():
            return
        self._passages, self._spans, self._vectors = self._passages[keep], self._spans[keep], self._vectors[keep]
        self._changed()

    def _changed(self) -> None:
        self._index = None
        self._rows = None
        self._reader = None  # the arrays are in memory now

    # ------------------------------------------------------------ search

    def _check(self, query: np.ndarray) -> np.ndarray:
        return check_query(query, self._dimension)

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = _faiss_index(np.asarray(self._vectors, dtype=np.float32), self.kind)
        return self._index

    def warm_up(self) -> None:
        _ = self.index, self._groups

    @property
    def _groups(self) -> _UnitGroups:
        if self._rows is None:
            self._rows = _UnitGroups.of(self._passages, self._spans)
        return self._rows

    def rows(self, passage_id: str) -> np.ndarray | None:
        """Row numbers of a passage's units, the whole passage (span starting at 0, longest) first."""
        return self._groups.rows(passage_id)

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        q = self._check(query).reshape(1, -1)
        n = len(self)
        want = min(n, max(4 * k, 64))
        while want > 0:
            scores, ids = self.index.search(q, want)
            best: dict[str, float] = {}
            for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
                if i >= 0:
                    pid = str(self._passages[i])
                    best.setdefault(pid, float(s))  # FAISS returns the best first
            if len(best) >= k or want >= n:
                return sorted(best.items(), key=lambda kv: -kv[1])[:k]
            want = min(n, want * 4)
        return []

    def unit_scores(self, query: np.ndarray, passage_ids: Collection[str]) -> dict[str, list[ScoredUnit]]:
        q = self._check(query)
        found = [(pid, rows) for pid in passage_ids if (rows := self.rows(pid)) is not None]
        if not found:
            return {}
        every = np.concatenate([rows for _, rows in found])
        vectors = self._reader.rows(every) if self._reader is not None else np.asarray(self._vectors)[every]
        scores = (vectors @ q).tolist()  # one gather, one product for all candidates
        spans = self._spans[every].tolist()
        out: dict[str, list[ScoredUnit]] = {}
        at = 0
        for pid, rows in found:
            out[pid] = [
                ScoredUnit(Unit(pid, start, end), score)
                for (start, end), score in zip(spans[at : at + len(rows)], scores[at : at + len(rows)], strict=True)
            ]
            at += len(rows)
        return out

    # ------------------------------------------------------------ files

    FILES = ("units.npy", "spans.npy", "vectors.npy", "dense.faiss")

    def save(self, folder: Path) -> None:
        np.save(folder / "units.npy", self._passages, allow_pickle=False)
        np.save(folder / "spans.npy", self._spans, allow_pickle=False)
        np.save(folder / "vectors.npy", np.ascontiguousarray(self._vectors, dtype=np.float32), allow_pickle=False)
        faiss.write_index(self.index, str(folder / "dense.faiss"))

    @classmethod
    def load(cls, folder: Path, *, dimension: int, count: int) -> FaissVectorStore:
        """Read the arrays (vectors memory-mapped) and the FAISS index, checked against the manifest."""
        try:
            passages = np.load(folder / "units.npy", allow_pickle=False)
            spans = np.load(folder / "spans.npy", allow_pickle=False)
            reader = RowReader(folder / "vectors.npy")
            vectors = reader.matrix
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"Vectors in {folder} cannot be read ({exc}). {FIX}") from exc
        if passages.dtype.kind != "U" or spans.shape != (count, 2) or vectors.shape != (count, dimension):
            raise IndexCorruptError(
                f"Vectors in {folder} do not match the manifest ({vectors.shape[0]} vectors of dimension "
                f"{vectors.shape[-1]}, the manifest says {count} of dimension {dimension}). {FIX}"
            )
        path = folder / "dense.faiss"
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(f"{path} is not a readable FAISS index ({exc}). {FIX}") from exc
        if index.d != dimension or index.ntotal != count:
            raise IndexCorruptError(
                f"{path} holds {index.ntotal} vectors of dimension {index.d}, but the manifest says "
                f"{count} of dimension {dimension}. {FIX}"
            )
        _search_parameters(index)
        return cls(dimension, passages, spans, vectors, index, reader=reader)


class RowReader:
    """Rows of a memory-mapped .npy matrix read with `os.pread`, one read a run of consecutive rows
    (a passage's units are one run), instead of through the mapping. A fault in the mapping maps
    the whole folio around it: at 1M passages the candidates of 50 questions, 15 MB of rows, left
    3 GB of vectors.npy resident in the process; read, they cost their own bytes, and the page
    cache (which the kernel shrinks at will) keeps the rest. Rows not read for a while come from
    disk either way: the benchmark VM drops file pages unused for about 20 s (0.2 ms a read
    against 5 µs cached). The file is opened with the mapping, so both are the same file
    whatever replaces the folder later."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        proc = Path(f"/proc/self/fd/{self._fd}")  # the file this reader holds open, not the path's now
        # memory-mapped too, for whole passes: a rebuild of the FAISS index, a save
        self.matrix = np.load(proc if proc.exists() else path, allow_pickle=False, mmap_mode="r")
        if self.matrix.ndim != 2:
            raise ValueError(f"{path.name} holds {self.matrix.ndim} dimensions, not 2")
        self._offset, self._width, self._dtype = int(self.matrix.offset), int(self.matrix.shape[1]), self.matrix.dtype

    def rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self._width), dtype=self._dtype)
        row_bytes = self._width * self._dtype.itemsize
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        for start, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(rows)], strict=True):
            count = end - start
            data = os.pread(self._fd, count * row_bytes, self._offset + int(rows[start]) * row_bytes)
            if len(data) != count * row_bytes:
                raise IndexCorruptError(f"vectors.npy ends before row {int(rows[end - 1])}. {FIX}")
            out[start:end] = np.frombuffer(data, dtype=self._dtype).reshape(count, self._width)
        return out


class _UnitGroups:
    """Which rows hold each passage's units. A build appends a passage's units together, the
    whole passage first (`qa.split.sentence_units`), so they are runs: the run starts, and the
    run ids sorted once (a binary search finds a passage), cost a few bytes a passage where a
    dict of row arrays costs hundreds. Units in any other order fall back to that dict."""

    def __init__(self, starts: np.ndarray, order: np.ndarray, sorted_ids: np.ndarray,
                 by_id: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        self._starts = starts  # run i holds rows starts[i] .. starts[i + 1] - 1
        self._order = order  # run number of each id in sorted_ids
        self._sorted = sorted_ids
        self._by_id = by_id

    @classmethod
    def of(cls, passages: np.ndarray, spans: np.ndarray) -> _UnitGroups:
        n = len(passages)
        starts = np.concatenate([[0], np.flatnonzero(passages[1:] != passages[:-1]) + 1, [n]]).astype(np.int64)
        first = starts[:-1]
        ids = passages[first]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if not n:
            return cls(starts, order, sorted_ids)
        widths = spans[:, 1] - spans[:, 0]
        if (
            np.all(sorted_ids[1:] != sorted_ids[:-1])
            and np.all(spans[first, 0] == 0)
            and np.all(widths[first] == np.maximum.reduceat(widths, first))
        ):
            return cls(starts, order, sorted_ids)
        rows = np.lexsort((-widths, spans[:, 0], passages))
        by_unit = passages[rows]
        cuts = np.flatnonzero(by_unit[1:] != by_unit[:-1]) + 1
        by_id = {str(g[0]): r for g, r in zip(np.split(by_unit, cuts), np.split(rows, cuts), strict=True)}
        return cls(starts, order, sorted_ids, by_id)

    def rows(self, passage_id: str) -> np.ndarray | None:
        if self._by_id is not None:
            return self._by_id.get(passage_id)
        i = int(self._sorted.searchsorted(passage_id))
        if i >= len(self._sorted) or self._sorted[i] != passage_id:
            return None
        run = int(self._order[i])
        return np.arange(self._starts[run], self._starts[run + 1])


def set_faiss_threads(threads: int) -> None:
    """FAISS's OpenMP threads, process-wide. A server answering several questions at once on
    few cores wants one: with two, one exact search over 40k vectors took 4.5x as long (92 ms
    against 20) on a busy 2-core machine, the threads waiting on each other (bench/RESULTS.md)."""
    faiss.omp_set_num_threads(threads)


def _faiss_index(vectors: np.ndarray, kind: str) -> faiss.Index:
    """The FAISS index of `kind` over `vectors`, added in blocks (no second copy of them all).

    Not centered: an IVF over x − mean ranks the same for inner product and has balanced lists,
    but at 1M passages it reached recall@10 0.76 in 3.8 ms (nprobe 128) where this one reaches
    0.90 in 3.9 ms (nprobe 32) (bench/RESULTS.md, 2026-12-06)."""
    dim = vectors.shape[1]
    index: faiss.Index
    if kind == "faiss-hnsw-ip":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    elif kind == "faiss-ivf-sq8-ip":
        nlist = ivf_lists(len(vectors))
        index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(
            len(vectors), min(len(vectors), IVF_TRAIN_PER_LIST * nlist), replace=False
        )
        index.train(np.asarray(vectors[np.sort(sample)], dtype=np.float32))
    else:
        index = faiss.IndexFlatIP(dim)
    for start in range(0, len(vectors), ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_BLOCK], dtype=np.float32))
    _search_parameters(index)
    return index


def ivf_lists(vectors: int) -> int:
    """IVF_LISTS_PER_SQRT * sqrt(vectors), rounded to a power of two (at least 16)."""
    return int(max(16, 2 ** round(np.log2(IVF_LISTS_PER_SQRT * np.sqrt(max(vectors, 1))))))


def _search_parameters(index: faiss.Index) -> None:
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = IVF_NPROBE


def _kind_of(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexHNSWFlat):
        return "faiss-hnsw-ip"
    if isinstance(index, faiss.IndexIVF):
        return "faiss-ivf-sq8-ip"
    return "faiss-flat-ip"


# ---------------------------------------------------------------- keywords


class Bm25KeywordStore:
    """BM25 (bm25s) over the jieba words of each passage and the pinyin of its Chinese words.

    bm25s has no incremental update: after `upsert` or `delete` the arrays are rebuilt from
    the passages' texts on next use (about a second for the seed corpus).
    """

    kind = "bm25s"
    IDS = "ids.json"

    def __init__(self, ids: list[str], lexical: LexicalIndex | None, texts: dict[str, str] | None = None) -> None:
        self._ids = ids
        self._lexical = lexical
        self._texts = texts  # passage texts, kept only while changes are pending
        self._table: PassageTable | None = None
        self._pos = {pid: i for i, pid in enumerate(ids)}

    @classmethod
    def build(cls, passages: Sequence[Passage]) -> Bm25KeywordStore:
        return cls([], None, {p.id: p.text for p in passages})

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._ids)

    def attach(self, passages: PassageTable) -> None:
        """Give the store the passages it rebuilds from after a change (their texts are copied
        at the first change, not at load: a search never needs them)."""
        self._table = passages

    def _pending(self) -> dict[str, str]:
        if self._texts is None:
            if self._table is None:
                raise RuntimeError("Bm25KeywordStore.attach(passages) must come before a change")
            self._texts = {p.id: p.text for p in self._table}
        return self._texts

    def upsert(self, passages: Sequence[Passage]) -> None:
        self._pending().update({p.id: p.text for p in passages})
        self._lexical = None

    def delete(self, passage_ids: Collection[str]) -> None:
        texts = self._pending()
        for pid in passage_ids:
            texts.pop(pid, None)
        self._lexical = None

    @property
    def lexical(self) -> LexicalIndex:
        if self._lexical is None:
            assert self._texts is not None
            self._ids = sorted(self._texts)
            self._pos = {pid: i for i, pid in enumerate(self._ids)}
            self._lexical = LexicalIndex.build([self._texts[i] for i in self._ids])
        return self._lexical

    def search(self, tokens: Sequence[str], latin: Sequence[str], k: int) -> list[tuple[str, float]]:
        positions, scores = self.lexical.top_k(list(tokens), list(latin), k)
        return [(self._ids[i], s) for i, s in zip(positions.tolist(), scores.tolist(), strict=True)]

    def scores(self, tokens: Sequence[str], latin: Sequence[str], passage_ids: Collection[str]) -> dict[str, float]:
        lexical = self.lexical  # (re)builds the arrays and positions after a change
        known = [pid for pid in passage_ids if pid in self._pos]
        scores = lexical.scores_at(list(tokens), list(latin), np.array([self._pos[p] for p in known], np.int64))
        return {pid: 0.0 for pid in passage_ids} | dict(zip(known, scores.tolist(), strict=True))

    def idf(self, tokens: Sequence[str]) -> np.ndarray:
        return self.lexical.idf(list(tokens))

    def warm_up(self) -> None:
        _ = self.lexical

    def save(self, folder: Path) -> None:
        lexical = self.lexical
        (folder / "bm25").mkdir()
        lexical.save(folder / "bm25")
        (folder / "bm25" / self.IDS).write_text(json.dumps(self._ids), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Bm25KeywordStore:
        try:
            ids = json.loads((folder / "bm25" / cls.IDS).read_text(encoding="utf-8"))
            lexical = LexicalIndex.load(folder / "bm25")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise IndexCorruptError(f"The keyword index in {folder / 'bm25'} cannot be read ({exc}). {FIX}") from exc
        if not isinstance(ids, list) or len(ids) != lexical.bm25.scores["num_docs"]:
            raise IndexCorruptError(f"The keyword index in {folder / 'bm25'} does not match its passage ids. {FIX}")
        return cls([str(i) for i in ids], lexical)


def warm_tokenizer() -> None:
    tokenize("预热")


# ---------------------------------------------------------------- the backend


class LocalBackend:
    """The embedded store's life: files in the index folder, written whole into a new folder that
    is swapped into place, so a crash leaves the old index or the new one (qa.folder)."""

    kind = "faiss"
    leftovers: frozenset[str] = frozenset()

    def info(self, uri: str | None, token_env: str | None, folder: Path) -> StoreInfo:
        if uri:
            raise QAError("--uri is for --store milvus; the FAISS store lives in the index folder.")
        return StoreInfo("faiss", "faiss-flat-ip", 0, 0)

    def open(self, folder: Path, manifest: Manifest) -> Stores:
        passages = PassageTable.load(folder)
        if len(passages) != manifest.passage_count:
            raise IndexCorruptError(
                f"{folder / PassageTable.FILE} holds {len(passages)} passages, the manifest says "
                f"{manifest.passage_count}. Rebuild the index: qa index build --index {folder}"
            )
        vectors = None
        store = manifest.store
        if store is not None and manifest.model is not None:
            vectors = FaissVectorStore.load(folder, dimension=store.dimension, count=store.vectors)
        keywords = Bm25KeywordStore.load(folder)
        keywords.attach(passages)
        return Stores(passages, keywords, vectors)

    def for_update(self, folder: Path, old: Manifest | None, info: StoreInfo, dimension: int | None,
                   *, fresh: bool) -> Stores:  # fmt: skip
        if not fresh and old is not None:
            try:
                verify_files(folder, old)
                return self.open(folder, old)
            except QAError as exc:
                log.warning("The existing index in %s cannot be read (%s); rebuilding it whole.", folder, exc)
        table = PassageTable()
        keywords = Bm25KeywordStore.build([])
        keywords.attach(table)
        return Stores(table, keywords, FaissVectorStore.empty(dimension) if dimension else None)

    def commit(self, folder: Path, manifest: Manifest, stores: Stores) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        tmp.chmod(0o755)
        try:
            if not isinstance(stores.passages, PassageTable) or not isinstance(stores.keywords, Bm25KeywordStore):
                raise TypeError("the embedded store commits only its own stores")
            stores.passages.save(tmp)
            stores.keywords.save(tmp)
            if isinstance(stores.vectors, FaissVectorStore):
                stores.vectors.save(tmp)
            files = {
                p.relative_to(tmp).as_posix(): FileEntry(sha256_file(p), p.stat().st_size)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            (tmp / MANIFEST).write_text(replace(manifest, files=files).to_json(), encoding="utf-8")
            fsync_tree(tmp)
            swap_into_place(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def save_manifest(self, folder: Path, manifest: Manifest) -> None:
        write_atomic(folder / MANIFEST, manifest.to_json().encode("utf-8"))

    def verify(self, folder: Path, manifest: Manifest) -> None:
        """Nothing beyond the folder's checksums (qa.folder.verify_files), which every index gets."""

    def writer_lock(self, info: StoreInfo, folder: Path) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the folder's build lock is the only writer lock

    def shared_manifest(self, info: StoreInfo, folder: Path, newer_than: int) -> Manifest | None:
        return None  # the manifest lives in the folder only

    def generation(self, info: StoreInfo, folder: Path) -> int | None:
        return None


BACKEND = LocalBackend()
