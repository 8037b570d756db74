"""Training data for the reader: (question, passage) pairs that hold the answer span, or that do not.

    python -m qa.reader.data --raw ~/.cache/qa/reader/raw --out ~/.cache/qa/reader/data

Sources, human-annotated, in SQuAD JSON (`~/.cache/qa/reader/raw/SOURCES.md` says where each
file comes from): CMRC 2018 trial (`cmrc2018_trial.json`), DRCD test (`DRCD_test.json`,
traditional Chinese, converted to simplified with OpenCC t2s as `qa.lexical` does) and
SQuAD 2.0 dev (`squad2_dev.json`, English). CMRC 2018 dev and DRCD dev / training are held out
to measure the reader: `check_allowed` refuses them by file name, wherever they are.

A passage is a window of one paragraph: whole sentences, at most `max_chars` characters, two
consecutive windows sharing one sentence. An answerable question gives one positive (the window
that holds its answer) and candidate negatives, each of which holds no annotated answer text:

- deleted_sentence: the positive window less the sentences that hold the answer;
- other_paragraph: another window or paragraph of the same article;
- wrong_type: for a quantity question (多少, 几, how many/much), a window of the same article with numbers;
- retrieved: the window that BM25 ranks first for the question among those of the same language
  and split (so no passage of a validation article is seen in training).

SQuAD 2.0's unanswerable questions, written against their very paragraph, stay negatives as they
are (squad2_adversarial). Per source, the candidates are sampled (weights of `Mix`) down to the
number that makes `answerable_share` of the examples answerable. Articles, not questions, are
split into train and validation; the output is sorted by example id, the same for the same seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from qa.cache import write_atomic
from qa.errors import QAError

SourceName = Literal["cmrc_trial", "drcd_test", "squad2_dev"]
Negative = Literal["none", "squad2_adversarial", "other_paragraph", "deleted_sentence", "retrieved", "wrong_type"]
Synthetic = Literal["deleted_sentence", "other_paragraph", "wrong_type", "retrieved"]
Lang = Literal["zh", "en"]
Split = Literal["train", "val"]

SYNTHETIC: tuple[Synthetic, ...] = get_args(Synthetic)
SPLITS: tuple[Split, ...] = get_args(Split)
T2S_CONFIG = "t2s"  # the OpenCC configuration qa.lexical folds traditional characters with
MIN_DELETED_CHARS = 20  # a deleted_sentence passage shorter than this is too little to read


@dataclass(frozen=True, slots=True)
class RawSource:
    """One raw file: its name in the raw folder, its language, whether it is traditional Chinese."""

    name: SourceName
    file: str
    lang: Lang
    traditional: bool = False


RAW_SOURCES = (
    RawSource("cmrc_trial", "cmrc2018_trial.json", "zh"),
    RawSource("drcd_test", "DRCD_test.json", "zh", traditional=True),
    RawSource("squad2_dev", "squad2_dev.json", "en"),
)
# Held out to measure the reader: never read for training, whatever folder they are in.
FORBIDDEN_FILES = frozenset({"cmrc2018_dev.json", "drcd_dev.json", "drcd_training.json"})


@dataclass(frozen=True, slots=True)
class Question:
    """A question about paragraph `paragraph` of its article. `answers` holds every annotated answer
    text (the first is the one trained on, at `start` in the paragraph); () if unanswerable."""

    id: str
    text: str
    paragraph: int
    answers: tuple[str, ...]
    start: int


@dataclass(frozen=True, slots=True)
class Article:
    id: str  # "<source>/<article id or title>"
    source: SourceName
    lang: Lang
    paragraphs: tuple[str, ...]
    questions: tuple[Question, ...]


@dataclass(frozen=True, slots=True)
class Passage:
    """A window of a paragraph: `text` is paragraph[start:end]."""

    article: str
    paragraph: int
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class ReaderExample:
    """One line of train.jsonl / val.jsonl."""

    id: str
    question: str
    context: str
    answerable: bool
    answer_text: str
    answer_start: int
    source: SourceName
    article: str
    negative: Negative
    lang: Lang

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Mix:
    """How many negatives: `answerable_share` of each source's examples are answerable, the
    negatives added to reach it are drawn from the candidate kinds in proportion to these weights
    (a kind short of candidates leaves its share to the others; weight 0 turns a kind off)."""

    answerable_share: float = 0.45
    deleted_sentence: float = 1.0
    other_paragraph: float = 1.0
    wrong_type: float = 1.0
    retrieved: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.answerable_share < 1:
            raise QAError(f"answerable_share must be between 0 and 1, got {self.answerable_share}")
        if any(self.weight(kind) < 0 for kind in SYNTHETIC):
            raise QAError(f"negative weights must be >= 0, got {self}")

    def weight(self, kind: Synthetic) -> float:
        return float(getattr(self, kind))


@dataclass(frozen=True, slots=True)
class DataConfig:
    seed: int = 13
    limit: int | None = None  # keep the first N articles of each source (a quick slice)
    val_share: float = 0.1
    max_chars_zh: int = 450
    max_chars_en: int = 1000  # about as many e5 tokens as 450 Chinese characters
    retrieve_k: int = 10
    mix: Mix = Mix()

    def max_chars(self, lang: Lang) -> int:
        return self.max_chars_zh if lang == "zh" else self.max_chars_en


# --- reading the raw files ------------------------------------------------------------------


def check_allowed(path: Path) -> None:
    """Refuse the files held out to measure the reader."""
    if path.name.lower() in FORBIDDEN_FILES:
        raise QAError(
            f"{path} is held out to measure the reader and must not be read to build training data. "
            f"Use {', '.join(s.file for s in RAW_SOURCES)} (see ~/.cache/qa/reader/raw/SOURCES.md)."
        )


def read_squad(path: Path) -> list[dict[str, Any]]:
    """The `data` list of a SQuAD-format file."""
    check_allowed(path)
    if not path.is_file():
        raise QAError(f"{path} not found. Put the raw files there as ~/.cache/qa/reader/raw/SOURCES.md describes.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise QAError(f"{path} is not a SQuAD-format JSON file ({exc}); fetch it again (see SOURCES.md).") from exc
    if not isinstance(data, list):
        raise QAError(f"{path}: 'data' is not a list; fetch it again (see SOURCES.md).")
    return data


def locate_answer(context: str, answer: str, hint: int) -> int:
    """The offset of the occurrence of `answer` in `context` nearest to `hint`; -1 if there is none."""
    if not answer:
        return -1
    if hint >= 0 and context.startswith(answer, hint):
        return hint
    best, i = -1, context.find(answer)
    while i >= 0:
        if best < 0 or abs(i - hint) < abs(best - hint):
            best = i
        i = context.find(answer, i + 1)
    return best


def _converter(traditional: bool) -> Callable[[str], str]:
    if not traditional:
        return lambda text: text
    import opencc

    t2s = opencc.OpenCC(T2S_CONFIG)
    return lambda text: str(t2s.convert(text))


def _answers(qa: dict[str, Any], raw: str, context: str, convert: Callable[[str], str]) -> list[tuple[str, int]]:
    """The annotated answers as (text, offset) in the converted `context`, those found.

    t2s keeps the length in almost every case: the answer is then the converted context at the
    annotated offset (converted in its context, as it reads there). Otherwise it is the converted
    answer, searched for nearest to where it was."""
    found = []
    for answer in qa.get("answers") or []:
        text, hint = str(answer.get("text", "")), int(answer.get("answer_start", -1))
        start = locate_answer(raw, text, hint)
        if start < 0:
            continue
        if len(context) == len(raw):
            found.append((context[start : start + len(text)], start))
            continue
        text = convert(text)
        start = locate_answer(context, text, round(start * len(context) / max(len(raw), 1)))
        if start >= 0:
            found.append((text, start))
    return found


def load_articles(path: Path, source: RawSource, limit: int | None = None) -> tuple[list[Article], Counter[str]]:
    """The articles of a SQuAD-format file, in simplified characters, and the questions dropped by reason."""
    convert = _converter(source.traditional)
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    articles: list[Article] = []
    for raw_article in read_squad(path)[:limit]:
        name = str(raw_article.get("id") or raw_article.get("title") or len(articles))
        paragraphs: list[str] = []
        questions: list[Question] = []
        for raw_paragraph in raw_article.get("paragraphs", []):
            raw = str(raw_paragraph["context"])
            context = convert(raw)
            index = len(paragraphs)
            paragraphs.append(context)
            for qa in raw_paragraph.get("qas", []):
                qid, text = str(qa["id"]), convert(str(qa["question"])).strip()
                impossible = bool(qa.get("is_impossible")) or not qa.get("answers")
                answers = [] if impossible else _answers(qa, raw, context, convert)
                if qid in seen:
                    dropped["duplicate_id"] += 1
                elif not text or (not impossible and not answers):
                    dropped["answer_not_found" if text else "empty_question"] += 1
                else:
                    seen.add(qid)
                    texts = tuple(dict.fromkeys(t for t, _ in answers))
                    questions.append(Question(qid, text, index, texts, answers[0][1] if answers else -1))
        articles.append(Article(f"{source.name}/{name}", source.name, source.lang, tuple(paragraphs), tuple(questions)))
    return articles, dropped


# --- sentences and windows ------------------------------------------------------------------

# A sentence ends at 。！？；;!? (or a full stop followed by a space), with the closing quotes or
# brackets and the whitespace after it.
_SENTENCE_END = re.compile(r"(?:[。！？；;!?]+|\.(?=\s))[”’」』\"')）】]*\s*")
_SOFT_BREAK = re.compile(r"[，,、：:]")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text`, end to end: together they cover all of it."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            spans.append((start, m.end()))
            start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """One over-long sentence cut at commas (else hard) into pieces of at most max_chars."""
    pieces = []
    while end - start > max_chars:
        cuts = [m.end() for m in _SOFT_BREAK.finditer(text, start, start + max_chars)]
        cut = cuts[-1] if cuts and cuts[-1] - start > max_chars // 3 else start + max_chars
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def window_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Windows of whole sentences of at most `max_chars` characters, each sharing its last sentence
    with the next one (when the two fit together), whitespace at their ends left out."""
    pieces = [p for s, e in sentence_spans(text) for p in _cut_long(text, s, e, max_chars)]
    windows, i = [], 0
    while i < len(pieces):
        j = i
        while j + 1 < len(pieces) and pieces[j + 1][1] - pieces[i][0] <= max_chars:
            j += 1
        windows.append(_trim(text, pieces[i][0], pieces[j][1]))
        if j == len(pieces) - 1:
            break
        overlap = j > i and pieces[j + 1][1] - pieces[j][0] <= max_chars
        i = j if overlap else j + 1
    return [(s, e) for s, e in windows if e > s]


