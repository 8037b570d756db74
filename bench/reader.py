"""The whole system on real data nobody here wrote: CMRC 2018 dev and DRCD dev.

    python bench/reader.py                                          # both sets, every article and question
    python bench/reader.py --articles 20 --questions 100            # a quick run
    python bench/reader.py --sets drcd --limit-index 100 --json     # one set, at most 100 indexed articles

The data (Chinese Wikipedia reading comprehension, SQuAD format, CC BY-SA; not in this repository):
- CMRC 2018 dev, https://github.com/ymcui/cmrc2018, file squad-style-data/cmrc2018_dev.json
  (848 articles of one paragraph, 3,219 questions, simplified Chinese);
- DRCD dev, https://github.com/DRCKnowledgeTeam/DRCD, file DRCD_dev.json
  (383 articles, 1,000 paragraphs, 3,524 questions, traditional Chinese).
Save them as ~/.cache/qa/bench/cmrc2018_dev.json and ~/.cache/qa/bench/DRCD_dev.json, or pass
their paths with --cmrc and --drcd.

THESE TWO FILES ARE RESERVED FOR MEASUREMENT. Nothing is fitted, tuned or chosen on them: this
script builds an index with the defaults and asks. Choose on tests/data/dev.jsonl and
tests/data/reader_dev.jsonl; a figure here is reported, never optimized.

Per set, with a fixed seed: the articles (optionally `--articles N` of them, sampled) are
split, one fifth held out. Each other article becomes one .txt document (its title line, then
its paragraphs separated by blank lines), indexed with `qa.build_index` and the configured model;
the index is cached in ~/.cache/qa/bench/index-<set>-<hash of the documents and settings>, so a
rerun reuses it (with the shipped calibration of the running code, written into its manifest). `--limit-index N` keeps at most N of the indexed articles (the questions of
those dropped are not asked). The held-out articles' questions cannot be answered from the index.

Every question (or `--questions N`, sampled) is asked with `Retriever.search(question, k=5)`
(hybrid). Reported:
- answerable questions: hit@1, hit@5 (the hit's text holds a gold answer: both sides through
  `qa.lexical.fold`, NFKC + lower case + traditional -> simplified, whitespace removed), MRR@5;
  EM and F1 of the shown answer against the gold answers, by the CMRC 2018 evaluation's rules
  (its punctuation list removed, Chinese characters as tokens and Latin/digit runs as words,
  F1 from the longest common substring, max over the gold answers), after the same fold; and
  how often the shown answer holds a gold answer. The shown answer is `result.answer.text`
  where the result has an answer (a reader), else the top hit's evidence sentence, else the
  top hit's text;
- the verdicts ("answered", "uncertain", "not_found") of answerable and of unanswerable questions;
- AUROC of `result.confidence`, answerable against unanswerable;
- search time p50/p95 (the whole call, the question embedded afresh);
- the commit, the seed, the counts, the data files' SHA-256, the load average before and after.
A question whose search fails is counted (`failures`), not fatal. Printed (or, with --json, one
JSON object), never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BENCH_CACHE = Path.home() / ".cache" / "qa" / "bench"
SETS = {"cmrc2018": BENCH_CACHE / "cmrc2018_dev.json", "drcd": BENCH_CACHE / "DRCD_dev.json"}
HELD_OUT = 0.2  # the share of articles whose paragraphs are not indexed
K = 5
VERDICTS = ("answered", "uncertain", "not_found")
MAX_FAILURE_NOTES = 5

# The CMRC 2018 evaluation's punctuation (cmrc2018_evaluate.py, sp_char), removed before EM and F1.


# ---------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...]
    article: str
    answerable: bool


@dataclass(frozen=True, slots=True)
class Split:
    """One set as measured: the documents to index and the questions to ask."""

    name: str
    documents: dict[str, str]  # file name -> text
    questions: list[Question]
    articles: int
    indexed: int
    held_out: int


def article_text(article: dict[str, Any]) -> str:
    parts = [str(article.get("title") or "").strip()]
    parts += [re.sub(r"\n\s*\n", "\n", p["context"].strip()) for p in article["paragraphs"]]
    return "\n\n".join(p for p in parts if p) + "\n"


def split_set(name: str, data: dict[str, Any], seed: int, articles: int | None, limit_index: int | None) -> Split:
    """Sample, hold out and limit the articles of one set, each step from its own seeded stream."""
    entries = [a for a in data["data"] if a.get("paragraphs")]
    if articles is not None and articles < len(entries):
        entries = random.Random(f"{seed}-articles").sample(entries, articles)
    order = list(range(len(entries)))
    random.Random(f"{seed}-held-out").shuffle(order)
    n_out = round(len(entries) * HELD_OUT)
    held_out, indexed = sorted(order[:n_out]), sorted(order[n_out:])
    if limit_index is not None and limit_index < len(indexed):
        indexed = sorted(random.Random(f"{seed}-limit-index").sample(indexed, limit_index))
    documents: dict[str, str] = {}
    questions: list[Question] = []
    for answerable, chosen in ((True, indexed), (False, held_out)):
        for i in chosen:
            article = entries[i]
            aid = str(article.get("id", i))
            if answerable:
                safe = re.sub(r"[^0-9A-Za-z_-]", "_", aid)[:40]
                documents[f"{i:04d}_{safe}.txt"] = article_text(article)
            for p in article["paragraphs"]:
                for q in p["qas"]:
                    answers = tuple(a["text"] for a in q.get("answers", []) if a.get("text", "").strip())
                    if q.get("question", "").strip() and answers:
                        questions.append(Question(str(q["id"]), q["question"], answers, aid, answerable))
    return Split(name, documents, questions, len(entries), len(indexed), len(held_out))


# ---------------------------------------------------------------- the index


def index_key(split: Split, model: str) -> str:
    """What decides the index: the documents, the model and the splitter's parameters."""
    from qa import __version__
    from qa.split import DEFAULT_MAX_CHARS, DEFAULT_NEAR_DUP

    h = hashlib.sha256(f"{model}\n{DEFAULT_MAX_CHARS}\n{DEFAULT_NEAR_DUP}\n{__version__}\n".encode())
    for file, text in sorted(split.documents.items()):
        h.update(f"{file}\n{len(text)}\n{text}".encode())
    return h.hexdigest()[:16]


