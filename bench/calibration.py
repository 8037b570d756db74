"""Which confidence features and policy to ship: 5-fold out-of-fold figures on the dev split.

    python bench/calibration.py [--index vectors/default] [--queries tests/data/dev.jsonl]

Nothing here reads the test split: it is for reporting only. For each feature set and for
the gap feature with and without the background sentences (qa.background), it prints the
out-of-fold AUROC and, at the threshold that refuses 3% of the answerable questions, the
share of unanswerable questions refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.evaluate import auroc, evaluate, load_queries, out_of_fold, refusal_threshold  # noqa: E402
from qa.search import Retriever  # noqa: E402

FEATURE_SETS = {
    "dense gap coverage latin dense_latin untyped (shipped)": (
        "dense",
        "gap",
        "coverage",
        "latin",
        "dense_latin",
        "untyped",
    ),
    "dense gap coverage latin dense_latin (before the answer-type check)": (
        "dense",
        "gap",
        "coverage",
        "latin",
        "dense_latin",
    ),
    "dense coverage latin dense_latin (no gap)": ("dense", "coverage", "latin", "dense_latin"),
    "dense gap coverage": ("dense", "gap", "coverage"),
    "+ bm25": ("dense", "gap", "coverage", "latin", "dense_latin", "bm25"),
}


def figures(rows: list[dict], features: tuple[str, ...]) -> tuple[float, float, float]:
    rows = [r for r in rows if r["top_features"]]
    x = np.array([[r["top_features"][f] for f in features] for r in rows])
    y = np.array([bool(r["answerable"]) for r in rows])
    oof = out_of_fold(x, y, [r["group"] for r in rows], 5)
    t = refusal_threshold(oof[y], 0.03)
    return auroc(oof.tolist(), y.tolist()), float((oof[y] < t).mean()), float((oof[~y] < t).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "vectors/default"))
    ap.add_argument("--queries", default=str(ROOT / "tests/data/dev.jsonl"))
    args = ap.parse_args()
    queries = load_queries(args.queries)
    retriever = Retriever.load(args.index, check_stale=False)
    with_bg = evaluate(retriever, queries, 10, mode="hybrid").rows
    retriever._background_scores = lambda q: []  # type: ignore[method-assign]
    without_bg = evaluate(retriever, queries, 10, mode="hybrid").rows
    print(f"{args.queries}: {len(queries)} questions, 5-fold out-of-fold (groups kept together)\n")
    print("| features | gap reference | OOF AUROC | answerable refused | unanswerable refused |")
    print("|---|---|---|---|---|")
    for name, feats in FEATURE_SETS.items():
        for label, rows in (("passages + background", with_bg), ("passages only", without_bg)):
            if "gap" not in feats and label == "passages only":
                continue
            a, fr, ur = figures(rows, feats)
            print(f"| {name} | {label} | {a:.3f} | {fr:.3f} | {ur:.3f} |")


if __name__ == "__main__":
    main()