def article_passages(article: Article, max_chars: int) -> list[Passage]:
    return [
        Passage(article.id, index, s, e, paragraph[s:e])
        for index, paragraph in enumerate(article.paragraphs)
        for s, e in window_spans(paragraph, max_chars)
    ]


# --- answers, terms, retrieval --------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


def holds_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether `text` holds any of `answers`, compared after NFKC, lower case and without whitespace."""
    norm = _norm(text)
    return any(a and a in norm for a in map(_norm, answers))


_EN_WORD = re.compile(r"[a-z0-9]+")


def terms(text: str, lang: Lang) -> list[str]:
    """BM25 terms: jieba tokens (qa.lexical.tokenize) for Chinese, lower-case words for English."""
    from qa.lexical import STOPWORDS, tokenize

    if lang == "zh":
        return tokenize(text)
    return [w for w in _EN_WORD.findall(text.lower()) if w not in STOPWORDS]


def rank_passages(corpus: Sequence[Sequence[str]], queries: Sequence[Sequence[str]], k: int) -> list[list[int]]:
    """For each query, the positions of its (up to) k best passages by BM25, best first."""
    import bm25s

    from qa.lexical import BM25_PARAMS

    ranked: list[list[int]] = [[] for _ in queries]
    if not corpus or not queries:
        return ranked
    bm25 = bm25s.BM25(**BM25_PARAMS)  # type: ignore[arg-type]
    bm25.index([list(doc) or ["\u2205"] for doc in corpus], show_progress=False)
    known = [[t for t in q if t in bm25.vocab_dict] for q in queries]
    asked = [i for i, q in enumerate(known) if q]
    if not asked:
        return ranked
    k = min(k, len(corpus))
    docs, scores = bm25.retrieve([known[i] for i in asked], k=k, show_progress=False, n_threads=1)
    for row, i in enumerate(asked):
        ranked[i] = [int(d) for d, s in zip(docs[row], scores[row], strict=True) if s > 0]
    return ranked


_QUANTITY = {"zh": re.compile(r"多少|几(?!乎|何|内亚)"), "en": re.compile(r"\bhow (?:many|much)\b", re.IGNORECASE)}
_NUMBER = re.compile(r"\d|[零一二三四五六七八九十百千万亿两]+[年月日天个人次位名岁元米倍种项家座多余]")


def asks_quantity(question: str, lang: Lang) -> bool:
    return _QUANTITY[lang].search(question) is not None


# --- examples of one question ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """What a question's negatives are drawn from: its article's passages, and the passages of
    its split and language that BM25 ranks best for it."""

    article: list[Passage]
    retrieved: list[Passage]


def _example(article: Article, q: Question, kind: Negative, context: str, answer_start: int = -1) -> ReaderExample:
    answer = q.answers[0] if kind == "none" else ""
    suffix = "pos" if kind == "none" else kind
    return ReaderExample(
        id=f"{article.source}/{q.id}/{suffix}",
        question=q.text,
        context=context,
        answerable=kind == "none",
        answer_text=answer,
        answer_start=answer_start if kind == "none" else -1,
        source=article.source,
        article=article.id,
        negative=kind,
        lang=article.lang,
    )


def positive_window(q: Question, passages: Sequence[Passage]) -> Passage | None:
    """The window of the question's paragraph that holds the whole answer, the answer nearest its middle."""
    end = q.start + len(q.answers[0])
    holding = [p for p in passages if p.paragraph == q.paragraph and p.start <= q.start and end <= p.end]
    return min(holding, key=lambda p: abs((q.start + end) - (p.start + p.end)), default=None)


