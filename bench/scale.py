"""Scale: synthetic corpora of 10k, 100k and 1M passages recombined from the seed documents.

    python bench/scale.py                                  # 10k and 100k passages
    python bench/scale.py --sizes 10000,100000,1000000     # and 1M (long: tens of minutes, ~15 GB of disk)
    python bench/scale.py --sizes 100000 --sweep           # FAISS parameters: recall@10 and speed

The text. Every seed sentence is cut into clauses at ，；：, and new sentences are two or
three clauses from anywhere in the corpus joined by ， and closed by 。, so a passage (two to
four such sentences, 50 to a document) reads as Chinese about the seed topics; no two
sentences are likely to repeat, so nothing ties by construction.

The vectors. Each distinct clause is embedded by the real model (once, cached in the qa
cache). A sentence's vector is the normalized sum of its clauses' vectors and a passage's the
normalized sum of its sentences': a stated approximation of what the model would give the
recombined text (`--check` embeds a sample for real and reports the mean cosine between the
two). Embedding a million passages for real on two cores takes days: the timing, the memory
and the recall of the approximate index against exact search at the same size are measured
on these vectors, and the queries are real questions (tests/data/*.jsonl) embedded for real.

"1M passages" means a million passages, not a million vectors: the index holds one vector for
each passage and one for each of its sentences (`qa.split.sentence_units`), about 4.0 a
passage here as in the seed corpus, so 4M vectors, and the approximate index must find the
best passages through them.

Each size is written as a real index folder (manifest, checksums, FAISS, bm25s, passages)
and opened with `Index.open`, then searched through `Retriever.search`, the call the chat
makes. Reported: build time by stage, load time, resident memory and disk per passage,
latency p50/p95 per mode (with the query vector cached, plus the query embedding on its
own), and the dense recall@10 of the approximate index against exact search. Numbers are
printed (and with --json, one JSON object), never asserted.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from qa import calibration  # noqa: E402
from qa.cache import cache_root  # noqa: E402
from qa.documents import read_documents  # noqa: E402
from qa.embed import SentenceTransformerEncoder  # noqa: E402
from qa.index import Index, Stores, _commit, _params, model_info  # noqa: E402
from qa.lexical import LexicalIndex, latin_terms, pinyin_terms, tokenize  # noqa: E402
from qa.manifest import Manifest, Splitter, StoreInfo  # noqa: E402
from qa.search import CANDIDATES, Retriever  # noqa: E402
from qa.split import Passage, Source, passage_id, split_sentences  # noqa: E402
from qa.stores.local import (  # noqa: E402
    ID_DTYPE,
    Bm25KeywordStore,
    FaissVectorStore,
    PassageTable,
    set_faiss_threads,
)

PASSAGES_PER_DOCUMENT = 50
CHUNK = 50_000  # passages generated (and their vectors written) at a time


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def mapped_mb() -> float:
    """The resident pages that belong to files (memory-mapped), not to the process."""
    import psutil

    return float(psutil.Process().memory_info().shared / 2**20)


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"p50": round(statistics.median(s), 3), "p95": round(s[int(0.95 * (len(s) - 1))], 3)}


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    t = time.perf_counter()
    out = None
    for _ in range(repeat):
        out = fn()
    return out, (time.perf_counter() - t) / repeat


# ---------------------------------------------------------------- the corpus


def seed_clauses() -> list[str]:
    """The distinct clauses (4 to 40 characters) of the seed documents' sentences."""
    import re

    out: dict[str, None] = {}
    for doc in read_documents(ROOT / "seeds"):
        for s, e in split_sentences(doc.text):
            sentence = re.sub(r"\s+", "", doc.text[s:e]).rstrip("。！？；!?…")
            for clause in re.split(r"[，；：,;:]", sentence):
                if 4 <= len(clause) <= 40 and re.search(r"[\u4e00-\u9fff]{2}", clause):
                    out[clause] = None
    return list(out)


