"""Where an index keeps its data, behind three small protocols.

    PassageStore   the passages: text and provenance (`Source`s), by id
    VectorStore    unit vectors (a passage whole and each of its sentences), dense search
    KeywordStore   jieba tokens and BM25, keyword search

Search goes only through these protocols, so an embedded store (`stores.local`: FAISS,
bm25s and plain files in the index folder) and a server store (`stores.milvus`) are
interchangeable; `tests/test_stores.py` runs one contract against every implementation.

The life of an index (qa.index) reaches a store only through its `StoreBackend`: open,
commit, verify, the writer lock, the manifest it shares, found by kind in `BACKENDS`. Adding a
store is one module that defines `BACKEND`, one line in `BACKENDS`, and one test harness.
Scores are comparable across implementations: cosine similarity of unit vectors for
`VectorStore`, BM25 (Lucene variant, k1 1.2, b 0.75) for `KeywordStore`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from qa.errors import IndexMismatchError
from qa.split import Passage, Source, Unit  # Unit lives with the splitter that makes it

Neighbours = tuple[Passage | None, Passage | None]  # the passages before and after a place

if TYPE_CHECKING:
    from qa.manifest import Manifest, StoreInfo


@dataclass(frozen=True, slots=True)
class ScoredUnit:
    unit: Unit
    score: float


class PassageStore(Protocol):
    def __len__(self) -> int: ...

    def ids(self) -> set[str]: ...

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """The passages with these ids, in this order; unknown ids are left out."""
        ...

    def __iter__(self) -> Iterator[Passage]:
        """Every passage, in reading order (file, then position in the file)."""
        ...

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        """The passages before and after `source` in its document."""
        ...

    def neighbours_of(self, sources: Sequence[Source]) -> dict[tuple[str, int], Neighbours]:
        """`neighbours` of each of these places, by (file, order), in as few lookups as the
        store can: what one reply shows around its passages."""
        ...

    def upsert(self, passages: Sequence[Passage]) -> None: ...

    def delete(self, ids: Collection[str]) -> None: ...


class VectorStore(Protocol):
    @property
    def kind(self) -> str:
        """What kind of index holds the vectors, e.g. "faiss-flat-ip" (recorded in the manifest)."""
        ...

    @property
    def dimension(self) -> int: ...

    def __len__(self) -> int:
        """How many unit vectors it holds."""
        ...

    def upsert(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        """Add these units (replacing every earlier unit of the same passages)."""
        ...

    def delete(self, passage_ids: Collection[str]) -> None:
        """Remove every unit of these passages."""
        ...

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The `k` passages whose best unit is most similar to `query`: (passage id, cosine), best first."""
        ...

    def unit_scores(self, query: np.ndarray, passage_ids: Collection[str]) -> dict[str, list[ScoredUnit]]:
        """Every unit of these passages with its cosine to `query`, the whole passage first."""
        ...


class KeywordStore(Protocol):
    @property
    def kind(self) -> str: ...

    def __len__(self) -> int:
        """How many passages it holds."""
        ...

    def upsert(self, passages: Sequence[Passage]) -> None: ...

    def delete(self, passage_ids: Collection[str]) -> None: ...

    def search(self, tokens: Sequence[str], latin: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The `k` best passages by BM25 of `tokens` over their words plus `latin` over their
        pinyin (see qa.lexical), best first; passages scoring 0 are left out."""
        ...

    def scores(self, tokens: Sequence[str], latin: Sequence[str], passage_ids: Collection[str]) -> dict[str, float]:
        """The same BM25 score for these passages (0.0 where nothing matches)."""
        ...

    def idf(self, tokens: Sequence[str]) -> np.ndarray:
        """Inverse document frequency of each token; a token no passage uses gets the highest value."""
        ...


def check_query(query: np.ndarray, dimension: int) -> np.ndarray:
    """The query as a flat float32 vector, refused when its dimension is not the index's."""
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != dimension:
        raise IndexMismatchError(
            f"The query vector has dimension {q.shape[0]} but the index holds vectors of dimension "
            f"{dimension}: the model differs from the one the index was built with. Rebuild it: qa index build"
        )
    return q


@dataclass
class Stores:
    """The three stores of one index."""

    passages: PassageStore
    keywords: KeywordStore
    vectors: VectorStore | None = None

    def warm_up(self) -> None:
        """Let each store do now the one-time work its first query would otherwise pay for."""
        for store in (self.passages, self.keywords, self.vectors):
            warm = getattr(store, "warm_up", None)
            if warm is not None:
                warm()


class StoreBackend(Protocol):
    """What the life of an index needs from one kind of store (`StoreInfo.kind`)."""

    kind: str
    # Files a first build that failed may leave in a new index folder (it may be reused).
    leftovers: frozenset[str]

    def info(self, uri: str | None, token_env: str | None, folder: Path) -> StoreInfo:
        """The store a new index on this backend writes to (raises QAError on bad arguments)."""
        ...

    def open(self, folder: Path, manifest: Manifest) -> Stores:
        """The stores of an existing, verified index."""
        ...

    def for_update(self, folder: Path, old: Manifest | None, info: StoreInfo, dimension: int | None,
                   *, fresh: bool) -> Stores:  # fmt: skip
        """The stores a build changes: the existing ones, or empty ones when `fresh`."""
        ...

    def commit(self, folder: Path, manifest: Manifest, stores: Stores) -> None:
        """Make `stores` and `manifest` durable together: after a crash, the old state or the new."""
        ...

    def save_manifest(self, folder: Path, manifest: Manifest) -> None:
        """Write a manifest whose stores did not change (a new calibration)."""
        ...

    def verify(self, folder: Path, manifest: Manifest) -> None:
        """Raise IndexCorruptError unless the stored data is what `manifest` describes."""
        ...

    def writer_lock(self, info: StoreInfo, folder: Path) -> contextlib.AbstractContextManager[None]:
        """Held by whoever writes to this store (the folder's build lock is held as well)."""
        ...

    def shared_manifest(self, info: StoreInfo, folder: Path, newer_than: int) -> Manifest | None:
        """A newer manifest another process wrote into the store itself, if the store keeps one."""
        ...

    def generation(self, info: StoreInfo, folder: Path) -> int | None:
        """The newest generation the store itself knows of (None: the folder's manifest decides)."""
        ...


# kind -> the module that defines its BACKEND; imported on first use (Milvus is heavy).
BACKENDS = {"faiss": "qa.stores.local", "milvus": "qa.stores.milvus"}


def backend(kind: str) -> StoreBackend:
    """The backend of a store kind (raises IndexMismatchError for a kind this qa does not know)."""
    module = BACKENDS.get(kind)
    if module is None:
        raise IndexMismatchError(
            f"The index uses a store of kind {kind!r}, which this qa does not know "
            f"(it knows {', '.join(sorted(BACKENDS))}). Upgrade qa, or rebuild the index: qa index build --force"
        )
    found: StoreBackend = importlib.import_module(module).BACKEND
    return found
