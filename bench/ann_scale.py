"""Dense search at a million passages: the FAISS index chosen by build time, memory, load time,
and the latency at which recall@10 reaches 0.95 against exact search.

    python bench/ann_scale.py                          # 1M passages (~4M unit vectors)
    python bench/ann_scale.py --passages 100000        # a quicker run
    python bench/ann_scale.py --json > ann.json

The vectors are bench/scale.py's: recombined seed sentences whose vectors are composed from the
real e5 vectors of their clauses (see that file's docstring for why, and how close they are).
They are generated once and kept in the qa cache (`bench/ann-<n>/`, about 6 GB at 1M passages)
as a plain .npy that later runs memory-map. The questions are the real ones of tests/data,
embedded for real.

Search runs as `FaissVectorStore.search` + `unit_scores` do in `Retriever`: the index proposes
units, the first CANDIDATES passages they belong to are scored exactly over all their units
(from the memory-mapped vectors), and the best 10 are compared with exact search over every
unit. Timings are single-threaded FAISS (as the store pins it) and include the exact rescoring.

Centering. e5's vectors share a large common direction (unrelated sentences meet at cosine
~0.8), which crowds every list of an IVF index. For inner product, q·x = q·(x − μ) + q·μ and
q·μ is the same for every x, so an index over x − μ ranks exactly as one over x while its
k-means sees the spread of the data. Both are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import scale  # noqa: E402

from qa.cache import cache_root  # noqa: E402
from qa.search import CANDIDATES  # noqa: E402

BLOCK = 250_000  # rows per step when vectors are added or scanned


def generate(n: int, enc: Any) -> tuple[np.ndarray, np.ndarray]:
    """The unit vectors of `n` recombined passages (memory-mapped) and each unit's passage number,
    generated on the first run and read back after."""
    folder = cache_root() / "bench" / f"ann-{n}"
    vec_path, pid_path = folder / "vectors.npy", folder / "passages.npy"
    if not (vec_path.exists() and pid_path.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        pool = scale.Pool.load(enc)
        parts, owners, number = [], [], 0
        t = time.perf_counter()
        for passages, _tokens, _pinyin, ids, _spans, vectors in scale.Corpus(pool, n).chunks():
            first = {pid: i for i, pid in enumerate(dict.fromkeys(ids.tolist()))}
            owners.append(np.array([number + first[pid] for pid in ids.tolist()], np.int32))
            number += len(passages)
            parts.append(vectors.astype(np.float16))  # half the memory while generating; float32 on disk
            print(f"  generated {number:,} passages ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
        total = sum(len(p) for p in parts)
        out = np.lib.format.open_memmap(folder / "vectors.tmp.npy", "w+", np.float32, (total, parts[0].shape[1]))
        at = 0
        for p in parts:
            out[at : at + len(p)] = p.astype(np.float32)
            at += len(p)
        out.flush()
        del out
        np.save(folder / "passages.tmp.npy", np.concatenate(owners), allow_pickle=False)
        os.replace(folder / "passages.tmp.npy", pid_path)
        os.replace(folder / "vectors.tmp.npy", vec_path)
    return np.load(vec_path, mmap_mode="r"), np.load(pid_path)


def exact_top(vectors: np.ndarray, owner: np.ndarray, queries: np.ndarray, k: int) -> list[dict[int, float]]:
    """The exact top-k passages (best unit cosine) of each query, scanning every unit in blocks."""
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # units of a passage are contiguous
    best = np.full((len(queries), int(owner[-1]) + 1), -2.0, np.float32)
    for lo in range(0, len(starts), BLOCK // 4):
        a = starts[lo]
        hi = lo + BLOCK // 4
        b = starts[hi] if hi < len(starts) else len(vectors)
        scores = np.asarray(vectors[a:b]) @ queries.T  # (units, queries)
        per = np.maximum.reduceat(scores, starts[lo:hi] - a, axis=0)  # best unit of each passage
        best[:, owner[starts[lo:hi]]] = per.T
    out = []
    for row in best:
        top = np.argpartition(-row, k)[:k]
        out.append({int(i): float(row[i]) for i in top})
    return out


def cached_exact(folder: Path, vectors: np.ndarray, owner: np.ndarray, queries: np.ndarray) -> list[dict[int, float]]:
    """`exact_top` for these questions, kept beside the vectors (keyed by the question vectors)."""
    import hashlib

    key = hashlib.sha256(queries.tobytes()).hexdigest()[:16]
    path = folder / f"exact-{key}.json"
    if path.exists():
        return [{int(p): s for p, s in row.items()} for row in json.loads(path.read_text())]
    exact = exact_top(vectors, owner, queries, 10)
    path.write_text(json.dumps([{str(p): s for p, s in row.items()} for row in exact]))
    return exact


class Probe:
    """Dense search as the store runs it: the index proposes `units` units, the first `candidates`
    passages they belong to (the store: CANDIDATES) are scored exactly over their units, the best
    `k` returned."""

    def __init__(self, index: Any, vectors: np.ndarray, owner: np.ndarray, units: int = 4 * CANDIDATES,
                 candidates: int = CANDIDATES) -> None:  # fmt: skip
        self.index, self.vectors, self.owner = index, vectors, owner
        self.units, self.candidates = units, candidates
        self.starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        self.ends = np.r_[self.starts[1:], len(owner)]
        self.first = np.full(int(owner[-1]) + 1, -1, np.int64)
        self.first[owner[self.starts]] = np.arange(len(self.starts))

    def search(self, q: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
        _, ids = self.index.search(q.reshape(1, -1), self.units)
        passages = list(dict.fromkeys(int(self.owner[i]) for i in ids[0] if i >= 0))[: self.candidates]
        groups = self.first[passages]
        rows = np.concatenate([np.arange(self.starts[g], self.ends[g]) for g in groups])
        scores = np.asarray(self.vectors[np.sort(rows)]) @ q
        by_row = dict(zip(np.sort(rows).tolist(), scores.tolist(), strict=True))
        scored = [
            (p, max(by_row[r] for r in range(self.starts[g], self.ends[g])))
            for p, g in zip(passages, groups, strict=True)
        ]
        return sorted(scored, key=lambda x: -x[1])[:k]


def recall(found: list[list[tuple[int, float]]], exact: list[dict[int, float]], k: int = 10) -> float:
    """Share of the exact top-k found; a passage whose exact score reaches the k-th counts (ties)."""
    total = 0.0
    for got, truth in zip(found, exact, strict=True):
        kth = min(truth.values())
        total += min(k, sum(1 for p, s in got[:k] if p in truth or s >= kth - 1e-6)) / k
    return total / len(found)


def build(kind: str, vectors: np.ndarray, mean: np.ndarray | None, nlist: int) -> tuple[Any, float]:
    """An IVF index over the vectors (minus `mean` when given), trained on a sample."""
    import faiss

    dim = vectors.shape[1]
    t = time.perf_counter()
    index = faiss.index_factory(dim, f"IVF{nlist}_HNSW32,{kind}", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = np.asarray(vectors[np.sort(rng.choice(len(vectors), min(len(vectors), 40 * nlist), replace=False))])
    index.train(sample - mean if mean is not None else sample)
    for a in range(0, len(vectors), BLOCK):
        block = np.asarray(vectors[a : a + BLOCK], dtype=np.float32)
        index.add(block - mean if mean is not None else block)
    return index, time.perf_counter() - t


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--codes", default="SQ8,PQ64", help="IVF codes to build, comma-separated")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 2·sqrt(vectors), a power of two)")
    parser.add_argument("--nprobe", default="16,32,64,128,256")
    parser.add_argument("--centering", default="off,on", help="measure raw vectors, centered ones, or both")
    parser.add_argument("--units", default=str(4 * CANDIDATES), help="units the index proposes (comma-separated)")
    parser.add_argument("--candidates", default=str(CANDIDATES), help="passages scored exactly (comma-separated)")
    parser.add_argument("--reuse", action="store_true", help="search the index files an earlier run wrote")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import faiss

    from qa.embed import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    t = time.perf_counter()
    vectors, owner = generate(args.passages, enc)
    load_s = time.perf_counter() - t
    texts = scale.questions(args.queries)
    queries = np.stack([enc.encode_query(t) for t in texts]).astype(np.float32)
    out: dict[str, Any] = {
        "passages": int(owner[-1]) + 1, "vectors": len(vectors), "queries": len(queries),
        "cpus": os.cpu_count(), "vectors_open_s": round(load_s, 2), "rows": [],
    }  # fmt: skip
    t = time.perf_counter()
    folder = cache_root() / "bench" / f"ann-{args.passages}"
    exact = cached_exact(folder, vectors, owner, queries)
    out["exact_ms_per_query"] = round((time.perf_counter() - t) * 1000 / len(queries), 1)  # ~0 when cached
    print(f"exact search: {out['exact_ms_per_query']} ms a question (2 threads, blocks)", file=sys.stderr, flush=True)
    nlist = args.nlist or int(2 ** round(np.log2(2 * np.sqrt(len(vectors)))))
    mean = np.asarray(vectors[:: max(1, len(vectors) // 200_000)]).mean(axis=0).astype(np.float32)
    for codes in args.codes.split(","):
        for centering in args.centering.split(","):
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            before = rss_mb()
            path = folder / f"IVF{nlist}-{codes}-{centering}.faiss"
            build_s = float("nan")
            if not (args.reuse and path.exists()):
                index, build_s = build(codes, vectors, mean if centering == "on" else None, nlist)
                faiss.write_index(index, str(path))
                del index
            t = time.perf_counter()
            index = faiss.read_index(str(path))
            read_s = time.perf_counter() - t
            faiss.omp_set_num_threads(1)
            grid = [(int(u), int(c), int(n)) for u in args.units.split(",") for c in args.candidates.split(",")
                    for n in args.nprobe.split(",")]  # fmt: skip
            for units, candidates, nprobe in grid:
                probe = Probe(index, vectors, owner, max(units, 4 * candidates), candidates)
                index.nprobe = nprobe
                # The HNSW quantizer finds the lists to probe; at its default efSearch (16) it finds
                # too few good ones, which capped recall at 0.70-0.73 on 2026-12-05 whatever nprobe.
                faiss.downcast_index(index.quantizer).hnsw.efSearch = 2 * nprobe
                probe.search(queries[0])
                times, found = [], []
                for q in queries:
                    t = time.perf_counter()
                    found.append(probe.search(q))
                    times.append((time.perf_counter() - t) * 1000)
                row = {
                    "index": f"IVF{nlist}_HNSW32,{codes}", "centered": centering == "on", "nprobe": nprobe,
                    "units": max(units, 4 * candidates), "candidates": candidates,
                    "build_s": round(build_s, 1), "index_mb": round(path.stat().st_size / 2**20, 1),
                    "load_s": round(read_s, 2), "rss_added_mb": round(rss_mb() - before, 1),
                    "recall@10": round(recall(found, exact), 4),
                    "p50_ms": round(float(np.percentile(times, 50)), 2),
                    "p95_ms": round(float(np.percentile(times, 95)), 2),
                    "load_avg": round(os.getloadavg()[0], 2),
                }  # fmt: skip
                out["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            del index
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(table(out))


def table(out: dict[str, Any]) -> str:
    lines = [
        f"{out['passages']:,} passages, {out['vectors']:,} unit vectors, {out['queries']} questions; "
        f"exact search {out['exact_ms_per_query']} ms a question",
        "",
        "| index | centered | nprobe | units | passages rescored | build s | index MB | load s | RSS added MB | recall@10 | p50 ms | p95 ms "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lines.append(
            f"| {r['index']} | {'yes' if r['centered'] else 'no'} | {r['nprobe']} | {r.get('units', '')} | {r.get('candidates', '')} | "
            f"{r['build_s']} | {r['index_mb']} | "
            f"{r['load_s']} | {r['rss_added_mb']} | {r['recall@10']} | {r['p50_ms']} | {r['p95_ms']} | {r['load_avg']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