class Pool:
    """The clauses with their real vectors, tokens and pinyin terms."""

    def __init__(self, clauses: list[str], vectors: np.ndarray) -> None:
        self.clauses = clauses
        self.vectors = vectors
        self.tokens = [tokenize(c) for c in clauses]
        self.pinyin = [pinyin_terms(t) for t in self.tokens]

    @classmethod
    def load(cls, enc: SentenceTransformerEncoder) -> Pool:
        clauses = seed_clauses()
        info = model_info(enc)
        key = hashlib.sha256(("\n".join(clauses) + info.fingerprint).encode()).hexdigest()[:16]
        path = cache_root() / "bench" / f"clauses-{key}.npy"
        if path.exists():
            vectors = np.load(path, allow_pickle=False)
        else:
            print(f"Embedding {len(clauses)} seed clauses (once; cached in {path})", file=sys.stderr, flush=True)
            t = time.perf_counter()
            vectors = enc.encode_passages(clauses, progress=sys.stderr.isatty())
            print(f"  {len(clauses) / (time.perf_counter() - t):.1f} clauses/s", file=sys.stderr, flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors, allow_pickle=False)
        return cls(clauses, vectors)


def _normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Corpus:
    """`n` recombined passages: their texts and provenance, their units (passage whole, then
    each sentence) with vectors, and their tokens for BM25, generated deterministically."""

    def __init__(self, pool: Pool, n: int, seed: int = 0) -> None:
        self.pool, self.n = pool, n
        self.rng = np.random.default_rng(seed)

    def chunks(self) -> Any:
        """(passages, token lists, pinyin lists, unit ids, unit spans, unit vectors) per CHUNK passages."""
        pool, rng = self.pool, self.rng
        for first in range(0, self.n, CHUNK):
            count = min(CHUNK, self.n - first)
            sentences_per = rng.integers(2, 5, count)  # 2..4 sentences a passage
            total = int(sentences_per.sum())
            clauses_per = rng.integers(2, 4, total)  # 2..3 clauses a sentence
            picks = rng.integers(0, len(pool.clauses), int(clauses_per.sum()))
            sentence_of_pick = np.repeat(np.arange(total), clauses_per)
            sums = np.zeros((total, pool.vectors.shape[1]), np.float32)
            np.add.at(sums, sentence_of_pick, pool.vectors[picks])
            sentence_vectors = _normalized(sums)
            bounds = np.concatenate([[0], np.cumsum(clauses_per)])
            passages, tokens, pinyin, ids, spans, vectors = [], [], [], [], [], []
            s = 0
            for j in range(count):
                number = first + j
                texts, sent_spans, toks, pys, rows = [], [], [], [], []
                offset = 0
                for _ in range(int(sentences_per[j])):
                    chosen = picks[bounds[s] : bounds[s + 1]].tolist()
                    text = "，".join(pool.clauses[c] for c in chosen) + "。"
                    for c in chosen:
                        toks.extend(pool.tokens[c])
                        pys.extend(pool.pinyin[c])
                    texts.append(text)
                    sent_spans.append((offset, offset + len(text)))
                    offset += len(text)
                    rows.append(s)
                    s += 1
                text = "".join(texts)
                doc, order = divmod(number, PASSAGES_PER_DOCUMENT)
                start = order * 400  # provenance only: spans in a document no one reads
                source = Source(
                    f"synthetic/{doc:06d}.txt", f"合成文档{doc}", order + 1, start, start + len(text), order
                )
                pid = passage_id(text)
                passages.append(Passage(pid, text, (source,)))
                tokens.append(toks)
                pinyin.append(pys)
                whole = _normalized(sentence_vectors[rows].sum(axis=0, keepdims=True))
                ids.extend([pid] * (1 + len(rows)))
                spans.extend([(0, len(text)), *sent_spans])
                vectors.append(whole)
                vectors.append(sentence_vectors[rows])
            yield (
                passages, tokens, pinyin, np.array(ids, ID_DTYPE), np.array(spans, np.int32),
                np.concatenate(vectors).astype(np.float32),
            )  # fmt: skip


