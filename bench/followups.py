"""Follow-up questions: hit@5 of the second turn alone, with the previous question, and asked in full.

    python bench/followups.py [--index vectors/default] [--dialogues tests/data/dialogues.jsonl] [--summary]

Each dialogue has `context` (the first question), `query` (the second turn), `full` (the
second turn asked in full) and `answers`. The second turn is searched the way the chat
searches it (`Retriever.search(query, context=...)`).

kind "followup": `query` is elliptical (那上海呢？); with context it should reach the hit@5 of
`full`. kind "new": `query` is a full new question; with context it must do as well as alone
(the rule should leave it alone). The misses are printed per dialogue unless --summary.

tests/data/dialogues.jsonl is the development set (the rule was written on it);
tests/data/dialogues_test.jsonl is held out: run it with --summary while tuning.
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

RUNS = ("alone", "with context", "in full")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "vectors/default"))
    ap.add_argument("--dialogues", default=str(ROOT / "tests/data/dialogues.jsonl"))
    ap.add_argument("--summary", action="store_true", help="only the figures, not the misses per dialogue")
    args = ap.parse_args()
    retriever = Retriever.load(args.index, check_stale=False)
    corpus = corpus_of(retriever)
    rows = {
        json.loads(line)["id"]: json.loads(line)
        for line in Path(args.dialogues).read_text("utf-8").splitlines()
        if line.strip()
    }
    by_kind: dict[str, dict[str, int]] = {}
    rewritten: dict[str, int] = {}
    misses: list[str] = []
    for q in load_queries(args.dialogues):
        relevant = relevant_ids(q, corpus)
        runs = {
            "alone": retriever.search(q.query, k=5),
            "with context": retriever.search(q.query, k=5, context=q.context),
            "in full": retriever.search(rows[q.id]["full"], k=5),
        }
        counts = by_kind.setdefault(q.kind, dict.fromkeys(("n", *RUNS), 0))
        counts["n"] += 1
        interpreted = runs["with context"].interpreted_as
        rewritten[q.kind] = rewritten.get(q.kind, 0) + (interpreted is not None)
        hit = {name: any(h.id in relevant for h in result.hits) for name, result in runs.items()}
        for name in RUNS:
            counts[name] += hit[name]
        if not hit["with context"] or (q.kind == "new" and interpreted is not None):
            missed = [name for name in RUNS if not hit[name]]
            misses.append(
                f"  {q.id} [{q.kind}] {q.query!r}: missed {', '.join(missed) or 'nothing'}; "
                f"searched as {interpreted or q.query!r}"
            )
    total = sum(c["n"] for c in by_kind.values())
    print(f"{args.dialogues}: {total} dialogues")
    for kind, c in sorted(by_kind.items()):
        n = c["n"]
        print(
            f"  {kind:<9} n={n:<3} searched with context: {rewritten[kind]}/{n} | "
            + " | ".join(f"hit@5 {name} {c[name] / n:.2f}" for name in RUNS)
        )
    if misses and not args.summary:
        print("misses with context (and new questions rewritten):")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