def delete_answer_sentences(q: Question, window: Passage) -> str | None:
    """The window less the sentences that overlap the answer, or None if the answer is still there
    or too little is left."""
    start, end = q.start - window.start, q.start - window.start + len(q.answers[0])
    kept = [window.text[s:e] for s, e in sentence_spans(window.text) if e <= start or s >= end]
    text = "".join(kept).strip()
    if len(text) < MIN_DELETED_CHARS or holds_answer(text, q.answers):
        return None
    return text


def negative_passages(
    q: Question, window: Passage, ctx: _Context, lang: Lang, rng: random.Random
) -> dict[Synthetic, Passage]:
    """At most one passage of each kind that holds no answer text, none of them twice."""

    def usable(p: Passage) -> bool:
        return p != window and p not in picks.values() and not holds_answer(p.text, q.answers)

    picks: dict[Synthetic, Passage] = {}
    retrieved = next((p for p in ctx.retrieved if usable(p)), None)
    if retrieved is not None:
        picks["retrieved"] = retrieved
    numeric = [p for p in ctx.article if usable(p) and _NUMBER.search(p.text)] if asks_quantity(q.text, lang) else []
    if numeric:
        picks["wrong_type"] = rng.choice(numeric)
    free = [p for p in ctx.article if usable(p)]
    if free:
        picks["other_paragraph"] = rng.choice(free)
    return picks