# ---------------------------------------------------------------- building


def build(corpus: Corpus, folder: Path, enc: SentenceTransformerEncoder, ann: str) -> dict[str, Any]:
    """Write `corpus` as an index folder through the stores' own save and `qa.index._commit`."""
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    work = folder.parent / f".{folder.name}.vectors.f32"  # raw rows, appended chunk by chunk
    passages: list[Passage] = []
    tokens: list[list[str]] = []
    pinyin: list[list[str]] = []
    ids, spans = [], []
    seen: set[str] = set()
    raw = work.open("wb")
    for chunk in corpus.chunks():
        ps, ts, py, uid, usp, uv = chunk
        keep = np.array([p.id not in seen and not seen.add(p.id) for p in ps])  # type: ignore[func-returns-value]
        unit_keep = np.isin(uid, np.array([p.id for p, k in zip(ps, keep, strict=True) if k], ID_DTYPE))
        passages += [p for p, k in zip(ps, keep, strict=True) if k]
        tokens += [t for t, k in zip(ts, keep, strict=True) if k]
        pinyin += [t for t, k in zip(py, keep, strict=True) if k]
        ids.append(uid[unit_keep])
        spans.append(usp[unit_keep])
        raw.write(np.ascontiguousarray(uv[unit_keep], dtype=np.float32).tobytes())
    raw.close()
    unit_ids, unit_spans = np.concatenate(ids), np.concatenate(spans)
    dimension = corpus.pool.vectors.shape[1]
    vectors = np.memmap(work, dtype=np.float32, mode="r", shape=(len(unit_ids), dimension))
    out["passages"], out["units"] = len(passages), len(unit_ids)
    out["generate_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    lexical = LexicalIndex.from_tokens(tokens, pinyin)
    keywords = Bm25KeywordStore([p.id for p in passages], lexical)
    out["bm25_index_s"] = time.perf_counter() - t
    del tokens, pinyin

    t = time.perf_counter()
    kind = None if ann == "auto" else ann
    store = FaissVectorStore(dimension, unit_ids, unit_spans, vectors, kind=kind)
    _ = store.index
    out["ann"] = store.kind
    out["ann_build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    table = PassageTable(passages)
    stores = Stores(table, keywords, store)
    info = model_info(enc)
    params = _params(300, 0.9)
    manifest = Manifest(
        qa_version="bench", created=datetime.now(UTC).isoformat(timespec="seconds"),
        docs_dir=str(folder / "no-documents"), splitter=Splitter(300, 0.9), tokenizer=params["tokenizer"],
        bm25=params["bm25"], documents=(), passage_count=len(passages), passages_before_dedup=len(passages),
        store=StoreInfo("faiss", store.kind, len(store), store.dimension), model=info,
        calibration=calibration.default_for(info), generation=1,
    )  # fmt: skip
    _commit(folder, manifest, stores)
    out["write_s"] = time.perf_counter() - t
    out["build_s"] = time.perf_counter() - t0
    out["disk_mb"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    del stores, table, passages, keywords, store, vectors
    work.unlink()
    gc.collect()
    return out


def tokenize_rate(corpus_text: list[str]) -> float:
    """Passages a second that jieba tokenization manages (the build above composes tokens)."""
    t = time.perf_counter()
    for text in corpus_text:
        pinyin_terms(tokenize(text))
    return len(corpus_text) / (time.perf_counter() - t)


# ---------------------------------------------------------------- measuring


def questions(limit: int) -> list[str]:
    out: list[str] = []
    for name in ("queries.jsonl", "dev.jsonl"):
        path = ROOT / "tests" / "data" / name
        if path.exists():
            out += [json.loads(line)["query"] for line in path.read_text("utf-8").splitlines() if line.strip()]
    return list(dict.fromkeys(out))[:limit]


def exact_top_passages(
    vectors: np.ndarray, unit_ids: np.ndarray, queries: np.ndarray, k: int
) -> list[dict[str, float]]:
    """The exact top-k passages (best unit cosine) of each query, by brute force in chunks."""
    want = 16 * k
    best_s = np.full((len(queries), 0), -2.0, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), 500_000):
        block = np.asarray(vectors[start : start + 500_000]) @ queries.T  # (rows, q)
        top = np.argpartition(-block, min(want, len(block) - 1), axis=0)[:want].T
        best_s = np.concatenate([best_s, np.take_along_axis(block.T, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :want]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    out = []
    for s_row, i_row in zip(best_s, best_i, strict=True):
        found: dict[str, float] = {}
        for s, i in zip(s_row.tolist(), i_row.tolist(), strict=True):
            found.setdefault(str(unit_ids[i]), s)
            if len(found) == k:
                break
        out.append(found)
    return out


def rescored(store: FaissVectorStore, queries: np.ndarray, found: list[list[tuple[str, float]]],
             keep: int) -> list[list[tuple[str, float]]]:  # fmt: skip
    """The first `keep` passages of each result scored exactly (best unit cosine), best first."""
    out = []
    for q, got in zip(queries, found, strict=True):
        units = store.unit_scores(q, [pid for pid, _ in got[:keep]])
        out.append(sorted(((pid, max(u.score for u in us)) for pid, us in units.items()), key=lambda x: -x[1]))
    return out


def dense_recall(store: FaissVectorStore, queries: np.ndarray, exact: list[dict[str, float]]) -> tuple[float, float]:
    """Recall@10 against exact search: of the index's own top 10, and of the dense search as
    `Retriever` runs it (the index proposes CANDIDATES passages, their units are scored exactly)."""
    found = [store.search(q, CANDIDATES) for q in queries]
    return recall_at(rescored(store, queries, found, 10), exact, 10), recall_at(
        rescored(store, queries, found, CANDIDATES), exact, 10
    )


def recall_at(found: list[list[tuple[str, float]]], exact: list[dict[str, float]], k: int) -> float:
    """Share of the exact top-k found, counting ties: a passage whose exact score reaches the
    k-th exact score counts (the scores compared are exact cosines, whatever the index)."""
    total = 0.0
    for got, truth in zip(found, exact, strict=True):
        kth = min(truth.values())
        total += min(k, sum(1 for pid, s in got[:k] if pid in truth or s >= kth - 1e-6)) / k
    return total / len(found)


def measure(folder: Path, enc: SentenceTransformerEncoder, texts: list[str], qvecs: np.ndarray,
            repeat: int) -> dict[str, Any]:  # fmt: skip
    import faiss

    out: dict[str, Any] = {}
    threads = faiss.omp_get_max_threads()
    set_faiss_threads(1)  # as `qa serve` searches (builds keep every thread)
    # The exact answers first, through a mapping of their own that is dropped before the RSS is
    # read: scanning 6 GB of vectors through the store's mapping would count them all as its memory.
    vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
    exact = exact_top_passages(vectors, np.load(folder / "units.npy", allow_pickle=False), qvecs, 10)
    del vectors
    # The first open hashes every file not checked before (qa.folder.verify_files); it remembers them, so
    # the open after it, as a restarted server's, only compares sizes and times. It runs in a child
    # process: the memory it frees would otherwise be reused by the second, which would then
    # seem to need none.
    child = "import sys, time; from qa.index import Index; t = time.perf_counter(); Index.open(sys.argv[1]); "
    child += "print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", child, str(folder)], capture_output=True, text=True, check=True)
    out["first_open_s"] = float(done.stdout.strip().splitlines()[-1])
    gc.collect()
    before, mapped = rss_mb(), mapped_mb()
    t = time.perf_counter()
    index = Index.open(folder)
    out["open_s"] = time.perf_counter() - t
    retriever = Retriever(index, enc, refresh=False)
    t = time.perf_counter()
    retriever.warm_up()
    out["warm_up_s"] = time.perf_counter() - t
    out["load_s"] = out["open_s"] + out["warm_up_s"]
    # The first searches after the open: their candidates' vectors are read from disk (RowReader).
    times = []
    for q in qvecs[:20]:
        t = time.perf_counter()
        index.stores.vectors.search(q, CANDIDATES)  # type: ignore[union-attr]
        times.append((time.perf_counter() - t) * 1000)
    out["first_dense_ann_ms"] = percentiles(times)
    stores = index.stores
    assert isinstance(stores.vectors, FaissVectorStore)

    # dense: the approximate index against exact search, on real question vectors
    index_recall, search_recall = dense_recall(stores.vectors, qvecs, exact)
    out["ann_recall@10"], out["dense_recall@10"] = round(index_recall, 4), round(search_recall, 4)
    times = []
    for _ in range(repeat):
        for q in qvecs:
            t = time.perf_counter()
            stores.vectors.search(q, CANDIDATES)
            times.append((time.perf_counter() - t) * 1000)
    out["dense_ann_ms"] = percentiles(times)

    tokens = [(tokenize(q), latin_terms(q)) for q in texts]
    times = []
    for _ in range(repeat):
        for tk, lt in tokens:
            t = time.perf_counter()
            stores.keywords.search(tk, lt, CANDIDATES)
            times.append((time.perf_counter() - t) * 1000)
    out["bm25_topk_ms"] = percentiles(times)

    for text, q in zip(texts, qvecs, strict=True):  # the question vectors: cached, so the modes time the search
        enc._cache.put(text, q)
    for mode in ("hybrid", "dense", "lexical"):
        retriever.search(texts[0], mode=mode)  # type: ignore[arg-type]
        times = []
        for _ in range(repeat):
            for text in texts:
                t = time.perf_counter()
                retriever.search(text, k=5, mode=mode)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t) * 1000)
        out[f"{mode}_ms"] = percentiles(times)
    gc.collect()
    out["rss_mb"] = rss_mb() - before
    out["rss_mapped_mb"] = mapped_mb() - mapped  # of it, pages of memory-mapped files (the kernel may drop them)
    out["rss_per_passage_bytes"] = round(out["rss_mb"] * 2**20 / index.manifest.passage_count)
    set_faiss_threads(threads)
    del retriever, index, stores
    gc.collect()
    return out


