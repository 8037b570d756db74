"""Stage 6: labelled query sets and retrieval metrics (`qa eval`).

A query set is JSONL, one question per line:
    {"id": "q01", "query": "...", "answers": ["exact substring", ...], "kind": "fact"}
A passage is relevant when its text, NFKC-normalized with all whitespace removed,
contains one of the answers normalized the same way (or its id is in "passages").
"answers": [] marks a question the corpus cannot answer.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import types
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa import calibration
from qa.embed import Encoder
from qa.errors import QuerySetError
from qa.index import Index, build_index
from qa.manifest import Calibration
from qa.search import Mode, Retriever, SearchResult
from qa.split import normalize

KS = (1, 3, 5, 10)
MODES_ORDER: tuple[Mode, ...] = ("hybrid", "dense", "lexical")
# Regularization of the calibration fit, chosen by leave-one-out on the shipped set
# (l2 1 / 5 / 10 / 20: unanswerable refused 0.71 / 0.79 / 0.75 / 0.71 at answerable refused
# 0.062 / 0.045 / 0.036 / 0.107).
CALIBRATION_L2 = 5.0
# The "no answer" policy (`qa eval --calibrate`): refuse at most 3% of the answerable
# questions, and say "answered" (rather than 可能相关) only where at most 10% of the
# unanswerable ones reach, both judged on 5-fold out-of-fold confidences.
MAX_FALSE_REFUSALS = 0.03
MAX_FALSE_ANSWERS = 0.10
CV_FOLDS = 5


@dataclass(frozen=True, slots=True)
class Query:
    """One labelled question. `lang` is "zh", "en" or "mixed" (default: "en" for kind english);
    `group` ties paraphrases of one fact together (they stay on one side of a split);
    `context` is the previous question of a two-turn dialogue."""

    id: str
    query: str
    answers: tuple[str, ...]
    kind: str = "fact"
    passages: tuple[str, ...] = ()
    lang: str | None = None
    group: str | None = None
    context: str | None = None
    review: bool = False

    @property
    def answerable(self) -> bool:
        return bool(self.answers or self.passages)

    @property
    def language(self) -> str:
        return self.lang or ("en" if self.kind == "english" else "zh")


def load_queries(path: str | Path) -> list[Query]:
    """Read a JSONL query set; a malformed line raises QuerySetError naming its line number."""
    p = Path(path)
    if not p.is_file():
        raise QuerySetError(f"Query set {p} does not exist. Pass a JSONL file, e.g. qa eval tests/data/queries.jsonl")
    queries: list[Query] = []
    seen: set[str] = set()
    for lineno, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{p}:{lineno}"
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuerySetError(f"{where}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from exc
        if not isinstance(d, dict):
            raise QuerySetError(f"{where}: expected a JSON object, got {type(d).__name__}.")
        q, answers = d.get("query"), d.get("answers")
        if not isinstance(q, str) or not q.strip():
            raise QuerySetError(f'{where}: "query" must be a non-empty string.')
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise QuerySetError(
                f'{where}: "answers" must be a list of non-empty strings ([] for an unanswerable question).'
            )
        gold = d.get("passages", [])
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            raise QuerySetError(f'{where}: "passages" must be a list of passage ids.')
        qid = str(d.get("id") or f"line{lineno}")
        if qid in seen:
            raise QuerySetError(f"{where}: duplicate id {qid!r}.")
        seen.add(qid)
        extra = {k: d[k] for k in ("lang", "group", "context") if isinstance(d.get(k), str)}
        queries.append(Query(qid, q, tuple(answers), str(d.get("kind") or "fact"), tuple(gold),
                             review=bool(d.get("review")), **extra))  # fmt: skip
    if not queries:
        raise QuerySetError(f"{p} holds no queries.")
    return queries


Corpus = list[tuple[str, str]]  # (passage id, normalized text) of every passage of an index


def corpus_of(retriever: Retriever) -> Corpus:
    return [(p.id, normalize(p.text)) for p in retriever.passages()]


def relevant_ids(query: Query, corpus: Corpus) -> set[str]:
    """Ids of the passages that answer `query`: they contain an answer (both normalized) or are gold."""
    answers = [normalize(a) for a in query.answers]
    return {pid for pid, text in corpus if pid in query.passages or any(a in text for a in answers)}


def missing_answers(
    queries: Iterable[Query], retriever: Retriever, corpus: Corpus | None = None
) -> list[tuple[str, str]]:
    """(query id, answer) pairs that no passage of the index contains: they would count as misses."""
    texts = [text for _, text in (corpus if corpus is not None else corpus_of(retriever))]
    return [(q.id, a) for q in queries for a in q.answers if not any(normalize(a) in t for t in texts)]


@dataclass
class EvalResult:
    """Metrics of one retrieval mode over a query set, and one row per query."""

    mode: str
    k: int
    metrics: dict[str, float]
    by_kind: dict[str, dict[str, float]]
    by_language: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    threshold: float
    missing: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "k": self.k, "threshold": self.threshold, "metrics": self.metrics,
            "by_kind": self.by_kind, "by_language": self.by_language, "rows": self.rows,
            "missing_answers": [list(m) for m in self.missing],
        }  # fmt: skip


def _row(q: Query, result: SearchResult, corpus: Corpus) -> dict[str, Any]:
    relevant = relevant_ids(q, corpus)
    relevant_ranks = [h.rank for h in result.hits if h.id in relevant]
    top = result.hits[0] if result.hits else None
    return {
        "id": q.id,
        "group": q.group or q.id,
        "kind": q.kind,
        "language": q.language,
        "query": q.query,
        # answerable by this index: a question whose answers lie in no passage of it (a
        # document left out, say) counts as unanswerable here
        "answerable": q.answerable and bool(relevant),
        "first_relevant_rank": relevant_ranks[0] if relevant_ranks else None,
        "relevant_ranks": relevant_ranks,
        "relevant_total": len(relevant),
        "answered": result.answered,
        "verdict": result.verdict,
        "confidence": round(result.confidence, 4),
        "top_id": top.id if top else None,
        "top_text": top.text[:80] if top else "",
        "top_score": round(top.score, 4) if top else None,
        "top_features": {key: round(v, 5) for key, v in top.features.items()} if top else None,
        **_answer_scores(q, result),
    }


def _answer_scores(q: Query, result: SearchResult) -> dict[str, float | None]:
    """How the answer said first (`SearchResult.answer`) scores against the gold answers: whether
    it holds one, CMRC's EM and F1; None where nothing is said or no gold answer is given."""
    answer = result.answer
    if answer is None or not q.answers:
        return {"answer_holds": None, "answer_em": None, "answer_f1": None}
    em, f1 = em_f1(answer.text, q.answers)
    return {"answer_holds": float(holds(answer.text, q.answers)), "answer_em": em, "answer_f1": f1}


