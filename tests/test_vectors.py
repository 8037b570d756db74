from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qa.errors import IndexCorruptError, IndexMismatchError
from qa.vectors import FaissStore


def _unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("approximate", [False, True])
def test_build_search_save_load(tmp_path: Path, approximate: bool):
    data = _unit(300)
    store = FaissStore.build(data, approximate=approximate)
    assert store.kind == ("faiss-hnsw-ip" if approximate else "faiss-flat-ip")
    scores, ids = store.search(data[7], 3)
    assert ids[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5)
    store.save(tmp_path / "v.faiss")
    again = FaissStore.load(tmp_path / "v.faiss", kind=store.kind, dimension=16, count=300)
    assert again.search(data[7], 3)[1].tolist() == ids.tolist()


def test_wrong_dimension_and_bad_files_are_named(tmp_path: Path):
    store = FaissStore.build(_unit(10))
    with pytest.raises(IndexMismatchError, match="dimension 8.*dimension 16"):
        store.search(np.ones(8, np.float32), 3)
    store.save(tmp_path / "v.faiss")
    with pytest.raises(IndexCorruptError, match="manifest says 11 of dimension 16"):
        FaissStore.load(tmp_path / "v.faiss", kind=store.kind, dimension=16, count=11)
    (tmp_path / "bad.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorruptError, match="bad.faiss is not a readable FAISS index"):
        FaissStore.load(tmp_path / "bad.faiss", kind=store.kind, dimension=16, count=10)