def question_examples(article: Article, q: Question, ctx: _Context, seed: int) -> list[ReaderExample]:
    """The examples of one question: its positive and its candidate negatives, or, for a SQuAD 2.0
    unanswerable question, the window of its paragraph that shares the most words with it."""
    if not q.answers:
        words = set(q.text.lower().split())
        own = [p for p in ctx.article if p.paragraph == q.paragraph]
        best = max(own, key=lambda p: sum(w in p.text.lower() for w in words), default=None)
        return [_example(article, q, "squad2_adversarial", best.text)] if best else []
    window = positive_window(q, ctx.article)
    if window is None:
        return []
    out = [_example(article, q, "none", window.text, q.start - window.start)]
    rng = random.Random(f"{seed}/{article.source}/{q.id}")
    for kind, passage in negative_passages(q, window, ctx, article.lang, rng).items():
        out.append(_example(article, q, kind, passage.text))
    deleted = delete_answer_sentences(q, window)
    if deleted is not None:
        out.append(_example(article, q, "deleted_sentence", deleted))
    return out


def group_examples(articles: Sequence[Article], config: DataConfig) -> tuple[list[ReaderExample], Counter[str]]:
    """The examples (all candidate negatives) of articles of one language and one split."""
    if not articles:
        return [], Counter()
    lang = articles[0].lang
    passages = {a.id: article_passages(a, config.max_chars(lang)) for a in articles}
    corpus = [p for a in articles for p in passages[a.id]]
    asked = [(a, q) for a in articles for q in a.questions if q.answers]
    ranked = rank_passages(
        [terms(p.text, lang) for p in corpus], [terms(q.text, lang) for _, q in asked], config.retrieve_k
    )
    retrieved = {(a.id, q.id): [corpus[i] for i in r] for (a, q), r in zip(asked, ranked, strict=True)}
    examples: list[ReaderExample] = []
    dropped: Counter[str] = Counter()
    for a in articles:
        for q in a.questions:
            ctx = _Context(passages[a.id], retrieved.get((a.id, q.id), []))
            found = question_examples(a, q, ctx, config.seed)
            if not found:
                dropped["no_window_holds_answer"] += 1
            examples.extend(found)
    return examples, dropped


