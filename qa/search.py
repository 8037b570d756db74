"""Stage 5: the Retriever — candidates → fusion → (rerank) → confidence → highlights.

The web chat, the CLI and the evaluation all call `Retriever.search`. Every stage reads
the index only through its stores (qa.stores), so the same code searches FAISS files and
Milvus collections.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np

from qa import DEFAULT_INDEX, calibration, lexical
from qa.answer_type import ANY, Asked, asked, holds_type, names_counted
from qa.background import BACKGROUND
from qa.documents import Document
from qa.embed import Encoder, make_encoder
from qa.errors import IndexMismatchError, QueryError
from qa.followup import has_own_words, with_context
from qa.fusion import DEFAULT_FUSION, FUSIONS, Candidate, Fusion, fuse, rrf_merge
from qa.index import Index, check_model
from qa.lexical import fold, latin_terms, replace_surrogates, tokenize
from qa.manifest import Calibration, Manifest, Verdict
from qa.split import Passage, Source, split_sentences
from qa.stores import Neighbours, ScoredUnit

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = get_args(Mode)
MAX_QUERY_CHARS = 1000
MAX_K = 100
CANDIDATES = 50  # passages each ranking proposes before fusion
REFERENCE = 10  # how many of the best dense scores a hit's score is compared with
REFRESH_SECONDS = 1.0  # how often a search checks whether another process updated the index
_WORDLIKE = re.compile(r"[^\W_]", re.UNICODE)
# Zero-width and direction marks, the soft hyphen, the byte-order mark and control characters:
# text pasted from web pages carries them inside words, where they would split the keywords.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved passage. `highlights` are character spans of query terms in `text`;
    `evidence` is the span of the sentence that matches the question best."""

    rank: int
    score: float
    text: str
    sources: tuple[Source, ...]
    highlights: tuple[tuple[int, int], ...]
    id: str
    confidence: float
    low_confidence: bool
    evidence: tuple[int, int] | None = None
    features: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "text": self.text,
            "sources": [source_dict(s) for s in self.sources],
            "highlights": [list(h) for h in self.highlights],
            "id": self.id,
            "confidence": round(self.confidence, 4),
            "low_confidence": self.low_confidence,
            "evidence": list(self.evidence) if self.evidence else None,
        }


