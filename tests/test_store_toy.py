"""A third store, written here and nowhere in qa/: passages in a dict, vectors in a numpy array
searched exactly, keywords through qa.lexical's BM25 (the contract wants bm25s's scores), and
"closing" as a JSON and .npy round trip through the one row encoding every store uses
(qa.stores.rows). It passes the same contract as the embedded and the Milvus stores, which is the
test of the seam: a new store needs no change to qa/."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from qa.split import Passage, Source
from qa.stores import ScoredUnit, Stores, Unit, check_query
from qa.stores.local import Bm25KeywordStore
from qa.stores.rows import source_from_dict, source_to_dict
from tests.test_stores import DIM, Harness, StoreContract


class DictPassages:
    """Passages by id; a document's passages in order, for neighbours."""

    def __init__(self) -> None:
        self._by_id: dict[str, Passage] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> set[str]:
        return set(self._by_id)

    def get(self, ids: Sequence[str]) -> list[Passage]:
        return [self._by_id[i] for i in ids if i in self._by_id]

    def __iter__(self) -> Iterator[Passage]:
        return iter(sorted(self._by_id.values(), key=lambda p: (p.sources[0].file, p.sources[0].order)))

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        places = {(s.file, s.order): p for p in self._by_id.values() for s in p.sources}
        return places.get((source.file, source.order - 1)), places.get((source.file, source.order + 1))

    def neighbours_of(self, sources: Sequence[Source]) -> dict[tuple[str, int], tuple[Passage | None, Passage | None]]:
        return {(s.file, s.order): self.neighbours(s) for s in sources}

    def upsert(self, passages: Sequence[Passage]) -> None:
        for p in passages:
            mine = {(s.file, s.order) for s in p.sources}
            for other in list(self._by_id.values()):  # a place holds one passage: a moved one leaves it
                kept = tuple(s for s in other.sources if (s.file, s.order) not in mine)
                if other.id != p.id and len(kept) != len(other.sources):
                    if kept:
                        self._by_id[other.id] = Passage(other.id, other.text, kept)
                    else:
                        del self._by_id[other.id]
            self._by_id[p.id] = p

    def delete(self, ids: Collection[str]) -> None:
        for i in ids:
            self._by_id.pop(i, None)


class ArrayVectors:
    """Unit vectors in one array, searched exactly: a passage scores as its best unit."""

    kind = "toy-exact"

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._units: list[Unit] = []
        self._vectors = np.zeros((0, dimension), np.float32)

    def __len__(self) -> int:
        return len(self._units)

    def upsert(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        self.delete({u.passage for u in units})
        self._units += list(units)
        self._vectors = np.vstack([self._vectors, np.asarray(vectors, np.float32)])

    def delete(self, passage_ids: Collection[str]) -> None:
        keep = [i for i, u in enumerate(self._units) if u.passage not in set(passage_ids)]
        self._units = [self._units[i] for i in keep]
        self._vectors = self._vectors[keep]

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        scores = self._vectors @ check_query(query, self.dimension)
        best: dict[str, float] = {}
        for i in np.argsort(-scores, kind="stable"):
            best.setdefault(self._units[i].passage, float(scores[i]))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def unit_scores(self, query: np.ndarray, passage_ids: Collection[str]) -> dict[str, list[ScoredUnit]]:
        q = check_query(query, self.dimension)
        out: dict[str, list[ScoredUnit]] = {}
        for unit, vector in zip(self._units, self._vectors, strict=True):
            if unit.passage in passage_ids:
                out.setdefault(unit.passage, []).append(ScoredUnit(unit, float(vector @ q)))
        return out


def _reopened(stores: Stores, folder: Path) -> Stores:
    """Close and open: passages as JSON rows (qa.stores.rows), vectors as .npy, keywords rebuilt."""
    assert isinstance(stores.passages, DictPassages) and isinstance(stores.vectors, ArrayVectors)
    rows = [{"id": p.id, "text": p.text, "sources": [source_to_dict(s) for s in p.sources]} for p in stores.passages]
    (folder / "passages.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    np.save(folder / "vectors.npy", stores.vectors._vectors, allow_pickle=False)
    units = [[u.passage, u.start, u.end] for u in stores.vectors._units]
    (folder / "units.json").write_text(json.dumps(units), encoding="utf-8")

    passages = DictPassages()
    passages.upsert(
        [
            Passage(r["id"], r["text"], tuple(source_from_dict(s) for s in r["sources"]))
            for r in json.loads((folder / "passages.json").read_text(encoding="utf-8"))
        ]
    )
    vectors = ArrayVectors(stores.vectors.dimension)
    vectors.upsert(
        [Unit(p, s, e) for p, s, e in json.loads((folder / "units.json").read_text(encoding="utf-8"))],
        np.load(folder / "vectors.npy", allow_pickle=False),
    )
    keywords = Bm25KeywordStore.build(list(passages))
    keywords.attach(passages)  # type: ignore[arg-type]
    return Stores(passages, keywords, vectors)


class TestToyStores(StoreContract):
    @pytest.fixture()
    def harness(self, tmp_path: Path) -> Harness:
        passages = DictPassages()
        keywords = Bm25KeywordStore.build([])
        keywords.attach(passages)  # type: ignore[arg-type]
        return Harness(Stores(passages, keywords, ArrayVectors(DIM)), lambda stores: _reopened(stores, tmp_path))
