"""Would a learned ranker sharpen the top hit? Out-of-fold figures on the dev split only.

    python bench/ranker.py [--index vectors/default] [--queries tests/data/dev.jsonl]

For every answerable dev question, the top 5 fused hits get features the search already
computes (fused score and its gap to the first, cosine gap to the best, BM25 share of the
best, IDF-weighted and plain keyword coverage, reciprocal rank); a pointwise logistic
ranker is fitted on 4 folds (paraphrase groups kept together) and reorders the 5th.
Shipped only if it beats the fused order by 3 points of hit@1 (it did not; see README).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.evaluate import corpus_of, load_queries, relevant_ids  # noqa: E402
from qa.lexical import fold, tokenize  # noqa: E402
from qa.search import Hit, Retriever  # noqa: E402


def features(hits: list[Hit], tokens: list[str], i: int) -> list[float]:
    h = hits[i]
    content = [t for t in dict.fromkeys(tokens) if len(t) >= 2]
    text = re.sub(r"\s+", "", fold(h.text))
    best_bm25 = max(x.features["bm25"] for x in hits) or 1.0
    return [
        h.score, h.score - hits[0].score, h.features["dense"] - max(x.features["dense"] for x in hits),
        h.features["bm25"] / best_bm25, h.features["coverage"],
        sum(t in text for t in content) / len(content) if content else 0.0, 1.0 / (i + 1),
    ]  # fmt: skip


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "vectors/default"))
    ap.add_argument("--queries", default=str(ROOT / "tests/data/dev.jsonl"))
    args = ap.parse_args()
    retriever = Retriever.load(args.index, check_stale=False)
    corpus = corpus_of(retriever)
    x, y, groups, owner = [], [], [], []
    n = 0
    for q in load_queries(args.queries):
        relevant = relevant_ids(q, corpus)
        if not relevant:
            continue
        hits = retriever.search(q.query, k=5).hits
        tokens = tokenize(q.query)
        for i, h in enumerate(hits):
            x.append(features(hits, tokens, i))
            y.append(h.id in relevant)
            groups.append(q.group or q.id)
            owner.append(n)
        n += 1
    xa, ya, oa = np.array(x), np.array(y), np.array(owner)
    pred = np.zeros(len(ya))
    for train, test in GroupKFold(5).split(xa, ya, groups):
        pred[test] = LogisticRegression(max_iter=1000).fit(xa[train], ya[train]).decision_function(xa[test])
    base = np.mean([ya[oa == i][0] for i in range(n)])
    ranked = np.mean([ya[oa == i][np.argmax(pred[oa == i])] for i in range(n)])
    print(f"{args.queries}: {n} answerable questions, top 5 reordered out of fold")
    print(f"hit@1 fused order {base:.3f}, learned ranker {ranked:.3f}")


if __name__ == "__main__":
    main()