def source_dict(s: Source) -> dict[str, Any]:
    return {"file": s.file, "title": s.title, "paragraph": s.paragraph, "span": [s.start, s.end], "page": s.page,
            "last_page": s.last_page, "place": s.place}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer said first (the chat's 答： line): `text` is `span` [start, end) of the text of
    the hit ranked `rank`, today its best sentence (the whole passage when it is one sentence)."""

    text: str
    rank: int
    span: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "rank": self.rank, "span": list(self.span)}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The answer to one query. `verdict` is "answered", "uncertain" (可能相关: the best
    passage may answer it) or "not_found"; `answered` is False only for "not_found" (the
    hits are then the nearest passages, all marked low-confidence)."""

    query: str
    answered: bool
    hits: list[Hit]
    mode: str
    confidence: float
    threshold: float
    warnings: tuple[str, ...] = ()
    verdict: Verdict = "not_found"
    interpreted_as: str | None = None  # a follow-up question, as searched with the previous one

    @property
    def answer(self) -> Answer | None:
        """The top hit's best sentence, unless nothing was found (None)."""
        if self.verdict == "not_found" or not self.hits:
            return None
        hit = self.hits[0]
        start, end = hit.evidence or (0, len(hit.text))
        return Answer(hit.text[start:end], hit.rank, (start, end))

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer
        return {
            "query": self.query,
            "answered": self.answered,
            "verdict": self.verdict,
            "answer": answer.to_dict() if answer else None,
            "interpreted_as": self.interpreted_as,
            "hits": [h.to_dict() for h in self.hits],
            "mode": self.mode,
            "confidence": round(self.confidence, 4),
            "threshold": round(self.threshold, 4),
            "warnings": list(self.warnings),
        }


# The passages before and after one place (None at a document's edge).


@dataclass(frozen=True, slots=True)
class Query:
    """A question as the stages see it: its text, keywords, Latin words and (lazily) its vector."""

    text: str
    tokens: list[str]
    latin: list[str]
    vector: np.ndarray | None


@dataclass(frozen=True, slots=True)
class Candidates:
    """Stage 1's output: every proposed passage with both scores, and what confidence needs."""

    items: list[Candidate]
    units: dict[str, list[ScoredUnit]]  # unit cosines of each candidate (evidence, exact dense score)
    lexical_max: float  # the best BM25 in the corpus for this query
    reference: list[tuple[str, float]]  # the best dense passages (id, cosine), for the "gap" feature
    passages: dict[str, Passage] = field(default_factory=dict)  # the candidates, fetched once


class Reranker(Protocol):
    """A stage between fusion and confidence: reorders the fused list (scores may change)."""

    def rerank(self, query: Query, ranked: list[tuple[Candidate, float]],
               passages: Mapping[str, Passage]) -> list[tuple[Candidate, float]]: ...  # fmt: skip


class Retriever:
    """Search an index. Thread-safe: any number of threads may call `search`."""

    def __init__(self, index: Index, encoder: Encoder | None = None, *, fusion: Fusion = DEFAULT_FUSION,
                 reranker: Reranker | None = None, refresh: bool = True) -> None:  # fmt: skip
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        model = index.manifest.model
        if model and encoder is not None and encoder.name != model.name:
            raise IndexMismatchError(
                f"Index in {index.folder} was built with {model.name} but the configured model is "
                f"{encoder.name}. Rebuild it: qa index build --index {index.folder} --model {encoder.name}"
            )
        _check_calibration(index)
        self.index = index
        self.fusion: Fusion = fusion
        self.reranker = reranker
        self._encoder = encoder
        self._checked = False
        self._lock = threading.Lock()
        self._refresh = refresh
        self._next_check = time.monotonic() + REFRESH_SECONDS
        self._background: np.ndarray | None = None

    @classmethod
    def load(cls, index_dir: str | Path = DEFAULT_INDEX, *, encoder: Encoder | None = None, model: str | None = None,
             fusion: Fusion = DEFAULT_FUSION, check_stale: bool = True) -> Retriever:  # fmt: skip
        """Load and verify an index; warn when the documents on disk changed since it was built."""
        index = Index.open(index_dir)
        if encoder is None and model is not None:
            encoder = make_encoder(model)
        retriever = cls(index, encoder, fusion=fusion)
        if check_stale:
            changes = index.changes()
            if changes:
                log.warning(
                    "The index in %s is stale: %s. Update it: qa index build --index %s",
                    index_dir, "; ".join(changes[:5]) + (" …" if len(changes) > 5 else ""), index_dir,
                )  # fmt: skip
        return retriever

    # ------------------------------------------------------------ properties

    @property
    def manifest(self) -> Manifest:
        return self.index.manifest

    @property
    def calibration(self) -> Calibration:
        return self.index.manifest.calibration

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def has_dense(self) -> bool:
        return self.index.dense

    @property
    def encoder(self) -> Encoder:
        model = self.index.manifest.model
        if model is None:
            raise IndexMismatchError(
                f"Index in {self.index.folder} has no vectors (built without a model). "
                f"Use --mode lexical, or rebuild it with a model: qa index build --index {self.index.folder}"
            )
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = make_encoder(model.name)
        if not self._checked:
            with self._lock:
                if not self._checked:
                    check_model(self.index.folder, model, self._encoder)
                    self._checked = True
        return self._encoder

    def warm_up(self) -> None:
        """Do now what the first query would otherwise wait for: jieba's dictionary, the
        stores' lookups and, over an index with vectors, the model (loaded and checked against
        the index's probe vector, which runs it once) and the background sentences' vectors."""
        lexical.warm_up()
        self.index.stores.warm_up()
        if self.has_dense:
            self._background_vectors()

    def calibration_for(self, mode: Mode) -> Calibration:
        """The confidence model of `mode`. Lexical mode never embeds the question, so over an
        index with vectors it cannot use the index's (cosine) features: it uses the shipped
        keyword-only calibration, `qa.calibration.LEXICAL_DEFAULT`, fitted on the dev split."""
        cal = self.index.manifest.calibration
        if mode == "lexical" and not set(cal.features) <= set(calibration.LEXICAL_FEATURES):
            return calibration.LEXICAL_DEFAULT
        return cal

    def documents(self) -> list[dict[str, Any]]:
        return [{"file": d.file, "title": d.title, "passages": d.passages, "sha256": d.sha256}
                for d in self.index.manifest.documents]  # fmt: skip

    def passages(self) -> list[Passage]:
        """Every passage of the index, in reading order."""
        return self.index.passages

    def document(self, file: str) -> Document:
        """The whole text of an indexed document, as its passages' spans see it."""
        return self.index.document(file)

    def original(self, file: str) -> bytes:
        """The indexed document's file as it was indexed (its checksum checked)."""
        return self.index.original(file)

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        """The passages before and after `source` in its document."""
        return self.index.stores.passages.neighbours(source)

    def context(self, hits: Sequence[Hit], per_hit: int = 3) -> dict[tuple[str, int], Neighbours]:
        """The passages before and after the first `per_hit` places of each hit, by (file, order),
        each place asked of the store once: what a reply shows around its passages, gathered
        before rendering so that the renderer never reaches a store."""
        wanted = {(s.file, s.order): s for h in hits for s in h.sources[:per_hit]}
        return self.index.stores.passages.neighbours_of(list(wanted.values()))

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the index if another process (another server, `qa index build`) changed it.

        Searches call this at most once every REFRESH_SECONDS; returns True when it reloaded."""
        now = time.monotonic()
        if not force and (not self._refresh or now < self._next_check):
            return False
        self._next_check = now + REFRESH_SECONDS
        generation = self.index.on_disk_generation()
        if generation is None or generation == self.index.manifest.generation:
            return False
        with self._lock:
            if generation != self.index.manifest.generation:
                self.index = self.index.reload()
        return True

    def replace_index(self, index: Index) -> None:
        """Search `index` from now on (after an update made in this process)."""
        _check_calibration(index)
        self.index = index

    # ------------------------------------------------------------ search

    def search(self, query: str, k: int = 5, *, mode: Mode = "hybrid", threshold: float | None = None,
               context: str | None = None) -> SearchResult:  # fmt: skip
        """The `k` best passages for `query`, and whether they answer it.

        `context` is the previous question of a conversation: a short, elliptical follow-up
        (那上海呢？) is then searched together with it, and `interpreted_as` says how."""
        if isinstance(query, str):
            query = _INVISIBLE.sub("", query)
        if not isinstance(query, str) or not query.strip():
            raise QueryError('The query is empty. Ask a question, e.g. qa ask "上海全市核酸筛查采样了多少人"')
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        self.refresh()
        index = self.index  # one index for the whole search, even if an update swaps it meanwhile
        if mode != "lexical" and not index.dense:
            raise IndexMismatchError(
                f"Index in {index.folder} has no vectors, so mode {mode!r} cannot run. "
                f"Use --mode lexical, or rebuild with a model: qa index build --index {index.folder}"
            )
        warnings: list[str] = []
        query = replace_surrogates(query.strip())
        if len(query) > MAX_QUERY_CHARS:
            warnings.append(f"The query was {len(query)} characters long and was cut to its first {MAX_QUERY_CHARS}.")
            log.warning(warnings[-1])
            query = query[:MAX_QUERY_CHARS]
        cal = self.calibration_for(mode)
        limit = cal.threshold if threshold is None else float(threshold)
        if not _WORDLIKE.search(unicodedata.normalize("NFKC", query)):
            return SearchResult(query, False, [], mode, 0.0, limit, tuple(warnings))
        interpreted = with_context(query, context)
        if interpreted and has_own_words(query):  # 那上海呢？: its own words count as much as the context
            hits = self._followup_hits((interpreted, query), index, mode, k, cal, limit)
        else:
            r = self._rank(interpreted or query, index, mode, k)
            hits = make_hits(index, r.q, r.ranked[:k], r.candidates, r.passages, cal, limit)
        hits = descending(hits, limit)
        top = hits[0].confidence if hits else 0.0
        verdict = cal.verdict(top, threshold) if hits else "not_found"
        return SearchResult(
            query, verdict != "not_found", hits, mode, top, limit, tuple(warnings), verdict, interpreted
        )

    def _rank(self, text: str, index: Index, mode: Mode, k: int) -> Ranking:
        """Stages 0-2 for one question text: candidates, fusion, (rerank)."""
        q = self._understand(text, index, mode)
        candidates = gather_candidates(index, q, mode, k, self._background_scores(q))
        ranked = fuse(candidates.items, self.fusion if mode == "hybrid" else mode, candidates.lexical_max)
        passages = {c.id: candidates.passages[c.id] for c, _ in ranked[: max(k, 20)]}  # fetched with the candidates
        if self.reranker is not None:
            ranked = self.reranker.rerank(q, ranked, passages)
        return Ranking(q, ranked, candidates, passages)

    def _followup_hits(self, texts: tuple[str, str], index: Index, mode: Mode, k: int, cal: Calibration,
                       limit: float) -> list[Hit]:  # fmt: skip
        """A follow-up searched with the previous question and on its own words, FOLLOWUP_DEPTH
        deep each, the two rankings fused by reciprocal rank (`qa.fusion.rrf_merge`, untuned):
        a passage both rank well comes first, and the best of each stays near the top. Each
        kept passage's hit (confidence, highlights, evidence) comes from the search that ranked
        it higher; only the `k` kept are built."""
        depth = max(k, FOLLOWUP_DEPTH)
        rankings = [self._rank(text, index, mode, depth) for text in texts]
        kind = asked(texts[0])  # 那北京呢？ asks what the question as understood asks: 多少人
        kept = rrf_merge([[c.id for c, _ in r.ranked[:depth]] for r in rankings], k)
        hits: dict[str, Hit] = {}
        for source, ranking in enumerate(rankings):
            mine = {pid for pid, s in kept if s == source}
            ranked = [(c, score) for c, score in ranking.ranked[:depth] if c.id in mine]
            hits.update((h.id, h) for h in make_hits(index, ranking.q, ranked, ranking.candidates,
                                                     ranking.passages, cal, limit, kind))  # fmt: skip
        return [replace(hits[pid], rank=rank) for rank, (pid, _) in enumerate(kept, start=1)]

    def _background_vectors(self) -> np.ndarray:
        """The background sentences (qa.background) embedded once, for the "gap" feature."""
        if self._background is None:
            vectors = self.encoder.encode_passages(list(BACKGROUND))
            with self._lock:
                self._background = vectors
        return self._background

    def _background_scores(self, q: Query) -> list[float]:
        """The question's cosines to the background sentences."""
        if q.vector is None:
            return []
        return np.asarray(self._background_vectors() @ q.vector).tolist()

    def _understand(self, query: str, index: Index, mode: Mode) -> Query:
        """Stage 0: keywords, Latin words and, except in lexical mode, the query vector.

        Lexical mode does not embed the question: its candidates come from BM25 alone and its
        confidence from keyword features (see `calibration_for`), so it answers without the
        model, at the cost of BM25 plus jieba."""
        vector = self.encoder.encode_query(query) if index.dense and mode != "lexical" else None
        return Query(query, tokenize(query), latin_terms(query), vector)


# ---------------------------------------------------------------- stages


def gather_candidates(index: Index, q: Query, mode: Mode, k: int, background: Sequence[float] = ()) -> Candidates:
    """Stage 1: the passages each ranking proposes, each scored by both (exact cosine, BM25),
    and the reference cosines (best passages, background sentences) for the confidence."""
    stores = index.stores
    want = max(CANDIDATES, k)
    lexical = stores.keywords.search(q.tokens, q.latin, want)
    dense = stores.vectors.search(q.vector, want) if stores.vectors is not None and q.vector is not None else []
    if mode == "lexical":
        ids = [i for i, _ in lexical]
    elif mode == "dense":
        ids = [i for i, _ in dense]
    else:
        ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
    units: dict[str, list[ScoredUnit]] = {}
    if stores.vectors is not None and q.vector is not None:
        units = stores.vectors.unit_scores(q.vector, set(ids) | {i for i, _ in dense[: REFERENCE + 1]})
    lex = dict(lexical)
    missing = [i for i in ids if i not in lex]
    if missing:
        lex.update(stores.keywords.scores(q.tokens, q.latin, missing))
    dense_rank = {i: r for r, (i, _) in enumerate(dense, start=1)}
    lex_rank = {i: r for r, (i, _) in enumerate(lexical, start=1)}
    fetched = {p.id: p for p in stores.passages.get(ids)}  # one fetch: reading order now, texts later
    order = {pid: (p.source.file, p.source.order) for pid, p in fetched.items()}
    items = [
        Candidate(i, _best(units.get(i)), lex.get(i, 0.0), dense_rank.get(i), lex_rank.get(i), order.get(i, ("", 0)))
        for i in ids
        if i in order
    ]
    reference = [(i, _best(units.get(i)) if i in units else s) for i, s in dense[: REFERENCE + 1]]
    reference += [("", s) for s in background]
    return Candidates(items, units, lexical[0][1] if lexical else 0.0, reference, fetched)


FOLLOWUP_DEPTH = 20  # how deep each of a follow-up's two rankings goes before they are fused


@dataclass(frozen=True, slots=True)
class Ranking:
    """One question text through stages 0-2: its parsed query, the candidates, their fused
    (and reranked) order, and the passages of the head of that order."""

    q: Query
    ranked: list[tuple[Candidate, float]]
    candidates: Candidates
    passages: dict[str, Passage]


def _best(units: list[ScoredUnit] | None) -> float:
    return max((u.score for u in units), default=0.0) if units else 0.0


def make_hits(index: Index, q: Query, ranked: Sequence[tuple[Candidate, float]], candidates: Candidates,
              passages: Mapping[str, Passage], cal: Calibration, limit: float,
              kind: Asked | None = None) -> list[Hit]:  # fmt: skip
    """Stages 3 and 4: each hit's best sentence, its calibrated confidence and its highlights.
    `kind`: what the question asks for, when it is not `q.text`'s own (a follow-up's words alone
    ask nothing; the question as understood does)."""
    weights = index.stores.keywords.idf(q.tokens)
    latin = latin_share(q.text)
    kind = kind or asked(q.text)
    hits = []
    for rank, (c, score) in enumerate(ranked, start=1):
        p = passages.get(c.id) or index.stores.passages.get([c.id])[0]
        evidence = (
            evidence_span(candidates.units.get(c.id), p.text, q.tokens, weights, kind)
            if q.vector is not None else keyword_evidence(p.text, q.tokens, weights)
        )  # fmt: skip
        untyped = kind.checkable and not (holds_type(p.text, kind) and names_counted(p.text, kind))
        feats = hit_features(c.dense, _reference(candidates.reference, c.id), _coverage(q.tokens, weights, p.text),
                             latin, c.lexical, untyped=untyped)  # fmt: skip
        conf = calibration.confidence(cal, feats)
        hits.append(
            Hit(rank, score, p.text, p.sources, highlight_spans(p.text, q.tokens), p.id, conf, conf < limit,
                evidence, feats)
        )  # fmt: skip
    return hits


def descending(hits: Sequence[Hit], limit: float) -> list[Hit]:
    """The hits with confidences that never rise down the list. The list is in fused-score order
    and a lower passage may calibrate higher, but the passage above it must not look less
    relevant: the chat, the CLI and the JSON all show these (the top one is unchanged)."""
    out: list[Hit] = []
    for h in hits:
        c = min(h.confidence, out[-1].confidence) if out else h.confidence
        out.append(h if c == h.confidence else replace(h, confidence=c, low_confidence=c < limit))
    return out


# The answer line (答：) and the marked sentence: a sentence's cosine to the question plus this
# times the IDF-weighted share of the question's keywords it holds. Cosine alone picked a
# sentence holding the answer for 83.7% of the dev questions whose top hit is relevant (92);
# 0.02 -> 88.0%, 0.1 -> 90.2%, 0.2 to 0.5 -> 91.3% (a plateau; 0.3 chosen). Test split, measured
# once after: 82.8% -> 88.2% (93 questions).
EVIDENCE_KEYWORD_WEIGHT = 0.3
# A sentence that holds an answer of the kind the question asks (a number for 多少/几, a date for
# 哪一天; qa.answer_type) gains this much. Chosen with bench/evidence.py on the development sets
# (right evidence where the top hit is relevant): tests/data/dev.jsonl 0 -> 84/92, 0.05 to 0.3 ->
# 85/92; tests/data/reader_dev.jsonl 0 to 0.05 -> 39/41, 0.1 to 0.3 -> 40/41 (0.1 chosen). Test
# split, reported: 82/93 -> 83/93.
EVIDENCE_TYPE_WEIGHT = 0.1
# A best sentence shorter than this (characters), or one that ends in a colon, is a lead-in
# (“尽小者大,慎微者著”。 / 我给同志们提3点要求。): the answer line goes on with the sentence after
# it; 0 turns it off. bench/evidence.py --lead-ins on tests/data/dev.jsonl: off 85/92, 15 -> 86,
# 20 -> 87, 25 to 40 -> 89/92 (a plateau; 25 chosen, the shortest: 50 -> 57 characters on
# average); tests/data/reader_dev.jsonl 40/41 throughout. Test split, reported once: see README.
EVIDENCE_LEAD_IN_CHARS = 25


def evidence_span(units: list[ScoredUnit] | None, text: str, tokens: Sequence[str],
                  weights: np.ndarray, kind: Asked = ANY) -> tuple[int, int] | None:  # fmt: skip
    """The span of the passage's sentence that best answers the question: its cosine to the
    question, plus EVIDENCE_KEYWORD_WEIGHT times the share of the question's keywords it holds,
    plus EVIDENCE_TYPE_WEIGHT if it holds an answer of the kind asked (qa.answer_type), and the
    sentence after it when it is only a lead-in (EVIDENCE_LEAD_IN_CHARS; None for a one-sentence
    passage)."""
    sentences = (units or [])[1:]  # the first unit is the passage whole
    if not sentences:
        return None
    keywords = list(tokens)

    def score(u: ScoredUnit) -> float:
        sentence = text[u.unit.start : u.unit.end]
        typed = EVIDENCE_TYPE_WEIGHT if kind.kind != "any" and holds_type(sentence, kind) else 0.0
        return u.score + EVIDENCE_KEYWORD_WEIGHT * _coverage(keywords, weights, sentence) + typed

    i = max(range(len(sentences)), key=lambda j: score(sentences[j]))
    start, end = sentences[i].unit.start, sentences[i].unit.end
    if i + 1 < len(sentences) and _lead_in(text[start:end]):
        end = sentences[i + 1].unit.end
    return (start, end)


def _lead_in(sentence: str) -> bool:
    """Whether a sentence only leads into the next one (short, or ending in a colon)."""
    words = re.sub(r"\s+", "", sentence)
    return bool(EVIDENCE_LEAD_IN_CHARS) and (len(words) < EVIDENCE_LEAD_IN_CHARS or words[-1:] in ("：", ":"))


def keyword_evidence(text: str, tokens: list[str], weights: np.ndarray) -> tuple[int, int] | None:
    """Without a query vector (lexical mode): the span of the sentence that holds the largest
    IDF-weighted share of the question's keywords, the first on a tie (None for a one-sentence
    passage, or when no sentence holds any)."""
    spans = split_sentences(text)
    if len(spans) < 2:
        return None
    covered = [_coverage(tokens, weights, text[s:e]) for s, e in spans]
    best = int(np.argmax(covered))
    return spans[best] if covered[best] > 0 else None


def _check_calibration(index: Index) -> None:
    cal = index.manifest.calibration
    known = set(hit_features(0.0, None, 0.0, 0.0, 0.0))
    if not set(cal.features) <= known:
        raise IndexMismatchError(
            f"The calibration in {index.folder / 'manifest.json'} does not fit this version of qa "
            f"(features {list(cal.features)}). Rebuild the index: qa index build --index {index.folder} --force"
        )


def latin_share(query: str) -> float:
    """Share of the query's letters that are Latin: cross-lingual similarities run lower."""
    letters = [c for c in unicodedata.normalize("NFKC", query) if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


def _reference(reference: list[tuple[str, float]], pid: str) -> float | None:
    """Mean of the best REFERENCE cosines among the other passages and the background
    sentences: a hit that stands out is more likely an answer. None without vectors."""
    others = sorted((d for i, d in reference if i != pid), reverse=True)[:REFERENCE]
    return sum(others) / len(others) if others else None


def hit_features(dense: float, reference: float | None, coverage: float, latin: float, bm25: float, *,
                 untyped: bool = False) -> dict[str, float]:  # fmt: skip
    """The inputs of the calibrated confidence (see qa.calibration). `untyped`: the question asks
    for a quantity, a year or a day (qa.answer_type) and the passage holds none of that kind, or
    never names what is counted (几名药剂师): the mark of a near-topic passage."""
    return {
        "dense": dense,
        "gap": dense - reference if reference is not None else 0.0,
        "coverage": coverage,
        "latin": latin,
        "dense_latin": dense * latin,
        "bm25": bm25,
        "untyped": float(untyped),
    }


def _coverage(tokens: list[str], weights: np.ndarray, text: str) -> float:
    """IDF-weighted share of the query's keywords that occur in `text`."""
    if not tokens:
        return 0.0
    norm = _compact_fold(text)
    total = float(weights.sum())
    if total <= 0:
        return 0.0
    found = sum(float(w) for t, w in zip(tokens, weights, strict=True) if t in norm)
    return found / total


# A reply folds the same passage texts and sentences again and again (every question that finds
# them); kept, the last few thousand took a search after the embedding on the seeds from 4.1 to
# 3.7 ms (2026-12-06).
@functools.lru_cache(maxsize=8192)
def _compact_fold(text: str) -> str:
    return re.sub(r"\s+", "", fold(text))


@functools.lru_cache(maxsize=4096)
def _folded_with_origin(text: str) -> tuple[str, tuple[int, ...]]:
    """`fold(text)` and, for each of its characters, the index of the character of `text` it
    comes from. NFKC and lower case go character by character (they may change a length);
    the traditional-to-simplified step runs once on the whole text, and is trusted to map
    character to character when it keeps the length, as it does for Chinese."""
    pieces = [unicodedata.normalize("NFKC", ch).lower() for ch in text]
    origin = [i for i, piece in enumerate(pieces) for _ in piece]
    joined = "".join(pieces)
    norm = fold(joined)
    if len(norm) != len(joined):
        norm = "".join(fold(ch) for ch in text)
        origin = [i for i, ch in enumerate(text) for _ in fold(ch)]
    return norm, tuple(origin)


def highlight_spans(text: str, tokens: list[str]) -> tuple[tuple[int, int], ...]:
    """Character spans of `text` where query terms occur (compared in `fold`ed form)."""
    terms = {t for t in tokens if len(t) >= 2 or t.isdigit()}
    if not terms:
        return ()
    norm, origin = _folded_with_origin(text)
    spans = []
    for term in terms:
        start = norm.find(term)
        while start >= 0:
            end = start + len(term)
            spans.append((origin[start], origin[end - 1] + 1))
            start = norm.find(term, end)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return tuple(merged)
