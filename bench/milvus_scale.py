"""Build and query at scale: the Milvus stores on Milvus Lite (a .db file, FLAT) against the
embedded stores (FAISS flat + bm25s + files) on the same synthetic corpus.

    python bench/milvus_scale.py [--passages 100000] [--queries 200] [--out bench/milvus_scale.json]

Corpus: passages of 2-4 sentences drawn from the seed documents (so jieba and pinyin see real
Chinese text), their units as the index makes them (the passage and each sentence), and
synthetic vectors: 384-d unit vectors around 1,000 cluster centres. No model runs: embedding
costs the same for both stores and is left out.

Build: what the index's write stage asks of the stores (vectors, keywords, passages upserted;
FAISS also writes its files, where bm25s builds its arrays). Query: what one Retriever.search
asks of them (qa.search.gather_candidates: keyword and vector search, unit scores, the missing
keyword scores, passages; then idf and the top passages), for a vector near a random unit and
the words of a random sentence; dense recall@10 of both against numpy. Note that at 100k
passages (~400k units) the embedded store is FAISS HNSW (it switches at 100k vectors), Milvus
Lite is FLAT (exact). Also three ways Milvus could give an idf (docs/milvus.md).
"""

from __future__ import annotations

import argparse
import gc
import itertools
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

from qa.documents import read_documents  # noqa: E402
from qa.index import Stores  # noqa: E402
from qa.lexical import pinyin_terms, tokenize  # noqa: E402
from qa.search import Query, gather_candidates  # noqa: E402
from qa.split import (  # noqa: E402
    Passage,
    Source,
    passage_id,
    sentence_units,
    split_sentences,
)
from qa.stores import milvus  # noqa: E402
from qa.stores.local import Bm25KeywordStore, FaissVectorStore, PassageTable  # noqa: E402

DIM = 384


def corpus(n: int, rng: np.random.Generator) -> list[Passage]:
    sentences = []
    for doc in read_documents(ROOT / "seeds"):
        sentences += [doc.text[s:e] for s, e in split_sentences(doc.text) if 8 <= e - s <= 120]
    out: dict[str, Passage] = {}
    while len(out) < n:
        i = len(out)
        text = "".join(sentences[j] for j in rng.choice(len(sentences), int(rng.integers(2, 5)), replace=False))
        pid = passage_id(text)
        out.setdefault(
            pid, Passage(pid, text, (Source(f"doc{i // 50:05d}.txt", "synthetic", i % 50 + 1, 0, len(text), i % 50),))
        )
    return list(out.values())


def vectors_for(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    v = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def queries(passages: list[Passage], units: list[Any], vectors: np.ndarray, n: int,
            rng: np.random.Generator) -> list[Query]:  # fmt: skip
    out = []
    for _ in range(n):
        u = int(rng.integers(0, len(units)))
        q = vectors[u] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        words = tokenize(passages[int(rng.integers(0, len(passages)))].text)
        tokens = list(rng.choice(words, min(len(words), int(rng.integers(2, 6))), replace=False)) if words else []
        latin = pinyin_terms(tokens)[:1] if rng.random() < 0.2 else []
        out.append(Query("", [str(t) for t in tokens], latin, (q / np.linalg.norm(q)).astype(np.float32)))
    return out


def pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(xs, p)) * 1000, 2)


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def build(stores: Stores, passages: list[Passage], units: list[Any], vectors: np.ndarray) -> dict[str, float]:
    assert stores.vectors is not None
    out = {}
    _, out["vectors_s"] = timed(lambda: stores.vectors.upsert(units, vectors))  # type: ignore[union-attr]
    _, out["keywords_s"] = timed(lambda: stores.keywords.upsert(passages))
    _, out["passages_s"] = timed(lambda: stores.passages.upsert(passages))
    return out


def run_queries(stores: Stores, qs: list[Query]) -> dict[str, Any]:
    index = SimpleNamespace(stores=stores)
    assert stores.vectors is not None
    total, vec, kw, units, idf = [], [], [], [], []
    results = []
    for q in qs:
        t0 = time.perf_counter()
        c = gather_candidates(index, q, "hybrid", 5)  # type: ignore[arg-type]
        stores.keywords.idf(q.tokens)
        stores.passages.get([i.id for i in c.items[:20]])
        total.append(time.perf_counter() - t0)
        d, t = timed(lambda q=q: stores.vectors.search(q.vector, 50))  # type: ignore[union-attr]
        vec.append(t)
        k, t = timed(lambda q=q: stores.keywords.search(q.tokens, q.latin, 50))
        kw.append(t)
        _, t = timed(lambda d=d, q=q: stores.vectors.unit_scores(q.vector, [i for i, _ in d[:60]]))  # type: ignore[union-attr]
        units.append(t)
        _, t = timed(lambda q=q: stores.keywords.idf(q.tokens))
        idf.append(t)
        results.append(([i for i, _ in d[:10]], [i for i, _ in k[:10]]))
    return {
        "search_stores_p50_ms": pct(total, 50), "search_stores_p95_ms": pct(total, 95),
        "vector_search_k50_p50_ms": pct(vec, 50), "keyword_search_k50_p50_ms": pct(kw, 50),
        "unit_scores_p50_ms": pct(units, 50), "idf_p50_ms": pct(idf, 50), "_top10": results,
    }  # fmt: skip


