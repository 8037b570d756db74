"""The embedded stores: plain files in the index folder, FAISS for vectors, bm25s for keywords.

    passages.jsonl        one passage per line: id, text, sources
    units.npy             passage id of each unit vector (fixed-width unicode, no pickle)
    spans.npy             int32 (start, end) of each unit in its passage's text
    vectors.npy           float32 unit vectors, L2-normalized; memory-mapped on load
    dense.faiss           FAISS index over vectors.npy (exact below HNSW_MIN_VECTORS)
    bm25/                 bm25s arrays (.npy, allow_pickle=False) and their passage ids

Each store changes in memory (`upsert`, `delete`) and writes its files with `save(folder)`;
the index writes a whole new folder and renames it into place (see qa.index).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

from qa.errors import IndexCorruptError, IndexMismatchError
from qa.lexical import LexicalIndex, tokenize
from qa.split import Passage, Source
from qa.stores import ScoredUnit, Unit

# Measured with `make bench` (synthetic clustered 384-d unit vectors, 2 cores): exact search
# takes ~17 ms a query at 100k vectors; HNSW (M 32) needs efSearch 1024 to reach recall@10
# 0.92 there (0.47 at efSearch 128), at ~2.5 ms. Exact search stays fast enough well past the
# size where its cost starts to matter, so HNSW starts at 200k.
HNSW_MIN_VECTORS = 200_000
HNSW_M = 32
HNSW_EF_SEARCH = 1024
ID_DTYPE = "<U16"  # passage ids are 16 hex digits (qa.split.passage_id)
FIX = "Rebuild the index: qa index build --force"


# ---------------------------------------------------------------- passages


def passage_to_json(p: Passage) -> str:
    sources = [
        {"file": s.file, "title": s.title, "paragraph": s.paragraph, "span": [s.start, s.end], "order": s.order,
         "page": s.page}
        for s in p.sources
    ]  # fmt: skip
    return json.dumps({"id": p.id, "text": p.text, "sources": sources}, ensure_ascii=False)


def passage_from_json(line: str) -> Passage:
    d = json.loads(line)
    sources = tuple(
        Source(s["file"], s["title"], int(s["paragraph"]), int(s["span"][0]), int(s["span"][1]), int(s["order"]),
               int(s["page"]) if s.get("page") is not None else None)
        for s in d["sources"]
    )  # fmt: skip
    return Passage(str(d["id"]), str(d["text"]), sources)


def reading_order(p: Passage) -> tuple[str, int]:
    return (p.source.file, p.source.order)


class PassageTable:
    """Passages in memory, by id, saved as `passages.jsonl` in reading order."""

    FILE = "passages.jsonl"

    def __init__(self, passages: Sequence[Passage] = ()) -> None:
        self._by_id: dict[str, Passage] = {}
        self._at: dict[tuple[str, int], str] = {}
        self.upsert(passages)

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> set[str]:
        return set(self._by_id)

    def get(self, ids: Sequence[str]) -> list[Passage]:
        return [self._by_id[i] for i in ids if i in self._by_id]

    def __iter__(self) -> Iterator[Passage]:
        return iter(sorted(self._by_id.values(), key=reading_order))

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        before = self._at.get((source.file, source.order - 1))
        after = self._at.get((source.file, source.order + 1))
        return (self._by_id.get(before) if before else None, self._by_id.get(after) if after else None)

    def upsert(self, passages: Sequence[Passage]) -> None:
        self.delete([p.id for p in passages if p.id in self._by_id])
        for p in passages:
            self._by_id[p.id] = p
            self._at.update({(s.file, s.order): p.id for s in p.sources})

    def delete(self, ids: Collection[str]) -> None:
        for i in ids:
            p = self._by_id.pop(i, None)
            for s in p.sources if p else ():
                if self._at.get((s.file, s.order)) == i:
                    del self._at[(s.file, s.order)]

    def save(self, folder: Path) -> None:
        with (folder / self.FILE).open("w", encoding="utf-8") as f:
            f.writelines(passage_to_json(p) + "\n" for p in self)

    @classmethod
    def load(cls, folder: Path) -> PassageTable:
        try:
            with (folder / cls.FILE).open(encoding="utf-8") as f:
                return cls([passage_from_json(line) for line in f if line.strip()])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise IndexCorruptError(f"{folder / cls.FILE} cannot be read ({exc}). {FIX}") from exc


# ---------------------------------------------------------------- vectors


class FaissVectorStore:
    """Unit vectors in a numpy array (memory-mapped when loaded) and a FAISS index over them:
    exact inner product for small collections, HNSW from `HNSW_MIN_VECTORS` on."""

    def __init__(self, dimension: int, passages: np.ndarray, spans: np.ndarray, vectors: np.ndarray,
                 index: faiss.Index | None = None) -> None:  # fmt: skip
        self._dimension = dimension
        self._passages = passages  # (n,) passage id of each unit
        self._spans = spans  # (n, 2) int32
        self._vectors = vectors  # (n, dimension) float32
        self._index = index
        self._rows: dict[str, np.ndarray] | None = None

    @classmethod
    def empty(cls, dimension: int) -> FaissVectorStore:
        return cls(dimension, np.zeros(0, ID_DTYPE), np.zeros((0, 2), np.int32), np.zeros((0, dimension), np.float32))

    @property
    def kind(self) -> str:
        return "faiss-hnsw-ip" if len(self) >= HNSW_MIN_VECTORS else "faiss-flat-ip"

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

    # ------------------------------------------------------------ search

    def _check(self, query: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._dimension:
            raise IndexMismatchError(
                f"The query vector has dimension {q.shape[0]} but the index holds vectors of dimension "
                f"{self._dimension}: the model differs from the one the index was built with. Rebuild it: qa index build"
            )
        return q

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = _faiss_index(np.ascontiguousarray(self._vectors, dtype=np.float32), self.kind)
        return self._index

    @property
    def rows(self) -> dict[str, np.ndarray]:
        """Row numbers of each passage's units, the whole passage (span starting at 0, longest) first."""
        if self._rows is None:
            order = np.lexsort((-(self._spans[:, 1] - self._spans[:, 0]), self._spans[:, 0], self._passages))
            ids = self._passages[order]
            cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            self._rows = {str(g[0]): rows for g, rows in zip(np.split(ids, cuts), np.split(order, cuts), strict=True)}
        return self._rows

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
        vectors = np.asarray(self._vectors)  # a plain view of the memory map: no memmap object per lookup
        out: dict[str, list[ScoredUnit]] = {}
        for pid in passage_ids:
            rows = self.rows.get(pid)
            if rows is None:
                continue
            scores = (vectors[rows] @ q).tolist()
            out[pid] = [
                ScoredUnit(Unit(pid, start, end), score)
                for (start, end), score in zip(self._spans[rows].tolist(), scores, strict=True)
            ]
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
            vectors = np.load(folder / "vectors.npy", allow_pickle=False, mmap_mode="r")
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
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(dimension, passages, spans, vectors, index)


