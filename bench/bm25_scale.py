"""BM25 alone at scale: token lists of recombined passages, as bench/scale.py composes them,
without the text, the vectors or an index folder (so 1M passages take minutes, not hours).

    python bench/bm25_scale.py 1000000

Prints one JSON object: the BM25 index build time (bm25s, from tokens), the postings, and the
latency of `LexicalIndex.top_k` (k 50) against scoring every passage then argpartition, and
against bm25s's own `retrieve` over the words alone. Never asserted.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from scale import questions, seed_clauses  # noqa: E402

from qa.lexical import LexicalIndex, latin_terms, pinyin_terms, tokenize  # noqa: E402


def p50(ms: list[float]) -> float:
    return round(statistics.median(ms), 2)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    clauses = seed_clauses()
    clause_tokens = [tokenize(c) for c in clauses]
    clause_pinyin = [pinyin_terms(t) for t in clause_tokens]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    sentences = rng.integers(2, 5, n)  # 2..4 sentences a passage, 2..3 clauses a sentence
    clauses_per_sentence = rng.integers(2, 4, int(sentences.sum()))
    picks = rng.integers(0, len(clauses), int(clauses_per_sentence.sum())).tolist()
    per_passage = np.add.reduceat(clauses_per_sentence, np.concatenate([[0], np.cumsum(sentences)[:-1]])).tolist()
    tokens: list[list[str]] = []
    pinyin: list[list[str]] = []
    at = 0
    for m in per_passage:
        words: list[str] = []
        latin: list[str] = []
        for c in picks[at : at + m]:
            words += clause_tokens[c]
            latin += clause_pinyin[c]
        tokens.append(words)
        pinyin.append(latin)
        at += m
    generated = time.perf_counter() - started
    t = time.perf_counter()
    lexical = LexicalIndex.from_tokens(tokens, pinyin)
    built = time.perf_counter() - t
    del tokens, pinyin
    gc.collect()
    postings = int(lexical.bm25.scores["data"].size + lexical.pinyin.scores["data"].size)
    queries = [(tokenize(q), latin_terms(q)) for q in questions(200)]
    top_k, full, retrieve = [], [], []
    for _ in range(2):
        for words, latin in queries:
            t = time.perf_counter()
            lexical.top_k(words, latin, 50)
            top_k.append((time.perf_counter() - t) * 1000)
    for words, latin in queries:
        t = time.perf_counter()
        scores = lexical.scores(words, latin)
        np.argpartition(-scores, 49)[:50]
        full.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        lexical.bm25.retrieve([words or ["\u2205"]], k=50, show_progress=False, n_threads=0)
        retrieve.append((time.perf_counter() - t) * 1000)
    top_k.sort()
    print(json.dumps({
        "passages": n, "generate_tokens_s": round(generated, 1), "bm25_index_s": round(built, 1),
        "postings": postings, "postings_bytes_per_passage": round(postings * 8 / n),
        "top_k_ms": {"p50": p50(top_k), "p95": round(top_k[int(0.95 * (len(top_k) - 1))], 2)},
        "full_vector_then_argpartition_ms_p50": p50(full), "bm25s_retrieve_words_only_ms_p50": p50(retrieve),
        "load_avg": os.getloadavg()[0],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
