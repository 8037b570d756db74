"""The Milvus stores at scale, on Milvus Lite, beside the embedded stores (FAISS + bm25s) on the
same corpus: the stores' part of a search, its round trips, and dense recall against exact search.

    python bench/milvus_scale.py [--passages 100000] [--queries 200] [--nprobe 1,128]
                                 [--out bench/milvus_scale.json]

Corpus: bench/scale.py's recombined seed text (passages of 2-4 sentences, each sentence 2-3
clauses of the seed documents) with its vectors composed from the real e5 vectors of the
clauses, so that recall means what it means for e5 (random vectors made every ANN index look
bad: FAISS HNSW had recall@10 0.26 on them). Queries: real questions (tests/data), embedded by
the real model, their words as the search parses them.

Measured for each store set, per question (the calls one Retriever.search makes of its stores:
qa.search.gather_candidates, then idf), after a warm-up pass:
- p50 / p95 of the stores' part, and the Milvus round trips it made (calls to the server);
- dense recall@10 of the search as Retriever runs it (the vector store proposes CANDIDATES
  passages, their units are scored exactly, the best 10 kept) against numpy over every unit,
  counting ties (bench/scale.py's recall_at).

Store sets: FAISS as the index builds it at this size (HNSW from 100k vectors), bm25s, the
passage table; Milvus Lite with the units FLAT (exact), then the same collection re-indexed
IVF_FLAT (nlist 1024) at each --nprobe; and FLAT read at Strong and Bounded consistency.
FAISS is measured twice: as the index builds it (HNSW here) and exact (flat), for a comparison
at equal recall with Milvus Lite's FLAT. Printed and written as JSON, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import scale  # noqa: E402

from qa.embed import SentenceTransformerEncoder  # noqa: E402
from qa.index import Stores  # noqa: E402
from qa.lexical import LexicalIndex, latin_terms, tokenize  # noqa: E402
from qa.search import CANDIDATES, Query, gather_candidates  # noqa: E402
from qa.split import Passage  # noqa: E402
from qa.stores import Unit, milvus  # noqa: E402
from qa.stores.local import Bm25KeywordStore, FaissVectorStore, PassageTable  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(xs, p)), 2)


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class Corpus:
    """The passages, their units (ids, spans, vectors) and the words of each passage."""

    def __init__(self, n: int, enc: SentenceTransformerEncoder) -> None:
        pool = scale.Pool.load(enc)
        passages: list[Passage] = []
        tokens, pinyin, ids, spans, vectors = [], [], [], [], []
        seen: set[str] = set()
        for ps, ts, py, uid, usp, uv in scale.Corpus(pool, n).chunks():
            keep = [p.id not in seen and not seen.add(p.id) for p in ps]  # type: ignore[func-returns-value]
            kept = {p.id for p, k in zip(ps, keep, strict=True) if k}
            mask = np.array([i in kept for i in uid.tolist()])
            passages += [p for p, k in zip(ps, keep, strict=True) if k]
            tokens += [t for t, k in zip(ts, keep, strict=True) if k]
            pinyin += [t for t, k in zip(py, keep, strict=True) if k]
            ids.append(uid[mask])
            spans.append(usp[mask])
            vectors.append(uv[mask])
        self.passages, self.tokens, self.pinyin = passages, tokens, pinyin
        self.unit_ids, self.unit_spans = np.concatenate(ids), np.concatenate(spans)
        self.vectors = np.concatenate(vectors)
        self.units = [Unit(str(p), int(s), int(e)) for p, (s, e) in zip(self.unit_ids, self.unit_spans, strict=True)]


def queries(enc: SentenceTransformerEncoder, n: int) -> list[Query]:
    return [Query(t, tokenize(t), latin_terms(t), enc.encode_query(t)) for t in scale.questions(n)]


class RoundTrips:
    """Counts the calls this process makes to Milvus (every store call goes through Connection)."""

    def __init__(self) -> None:
        self.count = 0
        original = milvus.Connection.__call__

        @functools.wraps(original)
        def counted(conn: Any, method: str, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(conn, method, *args, **kwargs)

        milvus.Connection.__call__ = counted  # type: ignore[method-assign]


def search_stores(stores: Stores, q: Query) -> list[str]:
    """What one Retriever.search asks of its stores (hybrid, k 5): the candidates with their
    passages (one fetch, kept for the hits' texts), then the idf of the question's words."""
    c = gather_candidates(SimpleNamespace(stores=stores), q, "hybrid", 5)  # type: ignore[arg-type]
    stores.keywords.idf(q.tokens)
    return [i.id for i in c.items]


def measure(stores: Stores, qs: list[Query], exact: list[dict[str, float]], trips: RoundTrips | None) -> dict[str, Any]:
    assert stores.vectors is not None
    for q in qs[:20]:
        search_stores(stores, q)  # warm: idf cache, loaded segments
    times, counts, vec, units, kw, fill, fetch = [], [], [], [], [], [], []
    for q in qs:
        before = trips.count if trips else 0
        _, t = timed(lambda q=q: search_stores(stores, q))
        times.append(t * 1000)
        counts.append((trips.count if trips else 0) - before)
        found, t = timed(lambda q=q: stores.vectors.search(q.vector, CANDIDATES))  # type: ignore[union-attr]
        vec.append(t * 1000)
        _, t = timed(lambda q=q, f=found: stores.vectors.unit_scores(q.vector, [i for i, _ in f]))  # type: ignore[union-attr]
        units.append(t * 1000)
        got, t = timed(lambda q=q: stores.keywords.search(q.tokens, q.latin, CANDIDATES))
        kw.append(t * 1000)
        ids = [i for i, _ in found]
        lexical = dict(got)
        missing = [i for i in ids if i not in lexical]
        _, t = timed(lambda q=q, m=missing: stores.keywords.scores(q.tokens, q.latin, m))
        fill.append(t * 1000)
        _, t = timed(lambda ids=ids, more=list(lexical): stores.passages.get(ids + more))
        fetch.append(t * 1000)
    qv = np.stack([q.vector for q in qs])
    found = [stores.vectors.search(q.vector, CANDIDATES) for q in qs]  # type: ignore[union-attr]
    recall = scale.recall_at(scale.rescored(stores.vectors, qv, found, CANDIDATES), exact, 10)  # type: ignore[arg-type]
    out = {
        "search_stores_p50_ms": pct(times, 50), "search_stores_p95_ms": pct(times, 95),
        "p95_over_p50": round(pct(times, 95) / pct(times, 50), 2),
        "vector_search_k50_p50_ms": pct(vec, 50), "unit_scores_p50_ms": pct(units, 50),
        "keyword_search_k50_p50_ms": pct(kw, 50), "keyword_scores_of_the_rest_p50_ms": pct(fill, 50),
        "passages_get_p50_ms": pct(fetch, 50),
        "dense_recall@10": round(recall, 4), "load_average": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    if trips:
        out["round_trips_p50"] = statistics.median(counts)
        out["round_trips_max"] = max(counts)
    return out


def reindex(stores: Stores, index_type: str, params: dict[str, Any]) -> float:
    """Re-index the units collection in place (release, drop the vector index, build, load)."""
    vs = stores.vectors
    assert isinstance(vs, milvus.MilvusVectorStore)
    conn, name = vs._conn, vs.name
    t = time.perf_counter()
    conn("release_collection", name)
    conn("drop_index", name, "vector")
    ip = conn.client.prepare_index_params()
    ip.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=params)
    conn.write("create_index", name, ip)
    conn.write("load_collection", name)
    vs.index_type = index_type
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", default="1,128", help="IVF_FLAT nprobe values (Lite ignores them: measured)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "milvus_scale.json")
    args = parser.parse_args()
    enc = SentenceTransformerEncoder(backend="torch", precision="float32")
    report: dict[str, Any] = {"passages": args.passages, "cpus": os.cpu_count(),
                              "load_average_at_start": round(os.getloadavg()[0], 2)}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="qa-milvus-scale-"))
    try:
        corpus, t = timed(lambda: Corpus(args.passages, enc))
        qs = queries(enc, args.queries)
        report.update(units=len(corpus.units), queries=len(qs))
        print(f"corpus: {len(corpus.passages)} passages, {len(corpus.units)} units ({t:.0f} s)", flush=True)
        exact = scale.exact_top_passages(corpus.vectors, corpus.unit_ids, np.stack([q.vector for q in qs]), 10)

        keywords = Bm25KeywordStore([p.id for p in corpus.passages],
                                    LexicalIndex.from_tokens(corpus.tokens, corpus.pinyin))  # fmt: skip
        table = PassageTable(corpus.passages)
        for label, kind in (("faiss", None), ("faiss exact", "faiss-flat-ip")):  # as built at this size; exact
            faiss_store = FaissVectorStore(384, corpus.unit_ids, corpus.unit_spans, corpus.vectors, kind=kind)
            _, t = timed(lambda store=faiss_store: store.index)
            local = Stores(table, keywords, faiss_store)
            report[label] = {"vectors": faiss_store.kind, "ann_build_s": round(t, 1), **measure(local, qs, exact, None)}
            print(label, report[label], flush=True)
            del local, faiss_store
            gc.collect()
        del keywords, table

        trips = RoundTrips()
        folder = work / "milvus"
        info = milvus.store_info(str(folder / "milvus.db"), None, folder)
        stores = milvus.open_stores(folder, info, create=True, reset=True, dimension=384)
        build: dict[str, float] = {}
        _, build["units_s"] = timed(lambda: stores.vectors.upsert(corpus.units, corpus.vectors))  # type: ignore[union-attr]
        _, build["keywords_s"] = timed(lambda: stores.keywords.upsert(corpus.passages))
        _, build["passages_s"] = timed(lambda: stores.passages.upsert(corpus.passages))
        report["milvus_lite_build"] = {k: round(v, 1) for k, v in build.items()}
        print("milvus build", report["milvus_lite_build"], flush=True)
        conn = stores.vectors._conn  # type: ignore[union-attr]
        runs: dict[str, Any] = {}
        for level in ("Strong", "Bounded"):
            conn.consistency = level
            runs[f"FLAT, {level}"] = measure(stores, qs, exact, trips)
            print(f"milvus FLAT {level}", runs[f"FLAT, {level}"], flush=True)
        conn.consistency = "Strong"
        t = reindex(stores, "IVF_FLAT", {"nlist": milvus.IVF_NLIST})
        report["milvus_lite_build"]["ivf_flat_index_s"] = round(t, 1)
        for nprobe in (int(x) for x in args.nprobe.split(",")):
            milvus.IVF_NPROBE = nprobe
            runs[f"IVF_FLAT nlist {milvus.IVF_NLIST} nprobe {nprobe}, Strong"] = r = measure(stores, qs, exact, trips)
            print(f"milvus IVF nprobe {nprobe}", r, flush=True)
        report["milvus_lite"] = runs
        milvus.close(info, folder)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(report, indent=1, ensure_ascii=False))
    finally:
        milvus.close_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