# --- split, balance, write ------------------------------------------------------------------


def split_articles(articles: Sequence[Article], seed: int, val_share: float) -> dict[str, Split]:
    """Each article's side, drawn per source: `val_share` of its articles (at least one of two or
    more) go to validation."""
    side: dict[str, Split] = {}
    for source in sorted({a.source for a in articles}):
        ids = sorted(a.id for a in articles if a.source == source)
        random.Random(f"{seed}/split/{source}").shuffle(ids)
        n_val = max(1, round(len(ids) * val_share)) if len(ids) >= 2 and val_share > 0 else 0
        side.update({aid: "val" if i < n_val else "train" for i, aid in enumerate(ids)})
    return side


def _quotas(available: dict[Synthetic, int], mix: Mix, needed: int) -> dict[Synthetic, int]:
    """How many candidates of each kind to keep: `needed` in all, in proportion to the weights, a
    kind short of candidates leaving the rest to the others."""
    quotas = dict.fromkeys(available, 0)
    left = min(needed, sum(available[k] for k in available if mix.weight(k) > 0))
    open_kinds = [k for k in available if mix.weight(k) > 0 and available[k] > 0]
    while left > 0 and open_kinds:
        total, round_left = sum(mix.weight(k) for k in open_kinds), left
        for k in open_kinds:
            take = min(max(1, int(round_left * mix.weight(k) / total)), available[k] - quotas[k], left)
            quotas[k] += take
            left -= take
        open_kinds = [k for k in open_kinds if quotas[k] < available[k]]
    return quotas


def balance(examples: Sequence[ReaderExample], mix: Mix, seed: int) -> list[ReaderExample]:
    """Positives and SQuAD 2.0 negatives kept; per source, candidate negatives sampled down to the
    number that makes `mix.answerable_share` of the examples answerable."""
    kept = [e for e in examples if e.negative in ("none", "squad2_adversarial")]
    for source in sorted({e.source for e in examples}):
        mine = [e for e in kept if e.source == source]
        positives = sum(e.answerable for e in mine)
        needed = round(positives * (1 - mix.answerable_share) / mix.answerable_share) - (len(mine) - positives)
        by_kind = {
            k: sorted((e for e in examples if e.source == source and e.negative == k), key=lambda e: e.id)
            for k in SYNTHETIC
        }
        quotas = _quotas({k: len(v) for k, v in by_kind.items()}, mix, max(needed, 0))
        for kind, candidates in by_kind.items():
            kept.extend(random.Random(f"{seed}/{source}/{kind}").sample(candidates, quotas[kind]))
    return sorted(kept, key=lambda e: e.id)


@dataclass(frozen=True, slots=True)
class Dataset:
    train: list[ReaderExample]
    val: list[ReaderExample]
    stats: dict[str, Any]