def query_embedding_ms(enc: SentenceTransformerEncoder, texts: list[str]) -> dict[str, float]:
    times = []
    for text in texts:
        enc._cache.clear()
        t = time.perf_counter()
        enc.encode_query(text)
        times.append((time.perf_counter() - t) * 1000)
    return percentiles(times)


# ---------------------------------------------------------------- FAISS parameters


def sweep(
    folder: Path, qvecs: np.ndarray, out: dict[str, Any], hnsw_m: Sequence[int], ivf_codes: Sequence[str]
) -> None:
    """Recall@10 (passages, against exact search) and speed of FAISS index choices over the
    same unit vectors: the index's own IVF at other nprobe, HNSW (M, efSearch) and IVF (nlist,
    nprobe; `ivf_codes`: flat and 8-bit codes), and exact search."""
    import faiss

    from qa.stores.local import _faiss_index

    index = Index.open(folder)
    store = index.stores.vectors
    assert isinstance(store, FaissVectorStore)
    vectors = np.ascontiguousarray(store._vectors, dtype=np.float32)
    exact = exact_top_passages(vectors, store._passages, qvecs, 10)
    rows: list[dict[str, Any]] = []
    threads = faiss.omp_get_max_threads()

    def run(name: str, built: faiss.Index, setting: str, build_s: float) -> None:
        set_faiss_threads(1)
        probe = FaissVectorStore(store.dimension, store._passages, store._spans, store._vectors, built)
        probe.search(qvecs[0], CANDIDATES)
        times = []
        for q in qvecs:
            t = time.perf_counter()
            probe.search(q, CANDIDATES)
            times.append((time.perf_counter() - t) * 1000)
        index_recall, search_recall = dense_recall(probe, qvecs, exact)
        row = {"index": name, "setting": setting, "build_s": round(build_s, 1),
               "index_recall@10": round(index_recall, 4), "search_recall@10": round(search_recall, 4),
               **{f"ms_{k}": v for k, v in percentiles(times).items()}}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        set_faiss_threads(threads)

    own = store.index
    if isinstance(own, faiss.IndexIVF):
        for nprobe in (16, 32, 64, 128, 256):
            own.nprobe = nprobe
            run(f"own IVF{own.nlist},SQ8", own, f"nprobe {nprobe}", float("nan"))
    for m in hnsw_m:
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(store.dimension, m, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(vectors)
        build_s = time.perf_counter() - t
        for ef in (16, 32, 64, 128, 256):
            hnsw.hnsw.efSearch = ef
            run(f"HNSW M{m}", hnsw, f"efSearch {ef}", build_s)
        del hnsw
    nlist = int(4 * np.sqrt(len(vectors)))
    for codes in ivf_codes:
        t = time.perf_counter()
        ivf = faiss.index_factory(store.dimension, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)]
        ivf.train(sample)
        ivf.add(vectors)
        build_s = time.perf_counter() - t
        for nprobe in (8, 16, 32, 64, 128):
            ivf.nprobe = nprobe
            run(f"IVF{nlist},{codes}", ivf, f"nprobe {nprobe}", build_s)
        del ivf
    t = time.perf_counter()
    flat = _faiss_index(vectors, "faiss-flat-ip")
    run("Flat (exact)", flat, "-", time.perf_counter() - t)
    out["sweep"] = rows


