"""Stage 3c: the vector store behind a small interface; FAISS is the engine today.

Vectors are L2-normalized, so inner product is cosine similarity. Small collections use
an exact `IndexFlatIP`; from `HNSW_MIN_VECTORS` on, an approximate HNSW graph (see the measurements below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from qa.errors import IndexCorruptError, IndexMismatchError

# Measured with `make bench` (synthetic clustered 384-d unit vectors, 2 cores): exact search
# takes ~17 ms a query at 100k vectors; HNSW (M 32) needs efSearch 1024 to reach recall@10
# 0.92 there (0.47 at efSearch 128), at ~2.5 ms. Exact search stays fast enough well past the
# size where its cost starts to matter, so HNSW starts at 200k.
HNSW_MIN_VECTORS = 200_000
HNSW_M = 32
HNSW_EF_SEARCH = 1024


class VectorStore(Protocol):
    kind: str

    @property
    def dimension(self) -> int: ...

    def __len__(self) -> int: ...

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: Path) -> None: ...


class FaissStore:
    """A FAISS index over unit vectors: exact for small collections, HNSW for large ones."""

    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind

    @classmethod
    def build(cls, vectors: np.ndarray, *, approximate: bool | None = None) -> FaissStore:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        use_hnsw = n >= HNSW_MIN_VECTORS if approximate is None else approximate
        index: faiss.Index
        if use_hnsw:
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = HNSW_EF_SEARCH
            kind = "faiss-hnsw-ip"
        else:
            index = faiss.IndexFlatIP(dim)
            kind = "faiss-flat-ip"
        if n:
            index.add(vectors)
        return cls(index, kind)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids of the `k` nearest vectors (ids of -1 dropped)."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dimension:
            raise IndexMismatchError(
                f"The query vector has dimension {q.shape[1]} but the index holds vectors of dimension "
                f"{self.dimension}: the model differs from the one the index was built with. "
                f"Rebuild it: qa index build"
            )
        k = min(k, len(self))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, ids = self.index.search(q, k)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, *, kind: str, dimension: int, count: int) -> FaissStore:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"{path} is not a readable FAISS index ({exc}). Rebuild it: qa index build"
            ) from exc
        if index.d != dimension or index.ntotal != count:
            raise IndexCorruptError(
                f"{path} holds {index.ntotal} vectors of dimension {index.d}, but the manifest says "
                f"{count} of dimension {dimension}. Rebuild it: qa index build"
            )
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(index, kind)