def open_index(split: Split, cache: Path, model: str | None) -> tuple[Any, dict[str, Any]]:
    """The cached index of `split`'s documents, built first (in a temporary docs folder) if missing."""
    from qa import QAError, Retriever, build_index
    from qa.calibration import default_for
    from qa.embed import configured_model

    name = model or configured_model()
    folder = cache / f"index-{split.name}-{index_key(split, name)}"
    info: dict[str, Any] = {"index_dir": str(folder), "model": name, "documents": len(split.documents)}
    if (folder / "manifest.json").exists():
        try:
            retriever = Retriever.load(folder, model=model, check_stale=False)  # its docs folder is gone
            shipped = default_for(retriever.manifest.model)
            if retriever.manifest.calibration != shipped:  # built before the shipped calibration changed
                retriever.index.save_calibration(shipped)
                retriever = Retriever.load(folder, model=model, check_stale=False)
            info.update(reused=True, build_s=None, passages=retriever.manifest.passage_count)
            return retriever, info
        except QAError as e:
            print(f"  the cached index in {folder} does not open ({e}); rebuilding it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=f"qa-bench-{split.name}-") as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for file, text in split.documents.items():
            (docs / file).write_text(text, "utf-8")
        print(f"  indexing {len(split.documents)} articles into {folder}", file=sys.stderr, flush=True)
        report = build_index(docs, folder, model=model, force=True)
    info.update(reused=False, build_s=round(report.seconds, 1), passages=report.passages, units=report.units)
    return Retriever.load(folder, model=model, check_stale=False), info


# ---------------------------------------------------------------- the measures


def shown_answer(result: Any) -> str:
    """What the user reads as the answer: a reader's span, else the evidence sentence, else the passage."""
    answer = getattr(result, "answer", None)
    if answer is not None:
        return str(answer.text)
    if not result.hits:
        return ""
    top = result.hits[0]
    if top.evidence:
        s, e = top.evidence
        return str(top.text[s:e])
    return str(top.text)


def auroc(pos: list[float], neg: list[float]) -> float | None:
    """P(an answerable question's confidence > an unanswerable one's), ties counting half (ranks)."""
    if not pos or not neg:
        return None
    scored = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # the mean 1-based rank of the tie group
        rank_sum += mid * sum(label for _, label in scored[i:j])
        i = j
    return round((rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)), 4)