# ---------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    import psutil

    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="passage counts, comma-separated")
    parser.add_argument("--queries", type=int, default=200, help="real questions to time and to measure recall with")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the questions per timing")
    parser.add_argument("--ann", default="auto", help="FAISS index for every size (auto: the store's own choice)")
    parser.add_argument("--sweep", action="store_true", help="also compare FAISS index parameters at each size")
    parser.add_argument("--sweep-hnsw", default="16,32", help="HNSW M values the sweep builds (slow: ~500 vectors/s)")
    parser.add_argument("--sweep-ivf", default="Flat,SQ8", help="IVF codes the sweep builds")
    parser.add_argument("--check", type=int, default=0, help="embed this many recombined sentences for real")
    parser.add_argument("--keep", type=Path, default=None, help="write the indexes here and keep them")
    parser.add_argument("--reuse", action="store_true", help="with --keep: measure the indexes already there")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    enc = SentenceTransformerEncoder()
    pool = Pool.load(enc)
    texts = questions(args.queries)
    qvecs = np.stack([enc.encode_query(t) for t in texts])
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "command": " ".join(["python", *sys.argv]), "torch_threads": torch.get_num_threads(),
        "clauses": len(pool.clauses), "questions": len(texts), "load_avg": os.getloadavg()[0],
        "query_embedding_ms": query_embedding_ms(enc, texts[:50]), "sizes": {},
    }  # fmt: skip
    sample = [p.text for p in next(Corpus(pool, 2000, seed=99).chunks())[0]]
    results["tokenize_passages_per_s"] = round(tokenize_rate(sample), 1)
    if args.check:
        results["composed_vs_real_cosine"] = composed_vs_real(pool, enc, args.check)
    base = args.keep or Path(tempfile.mkdtemp(prefix="qa-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        for n in [int(x) for x in args.sizes.split(",") if x]:
            folder = base / f"scale-{n}"
            if args.reuse and (folder / "manifest.json").exists():
                manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
                row = {"passages": manifest["passage_count"], "units": manifest["store"]["vectors"],
                       "ann": manifest["store"]["index"], "build_s": float("nan"),
                       "disk_mb": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20}  # fmt: skip
            else:
                if folder.exists():
                    shutil.rmtree(folder)
                print(f"{n} passages: building", file=sys.stderr, flush=True)
                row = build(Corpus(pool, n), folder, enc, args.ann)
            print(f"{n} passages: measuring", file=sys.stderr, flush=True)
            row.update(measure(folder, enc, texts, qvecs, args.repeat))
            row["disk_per_passage_bytes"] = round(row["disk_mb"] * 2**20 / row["passages"])
            row["load_avg"] = os.getloadavg()[0]
            if args.sweep:
                sweep(folder, qvecs, row, [int(m) for m in args.sweep_hnsw.split(",") if m],
                      [c for c in args.sweep_ivf.split(",") if c])  # fmt: skip
            results["sizes"][str(n)] = row
            print(json.dumps({n: row}, default=str), file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, ensure_ascii=False, default=str) if args.json else table(results))


def composed_vs_real(pool: Pool, enc: SentenceTransformerEncoder, n: int) -> dict[str, float]:
    """Mean cosine between the composed vector of a recombined sentence and its real embedding."""
    rng = np.random.default_rng(7)
    picks = [rng.integers(0, len(pool.clauses), int(rng.integers(2, 4))).tolist() for _ in range(n)]
    texts = ["，".join(pool.clauses[c] for c in p) + "。" for p in picks]
    composed = _normalized(np.stack([pool.vectors[p].sum(axis=0) for p in picks]))
    real = enc.encode_passages(texts)
    cos = (composed * real).sum(axis=1)
    others = (composed @ real.T)[~np.eye(n, dtype=bool)]
    return {"sentences": n, "mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4),
            "mean_to_other_sentences": round(float(others.mean()), 4)}  # fmt: skip


def table(results: dict[str, Any]) -> str:
    lines = [
        f"scale {results['date']}  {results['machine']}  load {results['load_avg']:.1f}  torch threads "
        f"{results['torch_threads']}", f"  {results['command']}",
        f"  query embedding {results['query_embedding_ms']}; jieba {results['tokenize_passages_per_s']} passages/s",
    ]  # fmt: skip
    if "composed_vs_real_cosine" in results:
        lines.append(f"  composed vs real vectors: {results['composed_vs_real_cosine']}")
    head = ("passages", "units", "ann", "build_s", "first open s", "load_s", "rss_MB (mapped)", "B/passage", "disk_B/p", "dense_ann p50/p95",
            "recall@10 index/search", "bm25 p50/p95", "hybrid p50/p95", "dense p50/p95", "lexical p50/p95")  # fmt: skip
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for n, r in results["sizes"].items():
        pp = [
            f"{r[k]['p50']:.2f} / {r[k]['p95']:.2f}"
            for k in ("dense_ann_ms", "bm25_topk_ms", "hybrid_ms", "dense_ms", "lexical_ms")
        ]
        lines.append(
            f"| {n} | {r['units']} | {r['ann']} | {r['build_s']:.0f} | {r['first_open_s']:.1f} | {r['load_s']:.1f} | "
            f"{r['rss_mb']:.0f} ({r['rss_mapped_mb']:.0f}) | "
            f"{r['rss_per_passage_bytes']} | {r['disk_per_passage_bytes']} | {pp[0]} | {r['ann_recall@10']:.3f} / {r['dense_recall@10']:.3f} | "
            f"{pp[1]} | {pp[2]} | {pp[3]} | {pp[4]} |"
        )  # fmt: skip
        for row in r.get("sweep", []):
            lines.append(f"    {row}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