# The answer metrics of the CMRC 2018 evaluation script (character-level EM and F1 over its mixed
# segmentation), and whether the shown answer holds a gold answer at all.
PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』")
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\w+|[^\w\s]")  # stands in for nltk.word_tokenize on the non-Chinese runs


def normalized(text: str) -> str:
    """Folded as the index folds (NFKC, lower case, traditional → simplified), no whitespace."""
    from qa.lexical import fold

    return re.sub(r"\s+", "", fold(text))


def holds(text: str, answers: Sequence[str]) -> bool:
    """Whether `text` contains one of `answers` (both normalized)."""
    folded = normalized(text)
    return any(a and a in folded for a in (normalized(x) for x in answers))


def segments(text: str) -> list[str]:
    """The CMRC 2018 evaluation's mixed segmentation, punctuation removed: Chinese characters one
    by one, the runs between them as words."""
    out: list[str] = []
    run = ""
    for ch in text:
        if ch in PUNCTUATION:
            continue
        if _CJK.match(ch):
            out += _WORDS.findall(run)
            run = ""
            out.append(ch)
        else:
            run += ch
    return out + _WORDS.findall(run)


def longest_common_substring(a: list[str], b: list[str]) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def em_f1(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """CMRC 2018's exact match and F1 of `prediction` against the best of `answers`."""
    pred = normalized(prediction)
    pred_plain = "".join(c for c in pred if c not in PUNCTUATION)
    pred_segs = segments(pred)
    em = f1 = 0.0
    for answer in answers:
        gold = normalized(answer)
        if pred_plain == "".join(c for c in gold if c not in PUNCTUATION):
            em = 1.0
        gold_segs = segments(gold)
        common = longest_common_substring(gold_segs, pred_segs)
        if common:
            precision, recall = common / len(pred_segs), common / len(gold_segs)
            f1 = max(f1, 2 * precision * recall / (precision + recall))
    return em, f1


def _dcg(ranks: Sequence[int]) -> float:
    return sum(1.0 / math.log2(r + 1) for r in ranks)


def summarize(rows: list[dict[str, Any]], k: int) -> dict[str, float]:
    """hit@1/3/5/10, recall@k, MRR@10, nDCG@10 over answerable rows; abstention figures over all."""
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    m: dict[str, float] = {"queries": len(rows), "answerable": len(ans), "unanswerable": len(una)}
    if ans:
        for n in KS:
            m[f"hit@{n}"] = _mean(r["first_relevant_rank"] is not None and r["first_relevant_rank"] <= n for r in ans)
        m[f"recall@{k}"] = _mean(
            len([x for x in r["relevant_ranks"] if x <= k]) / max(r["relevant_total"], 1) for r in ans
        )
        m["mrr@10"] = _mean(
            1.0 / r["first_relevant_rank"] if r["first_relevant_rank"] and r["first_relevant_rank"] <= 10 else 0.0
            for r in ans
        )
        m["ndcg@10"] = _mean(
            _dcg([x for x in r["relevant_ranks"] if x <= 10])
            / (_dcg(range(1, min(r["relevant_total"], 10) + 1)) or 1.0)
            for r in ans
        )
        m["refused_answerable"] = _mean(not r["answered"] for r in ans)
        m["uncertain_answerable"] = _mean(r["verdict"] == "uncertain" for r in ans)
        m["answered_answerable"] = _mean(r["verdict"] == "answered" for r in ans)
        # the answer said first, where the top passage is right (the answer line's own figure)
        said = [r for r in ans if r["first_relevant_rank"] == 1 and r.get("answer_holds") is not None]
        if said:
            for key in ("answer_holds", "answer_em", "answer_f1"):
                m[key] = _mean(r[key] for r in said)
    refused = [r for r in rows if not r["answered"]]
    if una:
        m["refused_unanswerable"] = _mean(not r["answered"] for r in una)
        m["answered_unanswerable"] = _mean(r["verdict"] == "answered" for r in una)
        tp = sum(1 for r in una if not r["answered"])
        p = tp / len(refused) if refused else 0.0
        rc = tp / len(una)
        m["abstain_precision"] = p
        m["abstain_recall"] = rc
        m["abstain_f1"] = 2 * p * rc / (p + rc) if p + rc else 0.0
    if ans and una:
        m["auroc"] = auroc([r["confidence"] for r in rows], [r["answerable"] for r in rows])
    return {key: round(v, 4) for key, v in m.items()}


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that an answerable question outscores an unanswerable one."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(positive, dtype=int), np.asarray(scores, dtype=float)))


def _mean(values: Iterable[float | bool]) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else 0.0


def evaluate(retriever: Retriever, queries: Sequence[Query], k: int = 10, *, mode: Mode = "hybrid",
             progress: bool = False) -> EvalResult:  # fmt: skip
    """Run every query through `Retriever.search` (the same call the UI and CLI make) and score it."""
    it: Iterable[Query] = queries
    if progress:
        from tqdm import tqdm

        it = tqdm(queries, desc=f"eval {mode}", unit="q", file=sys.stderr, leave=False)
    corpus = corpus_of(retriever)
    rows = [_row(q, retriever.search(q.query, k=k, mode=mode), corpus) for q in it]
    return scored(rows, mode, k, retriever.threshold, missing_answers(queries, retriever, corpus))


def scored(rows: list[dict[str, Any]], mode: str, k: int, threshold: float,
           missing: list[tuple[str, str]] | None = None) -> EvalResult:  # fmt: skip
    """Metrics over `rows`, overall, by kind and by language."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    langs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["kind"]].append(r)
        if r["answerable"]:
            langs[r["language"]].append(r)
    return EvalResult(
        mode=mode,
        k=k,
        metrics=summarize(rows, k),
        by_kind={kind: summarize(rs, k) for kind, rs in sorted(groups.items())},
        by_language={lang: summarize(rs, k) for lang, rs in sorted(langs.items())},
        rows=rows,
        threshold=threshold,
        missing=missing or [],
    )


# ---------------------------------------------------------------- leave one document out


class CachingEncoder:
    """An encoder that embeds each text once across several builds (leave-one-document-out)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name = inner.name
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def source(self) -> str:
        return self.inner.source

    @property
    def backend(self) -> str:
        return str(getattr(self.inner, "backend", "torch"))

    def encode_passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            self._cache.update(zip(todo, self.inner.encode_passages(todo), strict=True))
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self.inner.encode_query(text)


def cross_document_eval(retriever: Retriever, queries: Sequence[Query], k: int = 10, *, mode: Mode = "hybrid",
                        progress: bool = False) -> EvalResult:  # fmt: skip
    """Leave one document out: index all documents but one, run the set, for each document.

    A question whose answers lie only in the left-out document is unanswerable there: this
    is what a user with other documents gets. The calibration of `retriever` is used as is.
    """
    manifest = retriever.manifest
    root = Path(manifest.docs_dir)
    files = [d.file for d in manifest.documents]
    if len(files) < 2:
        raise QuerySetError("Leaving one document out needs an index of at least two documents.")
    encoder = CachingEncoder(retriever.encoder) if retriever.has_dense else None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qa-cross-docs-") as tmp:
        for n, left_out in enumerate(files, start=1):
            if progress:
                print(f"Leaving out {left_out} ({n}/{len(files)})", file=sys.stderr, flush=True)
            docs, folder = Path(tmp) / f"docs{n}", Path(tmp) / f"index{n}"
            for f in files:
                if f != left_out:
                    (docs / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(root / f, docs / f)
            build_index(docs, folder, encoder=encoder, dense=retriever.has_dense,
                        max_chars=manifest.splitter.max_chars, near_dup=manifest.splitter.near_dup)  # fmt: skip
            index = Index.open(folder)
            index.save_calibration(retriever.calibration)
            sub = Retriever(index, encoder, fusion=retriever.fusion, refresh=False)
            result = evaluate(sub, queries, k, mode=mode)
            rows += [{**r, "left_out": left_out} for r in result.rows]
    return scored(rows, mode, k, retriever.threshold)


# ---------------------------------------------------------------- calibration


def calibrate(result: EvalResult, retriever: Retriever, *, max_false_refusals: float = MAX_FALSE_REFUSALS,
              max_false_answers: float = MAX_FALSE_ANSWERS, folds: int = CV_FOLDS, source: str = "") -> Calibration:  # fmt: skip
    """Fit the confidence model on an evaluation's top hits, and its policy by cross-validation.

    The thresholds are chosen on out-of-fold confidences (each question scored by a model
    that never saw it or its paraphrases), which is what new questions will get:
    "not found" below the `threshold` that refuses at most `max_false_refusals` of the
    answerable questions; "answered" from the `confident` level that at most
    `max_false_answers` of the unanswerable ones reach; "uncertain" in between. The checks
    that can only lower a confidence (`calibration.VETO_FEATURES`) are fitted last, on the
    others' logits, and leave the levels alone; the cross-validated figures include them.
    """
    features = calibration.DENSE_FEATURES if retriever.has_dense else calibration.LEXICAL_FEATURES
    base = tuple(f for f in features if f not in calibration.VETO_FEATURES)
    usable = [r for r in result.rows if r["top_features"]]
    y = np.array([bool(r["answerable"]) for r in usable])
    if y.sum() < folds or (~y).sum() < folds:
        raise QuerySetError(
            f"Calibration needs at least {folds} answerable and {folds} unanswerable questions "
            '("answers": []) in the set.'
        )
    x = np.array([[r["top_features"].get(f, 0.0) for f in base] for r in usable])
    oof = out_of_fold(x, y, [r.get("group") or r["id"] for r in usable], folds)
    threshold = refusal_threshold(oof[y], max_false_refusals)
    confident = max(threshold, answer_threshold(oof[~y], max_false_answers))
    weights, bias = calibration.fit_logistic(x, y, l2=CALIBRATION_L2)
    vetoes = [f for f in features if f in calibration.VETO_FEATURES]
    clipped = np.clip(oof, 1e-12, 1 - 1e-12)  # a confidence of exactly 0 or 1 has no finite logit
    logits, oof_logits = x @ weights + bias, np.log(clipped / (1 - clipped))
    for f in vetoes:  # fitted on the others' logits; the levels above stay where they are
        flags = np.array([float(r["top_features"].get(f, 0.0)) for r in usable])
        w = calibration.fit_veto(logits, flags, y, l2=CALIBRATION_L2)
        weights, logits, oof_logits = np.append(weights, w), logits + w * flags, oof_logits + w * flags
    oof = 1.0 / (1.0 + np.exp(-oof_logits))
    details = {
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"), "queries": len(usable), "folds": folds,
        "max_false_refusals": max_false_refusals, "max_false_answers": max_false_answers,
        "cv_refused_answerable": round(float((oof[y] < threshold).mean()), 4),
        "cv_refused_unanswerable": round(float((oof[~y] < threshold).mean()), 4),
        "cv_auroc": round(auroc(oof.tolist(), y.tolist()), 4),
    }  # fmt: skip
    return Calibration(
        base + tuple(vetoes), tuple(round(float(w), 4) for w in weights), round(bias, 4), round(threshold, 4),
        round(confident, 4), True, source, details,
    )  # fmt: skip


def out_of_fold(x: np.ndarray, y: np.ndarray, groups: Sequence[str], folds: int) -> np.ndarray:
    """Each question's confidence from a model fitted on the other folds (paraphrases kept together)."""
    from sklearn.model_selection import StratifiedGroupKFold

    oof = np.zeros(len(y))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in splitter.split(x, y.astype(int), list(groups)):
        w, b = calibration.fit_logistic(x[train], y[train], l2=CALIBRATION_L2)
        oof[test] = 1.0 / (1.0 + np.exp(-np.clip(x[test] @ w + b, -50, 50)))
    return oof


def refusal_threshold(answerable: np.ndarray, rate: float) -> float:
    """The threshold below which at most `rate` of these (answerable) confidences fall."""
    s = np.sort(answerable)
    m = int(np.floor(rate * len(s) + 1e-9))
    return float(s[0] - 1e-4) if m == 0 else float((s[m - 1] + s[m]) / 2)


def answer_threshold(unanswerable: np.ndarray, rate: float) -> float:
    """The level that at most `rate` of these (unanswerable) confidences reach."""
    s = np.sort(unanswerable)[::-1]
    m = int(np.floor(rate * len(s) + 1e-9))
    return float(s[0] + 1e-4) if m == 0 else float((s[m - 1] + s[m]) / 2)


# ---------------------------------------------------------------- output


METRIC_ORDER = ("hit@1", "hit@3", "hit@5", "hit@10", "recall@{k}", "mrr@10", "ndcg@10", "auroc",
                "answered_answerable", "uncertain_answerable", "refused_answerable",
                "answered_unanswerable", "refused_unanswerable", "abstain_precision", "abstain_f1",
                "answer_holds", "answer_em", "answer_f1")  # fmt: skip


def metrics_table(results: Sequence[EvalResult]) -> str:
    """Markdown table: one row per metric, one column per mode."""
    k = results[0].k
    names = [m.format(k=k) for m in METRIC_ORDER]
    lines = ["| metric | " + " | ".join(r.mode for r in results) + " |", "|---" * (len(results) + 1) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt(r.metrics.get(name)) for r in results) + " |")
    return "\n".join(lines)


def breakdown_table(results: Sequence[EvalResult], attr: str = "by_kind", metric: str = "hit@5") -> str:
    groups = sorted({g for r in results for g in getattr(r, attr)})
    lines = [f"| {attr[3:]} (n) | " + " | ".join(f"{r.mode} {metric}" for r in results) + " | hybrid mrr@10 |",
             "|---" * (len(results) + 2) + "|"]  # fmt: skip
    for g in groups:
        first = getattr(results[0], attr)[g]
        n = int(first.get("queries", 0))
        cells = []
        for r in results:
            d = getattr(r, attr).get(g, {})
            cells.append(_fmt(d.get(metric, d.get("abstain_recall"))))
        hybrid: dict[str, float] = next((getattr(r, attr).get(g, {}) for r in results if r.mode == "hybrid"), {})
        lines.append(f"| {g} ({n}) | " + " | ".join(cells) + f" | {_fmt(hybrid.get('mrr@10'))} |")
    return "\n".join(lines)


def verdict_table(result: EvalResult) -> str:
    """The verdict shares of each kind of question (✓ answered / 可能相关 / not found), and how the
    answer said first scores where the top passage is right."""
    lines = ["| kind (n) | answered | uncertain | not found | answer holds | answer EM | answer F1 |", "|---" * 7 + "|"]
    for kind, rows in sorted(_rows_by(result.rows, "kind").items()):
        m = result.by_kind.get(kind, {})
        shares = [_mean(r["verdict"] == v for r in rows) for v in ("answered", "uncertain", "not_found")]
        cells = [_fmt(x) for x in shares] + [_fmt(m.get(key)) for key in ("answer_holds", "answer_em", "answer_f1")]
        lines.append(f"| {kind} ({len(rows)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows_by(rows: Sequence[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r[key])].append(r)
    return groups


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def write_report(results: Sequence[EvalResult], path: Path, query_file: str) -> None:
    main = next((r for r in results if r.mode == "hybrid"), results[0])
    out = [
        f"# Retrieval evaluation: {query_file}",
        "",
        f"{main.metrics['queries']:.0f} queries ({main.metrics['answerable']:.0f} answerable, "
        f"{main.metrics['unanswerable']:.0f} unanswerable), k = {main.k}, no-answer threshold {main.threshold:.3f}.",
        "",
        "## Metrics per mode",
        "",
        metrics_table(results),
        "",
        "## By kind (unanswerable rows: share refused)",
        "",
        breakdown_table(results, "by_kind"),
        "",
        f"## Verdicts and the answer said first, by kind ({main.mode})",
        "",
        verdict_table(main),
        "",
        "## By language (answerable questions)",
        "",
        breakdown_table(results, "by_language"),
        "",
    ]
    if main.missing:
        out += ["## Answers found in no passage (they count as misses)", ""]
        out += [f"- {qid}: `{a}`" for qid, a in main.missing] + [""]
    for r in results:
        out += [f"## Per query: {r.mode}", "",
                "| id | kind | query | first relevant rank | answered | confidence | top passage |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in r.rows:
            rank = row["first_relevant_rank"] if row["answerable"] else "n/a"
            flag = "" if row["answerable"] or not row["answered"] else " ⚠"
            out.append(
                f"| {row['id']} | {row['kind']} | {_cell(row['query'])} | {rank if rank is not None else 'miss'} | "
                f"{'yes' if row['answered'] else 'no'}{flag} | {row['confidence']:.3f} | {_cell(row['top_text'])} |"
            )
        out.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_plot(results: Sequence[EvalResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    cjk = [f.name for f in font_manager.fontManager.ttflist if "CJK" in f.name or "Noto Sans SC" in f.name]
    if cjk:
        plt.rcParams["font.family"] = [cjk[0], "DejaVu Sans"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ks = list(range(1, results[0].k + 1))
    for r in results:
        ans = [row for row in r.rows if row["answerable"]]
        curve = [
            _mean(row["first_relevant_rank"] is not None and row["first_relevant_rank"] <= n for row in ans) for n in ks
        ]
        ax1.plot(ks, curve, marker="o", label=r.mode)
    ax1.set(title="hit@k per mode", xlabel="k", ylabel="share of answerable questions", ylim=(0, 1.02), xticks=ks)
    ax1.grid(alpha=0.3)
    ax1.legend()
    main = next((r for r in results if r.mode == "hybrid"), results[0])
    bins = np.linspace(0, 1, 21)
    ax2.hist([row["confidence"] for row in main.rows if row["answerable"]], bins=bins, alpha=0.6, label="answerable")
    ax2.hist(
        [row["confidence"] for row in main.rows if not row["answerable"]], bins=bins, alpha=0.6, label="unanswerable"
    )
    ax2.axvline(main.threshold, color="k", linestyle="--", label=f"threshold {main.threshold:.2f}")
    ax2.set(title=f"top-hit confidence ({main.mode})", xlabel="calibrated confidence", ylabel="questions")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- command


def run_eval_command(args: argparse.Namespace) -> int:
    queries = load_queries(args.file)
    retriever = Retriever.load(args.index, fusion=args.fusion)
    wanted = ("hybrid", "dense", "lexical") if args.mode == "all" else (args.mode,)
    modes: list[Mode] = [m for m in MODES_ORDER if m in wanted and (m == "lexical" or retriever.has_dense)]
    if args.calibrate and retriever.has_dense and modes == ["lexical"]:
        raise QuerySetError(
            "Lexical mode over an index with vectors uses the shipped keyword-only calibration "
            "(qa.calibration.LEXICAL_DEFAULT); --calibrate fits the index's own, which needs --mode hybrid or dense. "
            "To refit the keyword-only one, calibrate an index built with --no-dense."
        )
    missing = missing_answers(queries, retriever)
    for qid, a in missing:
        print(
            f"qa: warning: answer {a!r} of {qid} is in no passage of the index; it counts as a miss.", file=sys.stderr
        )
    if args.cross_docs:
        if args.calibrate:
            raise QuerySetError("--cross-docs reports the index's calibration; calibrate in a separate run.")
        results = [cross_document_eval(retriever, queries, args.k, mode=m, progress=True) for m in modes]
        print(
            "Leave one document out: each document left out in turn; its questions count as unanswerable.",
            file=sys.stderr,
        )
    else:
        results = [evaluate(retriever, queries, args.k, mode=m, progress=sys.stderr.isatty()) for m in modes]
    if args.calibrate:
        main = next((r for r in results if r.mode == "hybrid"), results[0])
        cal = calibrate(main, retriever, max_false_refusals=args.max_false_refusals,
                        max_false_answers=args.max_false_answers, source=str(args.file))  # fmt: skip
        retriever.index.save_calibration(cal)
        print(
            f"Calibrated: not found below {cal.threshold}, answered from {cal.confident} (weights "
            f"{list(cal.weights)}, bias {cal.bias}); cross-validated: refuses "
            f"{cal.details['cv_refused_answerable']:.1%} of answerable and {cal.details['cv_refused_unanswerable']:.1%} "
            f"of unanswerable questions. Saved in the manifest of {args.index}",
            file=sys.stderr,
        )
        results = [evaluate(retriever, queries, args.k, mode=m) for m in modes]
    if args.json:
        print(json.dumps({r.mode: r.to_dict() for r in results}, ensure_ascii=False, indent=2))
    else:
        print(metrics_table(results))
        print()
        print(breakdown_table(results, "by_kind"))
        print()
        main = next((r for r in results if r.mode == "hybrid"), results[0])
        print(verdict_table(main))
        print()
        print(breakdown_table(results, "by_language"))
    if args.report:
        write_report(results, args.report, str(args.file))
        print(f"Report: {args.report}", file=sys.stderr)
    if args.plot:
        write_plot(results, args.plot)
        print(f"Plot: {args.plot}", file=sys.stderr)
    return 0


class _CallableModule(types.ModuleType):
    """`qa.evaluate(retriever, queries)` is the documented call, but importing this module
    makes `qa.evaluate` the module itself: let the module be called like its function."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