def shares(verdicts: list[str]) -> dict[str, float | None]:
    counts = Counter(verdicts)
    return {v: (round(counts[v] / len(verdicts), 4) if verdicts else None) for v in VERDICTS}


def mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def ms_percentiles(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p95": None}
    s = sorted(ms)
    return {"p50": round(statistics.median(s), 1), "p95": round(s[int(0.95 * (len(s) - 1))], 1)}


# ---------------------------------------------------------------- the run


def ask(retriever: Any, questions: list[Question], time_limit: float | None) -> dict[str, Any]:
    """Ask each question once (in the given order), stopping early only past `time_limit` seconds."""
    from qa.evaluate import em_f1, holds

    encoder = retriever.encoder
    retriever.warm_up()
    started = time.perf_counter()
    rr: list[float] = []
    top1: list[float] = []
    top5: list[float] = []
    em: list[float] = []
    f1: list[float] = []
    shown_holds: list[float] = []
    verdicts: dict[bool, list[str]] = {True: [], False: []}
    confidence: dict[bool, list[float]] = {True: [], False: []}
    times: list[float] = []
    failures: list[str] = []
    asked = from_reader = 0
    for q in questions:
        if time_limit is not None and time.perf_counter() - started > time_limit:
            break
        asked += 1
        try:
            getattr(encoder, "_cache", {}).clear()  # the question embedded afresh, as a new one would be
            t = time.perf_counter()
            result = retriever.search(q.text, k=K)
            times.append((time.perf_counter() - t) * 1000)
            verdicts[q.answerable].append(result.verdict)
            confidence[q.answerable].append(float(result.confidence))
            if q.answerable:
                rank = next((h for h, hit in enumerate(result.hits[:K], 1) if holds(hit.text, q.answers)), 0)
                rr.append(1 / rank if rank else 0.0)
                top1.append(float(rank == 1))
                top5.append(float(rank > 0))
                shown = shown_answer(result)
                from_reader += getattr(result, "answer", None) is not None
                e, f = em_f1(shown, q.answers)
                em.append(e)
                f1.append(f)
                shown_holds.append(float(holds(shown, q.answers)))
        except Exception as e:  # one question's failure is counted, not fatal
            failures.append(f"{q.id}: {type(e).__name__}: {e}"[:300])
    return {
        "asked": asked,
        "answerable": len(rr),
        "unanswerable": len(verdicts[False]),
        "failures": len(failures),
        "failure_examples": failures[:MAX_FAILURE_NOTES],
        "stopped_early": asked < len(questions),
        "hit@1": mean(top1),
        "hit@5": mean(top5),
        "mrr@5": mean(rr),
        "answer_em": mean(em),
        "answer_f1": mean(f1),
        "answer_holds_gold": mean(shown_holds),
        "verdicts_answerable": shares(verdicts[True]),
        "verdicts_unanswerable": shares(verdicts[False]),
        "confidence_auroc": auroc(confidence[True], confidence[False]),
        "search_ms": ms_percentiles(times),
        "answers_from_reader": from_reader,
    }


def measure(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"{path} is missing. Get it as this script's docstring says (python {__file__} --help).")
    print(f"{name}: {path}", file=sys.stderr, flush=True)
    data = json.loads(path.read_text("utf-8"))
    split = split_set(name, data, args.seed, args.articles, args.limit_index)
    questions = split.questions
    if args.questions is not None and args.questions < len(questions):
        questions = random.Random(f"{args.seed}-questions").sample(questions, args.questions)
    else:
        questions = random.Random(f"{args.seed}-questions").sample(questions, len(questions))  # a random order
    from qa.index import sha256_file

    retriever, index = open_index(split, args.cache, args.model)
    out: dict[str, Any] = {
        "file": str(path),
        "sha256": sha256_file(path),
        "version": data.get("version"),
        "articles": split.articles,
        "articles_indexed": split.indexed,
        "articles_held_out": split.held_out,
        "questions_available": len(split.questions),
        "questions_sampled": len(questions),
        "index": index,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"  asking {len(questions)} questions", file=sys.stderr, flush=True)
    out.update(ask(retriever, questions, args.time_limit))
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def commit() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "qa"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmrc", type=Path, default=SETS["cmrc2018"], help="CMRC 2018 dev (SQuAD format)")
    parser.add_argument("--drcd", type=Path, default=SETS["drcd"], help="DRCD dev")
    parser.add_argument("--sets", default="cmrc2018,drcd", help="comma-separated: cmrc2018, drcd")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--articles", type=int, help="sample this many articles per set (default: all)")
    parser.add_argument("--limit-index", type=int, help="index at most this many articles per set")
    parser.add_argument("--questions", type=int, help="ask this many sampled questions per set (default: all)")
    parser.add_argument("--time-limit", type=float, help="stop asking a set after this many seconds (a random prefix)")
    parser.add_argument("--model", help="the encoder (default: the configured model)")
    parser.add_argument("--cache", type=Path, default=BENCH_CACHE, help="where built indexes are kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        parser.error(f"unknown set {', '.join(unknown)}; choose from {', '.join(SETS)}")
    for option in ("articles", "limit_index", "questions"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    paths = {"cmrc2018": args.cmrc, "drcd": args.drcd}
    started = time.perf_counter()
    results: dict[str, Any] = {
        **commit(),
        "seed": args.seed,
        "k": K,
        "mode": "hybrid",
        "held_out_share": HELD_OUT,
        "options": {
            "articles": args.articles,
            "limit_index": args.limit_index,
            "questions": args.questions,
            "time_limit": args.time_limit,
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "sets": {name: measure(name, paths[name], args) for name in names},
    }
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, ensure_ascii=False, indent=1) if args.json else report(results))


def pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def report(r: dict[str, Any]) -> str:
    lines = [
        f"bench/reader.py at {(r['commit'] or '?')[:12]}{' (qa/ modified)' if r['dirty'] else ''}, seed {r['seed']}, "
        f"hybrid k={r['k']}, {r['wall_s']:.0f} s, load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}"
    ]
    for name, s in r["sets"].items():
        ix = s["index"]
        built = "reused" if ix["reused"] else f"built in {ix['build_s']:.0f} s"
        lines += [
            "",
            f"{name}: {s['articles']} articles ({s['articles_indexed']} indexed, {s['articles_held_out']} held out), "
            f"{ix['passages']} passages ({built}), {s['asked']} of {s['questions_available']} questions asked "
            f"({s['answerable']} answerable, {s['unanswerable']} not), {s['failures']} failures"
            + (", stopped at the time limit" if s["stopped_early"] else ""),
            f"  answerable     hit@1 {pct(s['hit@1'])}   hit@5 {pct(s['hit@5'])}   MRR@5 {s['mrr@5'] or 0:.3f}",
            f"  shown answer   EM {pct(s['answer_em'])}   F1 {pct(s['answer_f1'])}   holds gold {pct(s['answer_holds_gold'])}",
            f"  {'verdicts':14s} {'answered':>9s} {'uncertain':>10s} {'not_found':>10s}",
        ]
        for kind in ("answerable", "unanswerable"):
            v = s[f"verdicts_{kind}"]
            lines.append(f"  {kind:14s} {pct(v['answered']):>9s} {pct(v['uncertain']):>10s} {pct(v['not_found']):>10s}")
        auc = s["confidence_auroc"]
        lines.append(
            f"  confidence AUROC {'-' if auc is None else f'{auc:.3f}'}   search p50 {s['search_ms']['p50']} ms, "
            f"p95 {s['search_ms']['p95']} ms   load {s['load_before'][0]:.2f} -> {s['load_after'][0]:.2f}"
        )
        for note in s["failure_examples"]:
            lines.append(f"  failure: {note}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
