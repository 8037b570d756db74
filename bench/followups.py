"""Follow-up questions: hit@5 of the second turn alone, with the previous question, and asked in full.

    python bench/followups.py [--index vectors/default] [--dialogues tests/data/dialogues.jsonl]

Each dialogue has `context` (the first question), `query` (an elliptical follow-up such as
那上海呢？), `full` (the same follow-up asked in full) and `answers`. The follow-up is searched
the way the chat searches it (`Retriever.search(query, context=...)`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.evaluate import corpus_of, load_queries, relevant_ids  # noqa: E402
from qa.search import Retriever  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "vectors/default"))
    ap.add_argument("--dialogues", default=str(ROOT / "tests/data/dialogues.jsonl"))
    args = ap.parse_args()
    retriever = Retriever.load(args.index, check_stale=False)
    corpus = corpus_of(retriever)
    full = {
        json.loads(line)["id"]: json.loads(line)["full"]
        for line in Path(args.dialogues).read_text("utf-8").splitlines()
        if line.strip()
    }
    counts = {"alone": 0, "with context": 0, "in full": 0}
    rewritten = 0
    dialogues = load_queries(args.dialogues)
    for q in dialogues:
        relevant = relevant_ids(q, corpus)
        runs = {
            "alone": retriever.search(q.query, k=5),
            "with context": retriever.search(q.query, k=5, context=q.context),
            "in full": retriever.search(full[q.id], k=5),
        }
        rewritten += runs["with context"].interpreted_as is not None
        for name, result in runs.items():
            counts[name] += any(h.id in relevant for h in result.hits)
    n = len(dialogues)
    print(f"{args.dialogues}: {n} dialogues, {rewritten} follow-ups recognized as elliptical")
    print(" | ".join(f"hit@5 {name} {c / n:.2f}" for name, c in counts.items()))


if __name__ == "__main__":
    main()