def exact_top10(units: list[Any], vectors: np.ndarray, qs: list[Query]) -> list[list[str]]:
    """The 10 best passages by their best unit's cosine, by numpy: the reference for recall."""
    ids = [u.passage for u in units]
    starts = np.flatnonzero([True] + [a != b for a, b in itertools.pairwise(ids)])
    out = []
    for q in qs:
        best = np.maximum.reduceat(vectors @ q.vector, starts)
        top = np.argsort(-best)[:10]
        out.append([ids[starts[i]] for i in top])
    return out


def recall(got: list[tuple[list[str], list[str]]], exact: list[list[str]]) -> float:
    return round(statistics.mean(len(set(g[0]) & set(e)) / len(e) for g, e in zip(got, exact, strict=True)), 4)


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)


def idf_options(stores: Stores, qs: list[Query]) -> dict[str, Any]:
    """Three ways to get a document frequency from Milvus, on the built collection."""
    kw = stores.keywords
    assert isinstance(kw, milvus.MilvusKeywordStore)
    conn = kw._conn
    tokens = [t for q in qs[:50] for t in q.tokens]
    k1_zero = [timed(lambda q=q: kw.idf(q.tokens))[1] for q in qs[:50]]
    counts, saturated = [], 0
    for t in tokens:
        hits, s = timed(lambda t=t: conn.read("search", kw.name, data=[t], anns_field="words_sparse",
                                              limit=milvus.MAX_LIMIT, search_params={"metric_type": "BM25"})[0])  # fmt: skip
        counts.append(s)
        saturated += len(hits) >= milvus.MAX_LIMIT
    gets = [timed(lambda q=q: conn.read("get", kw.name, ids=[p for p in q.tokens][:8] or ["x"],
                                        output_fields=["passage_id"]))[1] for q in qs[:50]]  # fmt: skip
    return {
        "k1_0_index_idf_per_query_p50_ms": pct(k1_zero, 50),
        "bm25_hit_count_per_token_p50_ms": pct(counts, 50), "bm25_hit_count_per_token_p95_ms": pct(counts, 95),
        "bm25_hit_count_tokens_over_16384": f"{saturated}/{len(tokens)}",
        "df_table_read_proxy_get_p50_ms": pct(gets, 50),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "milvus_scale.json")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    work = Path(tempfile.mkdtemp(prefix="qa-milvus-scale-"))
    report: dict[str, Any] = {"passages": args.passages, "queries": args.queries, "cpus": os.cpu_count(),
                              "load_average_at_start": os.getloadavg()[0]}  # fmt: skip
    try:
        (passages, t) = timed(lambda: corpus(args.passages, rng))
        passages.sort(key=lambda p: p.id)
        units = [u for p in passages for u in sentence_units(p)]
        vectors = vectors_for(len(units), rng)
        qs = queries(passages, units, vectors, args.queries, rng)
        report["units"] = len(units)
        print(f"corpus: {len(passages)} passages, {len(units)} units ({t:.0f} s)", flush=True)

        folder = work / "milvus"
        info = milvus.store_info(str(folder / "milvus.db"), None, folder)
        stores, t_open = timed(lambda: milvus.open_stores(folder, info, create=True, reset=True, dimension=DIM))
        m = build(stores, passages, units, vectors)
        m["create_collections_s"] = t_open
        _, m["count_check_s"] = timed(lambda: (len(stores.passages), len(stores.keywords), len(stores.vectors)))  # type: ignore[arg-type]
        m["build_total_s"] = round(sum(m.values()), 1)
        print("milvus build", m, flush=True)
        milvus_kind = stores.vectors.kind  # type: ignore[union-attr]
        mq = run_queries(stores, qs)
        print("milvus query", {k: v for k, v in mq.items() if k[0] != "_"}, flush=True)
        opts = idf_options(stores, qs)
        print("idf options", opts, flush=True)
        milvus.close(info, folder)
        m["disk_mb"] = size_mb(folder)
        gc.collect()

        table = PassageTable()
        keywords = Bm25KeywordStore.build([])
        keywords.attach(table)
        local = Stores(table, keywords, FaissVectorStore.empty(DIM))
        f = build(local, passages, units, vectors)
        saved = work / "faiss"
        saved.mkdir()

        def save() -> None:
            table.save(saved)
            keywords.save(saved)
            local.vectors.save(saved)  # type: ignore[union-attr]

        _, f["save_files_incl_bm25_s"] = timed(save)
        f["build_total_s"] = round(sum(f.values()), 1)
        f["disk_mb"] = size_mb(saved)
        print("faiss build", f, flush=True)
        fq = run_queries(local, qs)
        print("faiss query", {k: v for k, v in fq.items() if k[0] != "_"}, flush=True)

        exact = exact_top10(units, vectors, qs)
        mq["dense_recall@10_vs_exact"], fq["dense_recall@10_vs_exact"] = (
            recall(mq["_top10"], exact),
            recall(fq["_top10"], exact),
        )
        pairs = list(zip(mq.pop("_top10"), fq.pop("_top10"), strict=True))
        lexical = [len(set(a[1]) & set(b[1])) / max(1, len(b[1])) for a, b in pairs]
        report.update({
            "milvus_lite": {"vectors": milvus_kind, "build": {k: round(v, 2) for k, v in m.items()}, "query": mq,
                            "idf_options": opts},
            "local": {"vectors": local.vectors.kind, "keywords": "bm25s",  # type: ignore[union-attr]
                      "build": {k: round(v, 2) for k, v in f.items()}, "query": fq},
            "keyword_top10_overlap_milvus_vs_bm25s": round(statistics.mean(lexical), 4),
        })  # fmt: skip
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(json.dumps(report, indent=1, ensure_ascii=False))
    finally:
        milvus.close_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
