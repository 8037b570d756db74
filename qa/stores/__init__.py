"""Where an index keeps its data, behind three small protocols.

    PassageStore   the passages: text and provenance (`Source`s), by id
    VectorStore    unit vectors (a passage whole and each of its sentences), dense search
    KeywordStore   jieba tokens and BM25, keyword search

Search goes only through these protocols, so an embedded store (`stores.local`: FAISS,
bm25s and plain files in the index folder) and a server store (`stores.milvus`) are
interchangeable; `tests/test_stores.py` runs one contract against every implementation.
Scores are comparable across implementations: cosine similarity of unit vectors for
`VectorStore`, BM25 (Lucene variant, k1 1.2, b 0.75) for `KeywordStore`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qa.errors import IndexMismatchError
from qa.split import Passage, Source, Unit  # Unit lives with the splitter that makes it


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