def build_dataset(raw: Path, config: DataConfig | None = None) -> Dataset:
    """Read the raw files in `raw`, and build the balanced, split examples and their statistics."""
    config = config or DataConfig()
    articles: list[Article] = []
    dropped: Counter[str] = Counter()
    for source in RAW_SOURCES:
        found, lost = load_articles(raw / source.file, source, config.limit)
        articles.extend(found)
        dropped.update(lost)
    side = split_articles(articles, config.seed, config.val_share)
    examples: list[ReaderExample] = []
    for split in SPLITS:
        for lang in get_args(Lang):
            group = [a for a in articles if side[a.id] == split and a.lang == lang]
            made, lost = group_examples(group, config)
            examples.extend(made)
            dropped.update(lost)
    kept = balance(examples, config.mix, config.seed)
    train = [e for e in kept if side[e.article] == "train"]
    val = [e for e in kept if side[e.article] == "val"]
    stats = _stats(train, val, articles, side, dropped, config, raw)
    return Dataset(train, val, stats)


def _counts(examples: Iterable[ReaderExample], key: Callable[[ReaderExample], Any]) -> dict[str, int]:
    return dict(sorted(Counter(str(key(e)).lower() for e in examples).items()))


def _stats(
    train: list[ReaderExample],
    val: list[ReaderExample],
    articles: Sequence[Article],
    side: dict[str, Split],
    dropped: Counter[str],
    config: DataConfig,
    raw: Path,
) -> dict[str, Any]:
    both = train + val
    per_split: dict[str, Any] = {}
    for name, part in (("train", train), ("val", val)):
        per_split[name] = {
            "examples": len(part),
            "articles": sum(side[a.id] == name for a in articles),
            "answerable": sum(e.answerable for e in part),
            "by_source": _counts(part, lambda e: e.source),
            "by_negative": _counts(part, lambda e: e.negative),
        }
    return {
        "format": 1,
        "config": {f.name: getattr(config, f.name) for f in fields(config) if f.name != "mix"}
        | {"mix": asdict(config.mix)},
        "inputs": {s.file: _sha256(raw / s.file) for s in RAW_SOURCES},
        "questions": {s.name: sum(len(a.questions) for a in articles if a.source == s.name) for s in RAW_SOURCES},
        "dropped_questions": dict(sorted(dropped.items())),
        "examples": len(both),
        "by_split": {name: per_split[name]["examples"] for name in per_split},
        "by_source": _counts(both, lambda e: e.source),
        "by_negative": _counts(both, lambda e: e.negative),
        "by_answerable": _counts(both, lambda e: e.answerable),
        "by_lang": _counts(both, lambda e: e.lang),
        "splits": per_split,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(dataset: Dataset, out: Path) -> None:
    """train.jsonl, val.jsonl and stats.json in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", dataset.train), ("val", dataset.val)):
        write_atomic(out / f"{name}.jsonl", "".join(e.to_json() + "\n" for e in part).encode("utf-8"))
    write_atomic(out / "stats.json", (json.dumps(dataset.stats, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


# --- command line ---------------------------------------------------------------------------


def _mix(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        weights = {k.strip(): float(v) for k, v in pairs}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected kind=weight,... got {text!r}") from exc
    unknown = sorted(set(weights) - set(SYNTHETIC))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown negative kind(s) {unknown}; known: {', '.join(SYNTHETIC)}")
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    defaults = DataConfig()
    parser = argparse.ArgumentParser(prog="python -m qa.reader.data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, required=True, help="folder of the raw files (see SOURCES.md there)")
    parser.add_argument("--out", type=Path, required=True, help="folder for train.jsonl, val.jsonl, stats.json")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--limit", type=int, default=None, help="keep the first N articles of each source")
    parser.add_argument("--val-share", type=float, default=defaults.val_share)
    parser.add_argument("--max-chars-zh", type=int, default=defaults.max_chars_zh)
    parser.add_argument("--max-chars-en", type=int, default=defaults.max_chars_en)
    parser.add_argument("--answerable-share", type=float, default=defaults.mix.answerable_share)
    parser.add_argument(
        "--mix", type=_mix, default={}, help="weights of the negative kinds, e.g. retrieved=2,wrong_type=0.5"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        mix = Mix(answerable_share=args.answerable_share, **args.mix)
        config = DataConfig(args.seed, args.limit, args.val_share, args.max_chars_zh, args.max_chars_en, mix=mix)
        dataset = build_dataset(args.raw.expanduser(), config)
        write_dataset(dataset, args.out.expanduser())
    except QAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = dataset.stats
    print(
        f"{s['by_split']['train']} train + {s['by_split']['val']} val examples in {args.out} "
        f"({s['by_answerable'].get('true', 0)} answerable), {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
