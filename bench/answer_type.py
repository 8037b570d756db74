"""The answer-type veto (qa.answer_type, the `untyped` feature): what it catches and what it costs.

    python bench/answer_type.py [--trial PATH] [--drcd-test PATH] [--articles 256,180] [--flagged]

For each set, today's search (hybrid, k=5) is run and its top hit's confidence computed twice,
with the shipped calibration and with the same calibration without the veto (its weight 0).
Reported: how often the veto fires on answerable and on unanswerable questions, the AUROC, and
the verdict shares ("answered" from the calibration's confident level, "not found" below its
threshold) with and without it. `--flagged` prints the answerable questions it flags.

The sets, all of them allowed for choosing:
- tests/data/dev.jsonl (the calibration is fitted on it) and tests/data/reader_dev.jsonl;
- CMRC 2018 trial and DRCD test (the reader's training data: ~/.cache/qa/reader/raw/, see
  docs/reader.md), indexed as bench/reader.py indexes a set, a fifth of the articles held out so
  that their questions are unanswerable: Wikipedia articles nobody here wrote, off-topic rather
  than near-topic questions.
Never CMRC dev or DRCD dev: bench/reader.py measures those, once per change.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RAW = Path.home() / ".cache" / "qa" / "reader" / "raw"


def _bench_reader() -> Any:
    spec = importlib.util.spec_from_file_location("bench_reader", ROOT / "bench" / "reader.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_reader"] = module
    spec.loader.exec_module(module)
    return module


def rows_of_queries(path: Path) -> list[tuple[str, dict[str, float], bool]]:
    from qa.evaluate import load_queries
    from qa.search import Retriever

    retriever = Retriever.load(ROOT / "vectors" / "default")
    out = []
    for q in load_queries(path):
        result = retriever.search(q.query, k=5)
        if result.hits:
            out.append((q.query, result.hits[0].features, q.answerable))
    return out


def rows_of_squad(name: str, path: Path, articles: int) -> list[tuple[str, dict[str, float], bool]]:
    br = _bench_reader()
    split = br.split_set(name, json.loads(path.read_text("utf-8")), 13, articles, None)
    retriever, _ = br.open_index(split, br.BENCH_CACHE, None)
    out = []
    for q in split.questions:
        result = retriever.search(q.text, k=5)
        if result.hits:
            out.append((q.text, result.hits[0].features, q.answerable))
    return out


def figures(rows: list[tuple[str, dict[str, float], bool]], cal: Any) -> dict[str, float]:
    from qa.calibration import confidence
    from qa.evaluate import auroc

    scores = [confidence(cal, f) for _, f, _ in rows]
    ans = [s for s, (_, _, a) in zip(scores, rows, strict=True) if a]
    una = [s for s, (_, _, a) in zip(scores, rows, strict=True) if not a]

    def share(xs: list[float], test: Any) -> float:
        return round(sum(map(test, xs)) / len(xs), 3) if xs else float("nan")

    return {
        "auroc": round(auroc(scores, [a for *_, a in rows]), 3),
        "answerable answered": share(ans, lambda s: s >= cal.confident),
        "answerable refused": share(ans, lambda s: s < cal.threshold),
        "unanswerable answered": share(una, lambda s: s >= cal.confident),
        "unanswerable refused": share(una, lambda s: s < cal.threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial", type=Path, default=RAW / "cmrc2018_trial.json")
    parser.add_argument("--drcd-test", type=Path, default=RAW / "DRCD_test.json")
    parser.add_argument("--articles", default="256,180", help="articles sampled from the trial and test sets")
    parser.add_argument("--flagged", action="store_true", help="print the answerable questions the veto flags")
    args = parser.parse_args()

    from qa.calibration import DEFAULTS

    shipped = DEFAULTS["intfloat/multilingual-e5-small"]
    without = dataclasses.replace(
        shipped,
        weights=tuple(0.0 if f == "untyped" else w for f, w in zip(shipped.features, shipped.weights, strict=True)),
    )
    n_trial, n_test = (int(x) for x in args.articles.split(","))
    sets = {
        "dev": rows_of_queries(ROOT / "tests" / "data" / "dev.jsonl"),
        "reader_dev": rows_of_queries(ROOT / "tests" / "data" / "reader_dev.jsonl"),
    }
    for name, path, n in (("cmrc_trial", args.trial, n_trial), ("drcd_test", args.drcd_test, n_test)):
        if path.exists():
            sets[name] = rows_of_squad(name, path, n)
        else:
            print(f"{path} is missing: {name} skipped (docs/reader.md says how to fetch it)", file=sys.stderr)
    for name, rows in sets.items():
        flagged = [(q, a) for q, f, a in rows if f.get("untyped")]
        ans, una = sum(a for *_, a in rows), sum(not a for *_, a in rows)
        print(f"{name}: {ans} answerable, {una} unanswerable; the veto fires on "
              f"{sum(a for _, a in flagged) / max(1, ans):.1%} of answerable, "
              f"{sum(not a for _, a in flagged) / max(1, una):.1%} of unanswerable")  # fmt: skip
        for label, cal in (("without the veto", without), ("shipped", shipped)):
            print(f"  {label:17s} " + "  ".join(f"{k} {v}" for k, v in figures(rows, cal).items()))
        if args.flagged:
            for q, a in flagged:
                if a:
                    print(f"    flagged, answerable: {q}")


if __name__ == "__main__":
    main()
