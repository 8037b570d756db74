"""The answer line: how often the sentence a reply shows as 答： holds the answer.

    python bench/evidence.py [--index vectors/default] [--queries tests/data/dev.jsonl] [--weights 0,0.1,0.3]
                             [--type-weights 0,0.05,0.1]

For every answerable question whose top hit is relevant and has several sentences, the
evidence sentence (`Hit.evidence`) counts as right when it holds one of the question's
answers (or lies inside one), after NFKC and whitespace removal. Each weight is a value of
`qa.search.EVIDENCE_KEYWORD_WEIGHT` (the share of the question's keywords a sentence holds,
added to its cosine); each type weight a value of `qa.search.EVIDENCE_TYPE_WEIGHT` (added when
the sentence holds an answer of the kind asked, qa.answer_type). Choose on the dev split; report the test split once.
"""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qa.search  # noqa: E402
from qa.evaluate import corpus_of, load_queries, relevant_ids  # noqa: E402


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=str(ROOT / "vectors/default"))
    ap.add_argument("--queries", default=str(ROOT / "tests/data/dev.jsonl"))
    ap.add_argument("--weights", default=str(qa.search.EVIDENCE_KEYWORD_WEIGHT))
    ap.add_argument("--type-weights", default=str(qa.search.EVIDENCE_TYPE_WEIGHT))
    ap.add_argument("--lead-ins", default=str(qa.search.EVIDENCE_LEAD_IN_CHARS),
                    help="values of EVIDENCE_LEAD_IN_CHARS (0: off); also reports the answer line's mean length")  # fmt: skip
    args = ap.parse_args()
    retriever = qa.search.Retriever.load(args.index, check_stale=False)
    corpus = corpus_of(retriever)
    queries = [q for q in load_queries(args.queries) if q.answers]
    grid = [(float(w), float(t), int(n)) for w in args.weights.split(",") for t in args.type_weights.split(",")
            for n in args.lead_ins.split(",")]  # fmt: skip
    for weight, typed, lead_in in grid:
        qa.search.EVIDENCE_KEYWORD_WEIGHT = weight
        qa.search.EVIDENCE_TYPE_WEIGHT = typed
        qa.search.EVIDENCE_LEAD_IN_CHARS = lead_in
        counted = right = length = 0
        for q in queries:
            hits = retriever.search(q.query, k=5).hits
            if not hits or hits[0].id not in relevant_ids(q, corpus) or hits[0].evidence is None:
                continue
            start, end = hits[0].evidence
            sentence = _norm(hits[0].text[start:end])
            counted += 1
            length += len(sentence)
            right += any(_norm(a) in sentence or sentence in _norm(a) for a in q.answers)
        print(f"{args.queries}: weight {weight}, type weight {typed}, lead-in {lead_in}: {right}/{counted} evidence "
              f"sentences hold the answer ({right / max(counted, 1):.3f}), {length / max(counted, 1):.0f} characters "
              f"on average")  # fmt: skip


if __name__ == "__main__":
    main()