def _faiss_index(vectors: np.ndarray, kind: str) -> faiss.Index:
    dim = vectors.shape[1]
    index: faiss.Index
    if kind == "faiss-hnsw-ip":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    return index


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
        self._pos = {pid: i for i, pid in enumerate(ids)}

    @classmethod
    def build(cls, passages: Sequence[Passage]) -> Bm25KeywordStore:
        return cls([], None, {p.id: p.text for p in passages})

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._ids)

    def attach(self, passages: PassageTable) -> None:
        """Give the store the passage texts it needs to rebuild after a change."""
        if self._texts is None:
            self._texts = {p.id: p.text for p in passages}

    def upsert(self, passages: Sequence[Passage]) -> None:
        if self._texts is None:
            raise RuntimeError("Bm25KeywordStore.attach(passages) must come before a change")
        self._texts.update({p.id: p.text for p in passages})
        self._lexical = None

    def delete(self, passage_ids: Collection[str]) -> None:
        if self._texts is None:
            raise RuntimeError("Bm25KeywordStore.attach(passages) must come before a change")
        for pid in passage_ids:
            self._texts.pop(pid, None)
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
        scores = self.lexical.scores(list(tokens), list(latin))
        if not scores.size:
            return []
        k = min(k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(self._ids[i], float(scores[i])) for i in top.tolist() if scores[i] > 0]

    def scores(self, tokens: Sequence[str], latin: Sequence[str], passage_ids: Collection[str]) -> dict[str, float]:
        scores = self.lexical.scores(list(tokens), list(latin))
        return {pid: float(scores[self._pos[pid]]) if pid in self._pos else 0.0 for pid in passage_ids}

    def idf(self, tokens: Sequence[str]) -> np.ndarray:
        return self.lexical.idf(list(tokens))

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
