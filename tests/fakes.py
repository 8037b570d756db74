"""A tiny deterministic encoder for fast tests of index and search logic (like llm's EmbedDemo).

Character 1- and 2-grams hashed into a vector: it shares enough surface with the real
encoder to exercise the index and the search, and it lives in the tests, not the package.
"""

from __future__ import annotations

import hashlib

import numpy as np

from qa.split import normalize


class HashEncoder:
    """A tiny deterministic encoder (character n-grams hashed into a vector) for fast tests.

    It shares enough surface with the real encoder to test index and search logic.
    """

    def __init__(self, dimension: int = 64, name: str = "test/hash-encoder") -> None:
        self.name = name
        self._dimension = dimension
        self.calls = 0

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def source(self) -> str:
        return "built-in test encoder"

    def _one(self, text: str) -> np.ndarray:
        key = normalize(text)
        v = np.zeros(self._dimension, dtype=np.float32)
        for n in (1, 2):
            for i in range(len(key) - n + 1):
                h = int.from_bytes(hashlib.blake2b(key[i : i + n].encode(), digest_size=4).digest(), "little")
                v[h % self._dimension] += 1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        self.calls += len(texts)
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self._dimension), np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        self.calls += 1
        return self._one(text)
