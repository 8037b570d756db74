"""Does the reader tell answerable from near-topic questions better than today's confidence, and
does its span hold the answer more often than today's evidence sentence?

    python bench/reader_study.py --weights DIR [--index vectors/default] [--queries tests/data/reader_dev.jsonl ...]
                                 [--read 3] [--json]

For every question of the query files: today's search (hybrid, k=5) gives the top hit, its
confidence and its verdict; the reader reads the top `--read` passages in one batch. Reported,
per file and kind:
- AUROC, answerable against unanswerable (near_topic, unanswerable), of today's top confidence,
  of the reader's best answerability, and of their product;
- where the top passage holds a gold answer: how often today's evidence sentence holds it, how
  often the reader's span (read on that passage) holds it (a span that is only part of the gold
  answer does not count), and how often the sentence around the span holds it (what an answer
  line with the span marked inside its sentence would show);
- the reader's time per question.

Choose only on the development files (tests/data/dev.jsonl, tests/data/reader_dev.jsonl);
test.jsonl is for reporting once. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UNANSWERABLE = ("near_topic", "unanswerable")


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random answerable question scores above a random unanswerable one."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 3)


def holds(text: str, answers: list[str]) -> bool:
    from qa.evaluate import holds as holds_any

    return holds_any(text, answers)


def _sentence_of(text: str, span: tuple[int, int] | None) -> str:
    """The sentence(s) of `text` that the span overlaps: what the answer line would show."""
    from qa.split import split_sentences

    if span is None:
        return ""
    parts = [(s, e) for s, e in split_sentences(text) if s < span[1] and e > span[0]]
    return text[parts[0][0] : parts[-1][1]] if parts else text[span[0] : span[1]]


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def study(retriever: Any, reader: Any, rows: list[dict[str, Any]], read: int) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        result = retriever.search(row["query"], k=5)
        hits = result.hits[:read]
        t = time.perf_counter()
        readings = reader.read(row["query"], [h.text for h in hits]) if hits and reader is not None else []
        ms = (time.perf_counter() - t) * 1000
        top = result.hits[0] if result.hits else None
        answers = row.get("answers") or []
        record: dict[str, Any] = {
            "id": row["id"],
            "kind": row.get("kind", ""),
            "answerable": bool(answers),
            "confidence": result.confidence,
            "verdict": result.verdict,
            "reader": max((r.answerable for r in readings), default=0.0),
            "reader_top": readings[0].answerable if readings else 0.0,
            "reader_ms": ms,
        }
        if top is not None and answers and holds(top.text, answers):
            s, e = top.evidence or (0, len(top.text))
            record["evidence_holds"] = holds(top.text[s:e], answers)
            span = readings[0].text if readings else ""
            record["evidence"] = top.text[s:e]
            record["span_sentence_holds"] = bool(readings) and holds(_sentence_of(top.text, readings[0].span), answers)
            record["span_holds"] = bool(span) and holds(span, answers)
            record["span"] = span
        out.append(record)
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    pos = [r for r in records if r["answerable"]]
    neg = [r for r in records if r["kind"] in UNANSWERABLE]
    near = [r for r in records if r["kind"] == "near_topic"]
    summary: dict[str, Any] = {"questions": len(records), "answerable": len(pos), "near_topic": len(near)}
    for name, key in (("today", "confidence"), ("reader", "reader"), ("reader_top", "reader_top")):
        summary[f"auroc_{name}"] = auroc([r[key] for r in pos], [r[key] for r in neg])
        summary[f"auroc_near_{name}"] = auroc([r[key] for r in pos], [r[key] for r in near])
    product = [r["confidence"] * r["reader"] for r in pos], [r["confidence"] * r["reader"] for r in near]
    summary["auroc_near_product"] = auroc(*product)
    right = [r for r in records if "evidence_holds" in r]
    if right:
        summary["top_right"] = len(right)
        summary["evidence_holds"] = round(sum(r["evidence_holds"] for r in right) / len(right), 3)
        summary["span_holds"] = round(sum(r["span_holds"] for r in right) / len(right), 3)
        summary["span_sentence_holds"] = round(sum(r["span_sentence_holds"] for r in right) / len(right), 3)
    verdicts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        verdicts["answerable" if r["answerable"] else r["kind"]][r["verdict"]] += 1
    summary["today_verdicts"] = {k: dict(v) for k, v in verdicts.items()}
    summary["reader_ms_p50"] = round(statistics.median(r["reader_ms"] for r in records), 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="reader weights folder (default: the shipped ones)")
    parser.add_argument("--index", type=Path, default=ROOT / "vectors" / "default")
    parser.add_argument(
        "--queries", type=Path, nargs="+",
        default=[ROOT / "tests" / "data" / "reader_dev.jsonl", ROOT / "tests" / "data" / "dev.jsonl"],
    )  # fmt: skip
    parser.add_argument("--read", type=int, default=3, help="passages the reader reads per question")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-reader", action="store_true", help="today's figures only")
    parser.add_argument("--dump", type=Path, default=None, help="write every question's record here (JSONL)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from qa.reader.model import Reader
    from qa.search import Retriever

    retriever = Retriever.load(args.index)
    retriever.warm_up()
    reader = None if args.no_reader else Reader.load(args.weights, threads=args.threads)
    results: dict[str, Any] = {}
    dump = []
    for path in args.queries:
        records = study(retriever, reader, load(path), args.read)
        dump += [{"file": path.name, **r} for r in records]
        results[path.name] = summarize(records)
    if args.dump:
        args.dump.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dump), "utf-8")
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    else:
        for name, summary in results.items():
            print(name)
            for key, value in summary.items():
                print(f"  {key:22s} {value}")


if __name__ == "__main__":
    main()
