"""Stage 5: the Retriever — dense, lexical and hybrid search, abstention, highlights.

The web chat, the CLI and the evaluation all call `Retriever.search`.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from qa import calibration
from qa.embed import Encoder, SentenceTransformerEncoder, fingerprint, probe_vector
from qa.errors import IndexMismatchError, QueryError
from qa.index import DEFAULT_INDEX, LoadedIndex, load_index, stale_documents
from qa.lexical import fold, latin_terms, replace_surrogates, tokenize
from qa.split import Passage, Source

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "lexical"]
Fusion = Literal["rrf", "weighted", "dense-first"]
MODES: tuple[str, ...] = get_args(Mode)
FUSIONS: tuple[str, ...] = get_args(Fusion)
MAX_QUERY_CHARS = 1000
MAX_K = 100
RRF_K = 60
# Hybrid fusion: measured on tests/data/queries.jsonl (see README "Retrieval quality"):
# a weighted sum of min-max-normalized cosine and max-normalized BM25 beat RRF and dense-first.
DEFAULT_FUSION: Fusion = "weighted"
WEIGHT_DENSE = 0.6
CANDIDATES = 50
REFERENCE = 10  # how many of the best dense scores a hit's score is compared with
_WORDLIKE = re.compile(r"[^\W_]", re.UNICODE)


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
    return {"file": s.file, "title": s.title, "paragraph": s.paragraph, "span": [s.start, s.end]}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The answer to one query: `answered` is False when nothing relevant was found
    (the hits are then the nearest passages, all marked low-confidence)."""

    query: str
    answered: bool
    hits: list[Hit]
    mode: str
    confidence: float
    threshold: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answered": self.answered,
            "hits": [h.to_dict() for h in self.hits],
            "mode": self.mode,
            "confidence": round(self.confidence, 4),
            "threshold": round(self.threshold, 4),
            "warnings": list(self.warnings),
        }


@dataclass
class _Scored:
    idx: int
    score: float
    dense: float
    lexical: float


class Retriever:
    """Search an index folder. Thread-safe: any number of threads may call `search`."""

    def __init__(self, index: LoadedIndex, encoder: Encoder | None = None, *, fusion: Fusion = DEFAULT_FUSION) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.index = index
        self.fusion: Fusion = fusion
        self._encoder = encoder
        self._checked = False
        self._lock = threading.Lock()
        model = index.manifest.get("model")
        if model and encoder is not None and encoder.name != model["name"]:
            raise IndexMismatchError(
                f"Index in {index.folder} was built with {model['name']} but the configured model is "
                f"{encoder.name}. Rebuild it: qa index build --index {index.folder} --model {encoder.name}"
            )
        _check_calibration(index)
        self._unit_rows = _group_units(index.units, len(index.passages)) if index.units is not None else []
        self._positions = {(s.file, s.order): i for i, p in enumerate(index.passages) for s in p.sources}

    @classmethod
    def load(cls, index_dir: str | Path = DEFAULT_INDEX, *, encoder: Encoder | None = None, model: str | None = None,
             fusion: Fusion = DEFAULT_FUSION, check_stale: bool = True) -> Retriever:  # fmt: skip
        """Load and verify an index; warn when the documents on disk changed since it was built."""
        index = load_index(index_dir)
        if encoder is None and model is not None:
            encoder = SentenceTransformerEncoder(model)
        retriever = cls(index, encoder, fusion=fusion)
        if check_stale:
            changes = stale_documents(index.manifest)
            if changes:
                log.warning(
                    "The index in %s is stale: %s. Update it: qa index build --index %s",
                    index_dir, "; ".join(changes[:5]) + (" …" if len(changes) > 5 else ""), index_dir,
                )  # fmt: skip
        return retriever

    # ------------------------------------------------------------ properties

    @property
    def manifest(self) -> dict[str, Any]:
        return self.index.manifest

    @property
    def threshold(self) -> float:
        return float(self.index.manifest["calibration"]["threshold"])

    @property
    def has_dense(self) -> bool:
        return self.index.dense

    @property
    def encoder(self) -> Encoder:
        model = self.index.manifest.get("model")
        if model is None:
            raise IndexMismatchError(
                f"Index in {self.index.folder} has no vectors (built without a model). "
                f"Use --mode lexical, or rebuild it with a model: qa index build --index {self.index.folder}"
            )
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = SentenceTransformerEncoder(model["name"])
        if not self._checked:
            with self._lock:
                if not self._checked:
                    self._check_model(self._encoder, model)
                    self._checked = True
        return self._encoder

    def _check_model(self, encoder: Encoder, model: dict[str, Any]) -> None:
        fix = f"Rebuild it: qa index build --index {self.index.folder} --model {encoder.name}"
        if encoder.dimension != model["dimension"]:
            raise IndexMismatchError(
                f"Index in {self.index.folder} was built with {model['name']} (dim {model['dimension']}) but the "
                f"configured model {encoder.name} has dim {encoder.dimension}. {fix}"
            )
        probe = probe_vector(encoder)
        stored = np.asarray(model["probe"], dtype=np.float32)
        if float(probe @ stored) < 0.99:
            raise IndexMismatchError(
                f"Index in {self.index.folder} was built with {model['name']} (fingerprint {model['fingerprint']}) "
                f"but the loaded model gives fingerprint {fingerprint(probe)}: its embeddings differ. {fix}"
            )

    def warm_up(self) -> None:
        """Load the model and the tokenizer now instead of on the first query."""
        tokenize("预热")
        if self.has_dense:
            self.encoder.encode_query("预热")

    def documents(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.index.manifest.get("documents", [])]

    def neighbours(self, source: Source) -> tuple[Passage | None, Passage | None]:
        """The passages before and after `source` in its document."""
        before = self._positions.get((source.file, source.order - 1))
        after = self._positions.get((source.file, source.order + 1))
        ps = self.index.passages
        return (ps[before] if before is not None else None, ps[after] if after is not None else None)

    # ------------------------------------------------------------ search

    def search(self, query: str, k: int = 5, *, mode: Mode = "hybrid", threshold: float | None = None) -> SearchResult:
        """The `k` best passages for `query`, and whether they answer it."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError('The query is empty. Ask a question, e.g. qa ask "上海全市核酸筛查采样了多少人"')
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if mode != "lexical" and not self.has_dense:
            raise IndexMismatchError(
                f"Index in {self.index.folder} has no vectors, so mode {mode!r} cannot run. "
                f"Use --mode lexical, or rebuild with a model: qa index build --index {self.index.folder}"
            )
        warnings: list[str] = []
        query = replace_surrogates(query.strip())
        if len(query) > MAX_QUERY_CHARS:
            warnings.append(f"The query was {len(query)} characters long and was cut to its first {MAX_QUERY_CHARS}.")
            log.warning(warnings[-1])
            query = query[:MAX_QUERY_CHARS]
        cal = self.index.manifest["calibration"]
        limit = float(cal["threshold"]) if threshold is None else float(threshold)
        if not _WORDLIKE.search(unicodedata.normalize("NFKC", query)):
            return SearchResult(query, False, [], mode, 0.0, limit, tuple(warnings))
        tokens = tokenize(query)
        scored, qvec, reference = self._rank(query, tokens, k, mode)
        weights = self.index.lexical.idf(tokens)
        latin = latin_share(query)
        hits = []
        for rank, s in enumerate(scored, start=1):
            p = self.index.passages[s.idx]
            feats = hit_features(
                s.dense, _reference(reference, s.idx), _coverage(tokens, weights, p.text), latin, s.lexical
            )
            conf = calibration.confidence(cal, feats)
            hits.append(
                Hit(rank, s.score, p.text, p.sources, highlight_spans(p.text, tokens), p.id, conf, conf < limit,
                    self._evidence(s.idx, qvec), feats)
            )  # fmt: skip
        top = hits[0].confidence if hits else 0.0
        return SearchResult(query, top >= limit, hits, mode, top, limit, tuple(warnings))

    def _rank(
        self, query: str, tokens: list[str], k: int, mode: Mode
    ) -> tuple[list[_Scored], np.ndarray | None, list[tuple[int, float]]]:
        """The fused top-k, the query vector, and the best dense scores (for the confidence features)."""
        lexical = self.index.lexical.scores(tokens, latin_terms(query))
        qvec = self.encoder.encode_query(query) if self.has_dense else None
        dense: dict[int, float] = {}
        if qvec is not None and self.index.store is not None:
            assert self.index.units is not None
            want = min(len(self.index.store), max(CANDIDATES * 4, k * 8))
            scores, ids = self.index.store.search(qvec, want)
            for sc, uid in zip(scores.tolist(), ids.tolist(), strict=True):
                pi = int(self.index.units[uid, 0])
                if sc > dense.get(pi, -1.0):
                    dense[pi] = sc
        lex_order = [int(i) for i in np.argsort(-lexical, kind="stable")[: max(CANDIDATES, k)] if lexical[i] > 0]
        dense_order = sorted(dense, key=lambda i: -dense[i])[: max(CANDIDATES, k)]
        if mode == "lexical":
            candidates = lex_order
        elif mode == "dense":
            candidates = dense_order
        else:
            candidates = list(dict.fromkeys(dense_order + lex_order))
        exact = {i: self._dense_exact(i, qvec) for i in candidates} if qvec is not None else {}
        fused = self._fuse(candidates, lex_order, dense_order, lexical, exact, mode)
        fused.sort(key=lambda s: (-s.score, s.idx))
        reference = [(i, exact[i] if i in exact else self._dense_exact(i, qvec)) for i in dense_order[: REFERENCE + 1]]
        return fused[:k], qvec, reference

    def _fuse(self, candidates: list[int], lex_order: list[int], dense_order: list[int], lexical: np.ndarray,
              exact: dict[int, float], mode: Mode) -> list[_Scored]:  # fmt: skip
        out = []
        lex_rank = {i: r for r, i in enumerate(lex_order, start=1)}
        dense_rank = {i: r for r, i in enumerate(dense_order, start=1)}
        lex_max = float(lexical.max()) if lexical.size and lexical.max() > 0 else 1.0
        dvals = list(exact.values())
        d_lo, d_hi = (min(dvals), max(dvals)) if dvals else (0.0, 1.0)
        for i in candidates:
            d = exact.get(i, 0.0)
            lx = float(lexical[i])
            if mode == "lexical":
                score = lx
            elif mode == "dense":
                score = d
            elif self.fusion == "rrf":
                score = sum(1.0 / (RRF_K + r[i]) for r in (lex_rank, dense_rank) if i in r)
            elif self.fusion == "weighted":
                dn = (d - d_lo) / (d_hi - d_lo) if d_hi > d_lo else 1.0
                score = WEIGHT_DENSE * dn + (1 - WEIGHT_DENSE) * lx / lex_max
            else:  # dense-first: dense similarity, BM25 only breaks near-ties
                score = round(d, 2) + 0.01 * lx / lex_max
            out.append(_Scored(i, float(score), d, lx))
        return out

    def _dense_exact(self, idx: int, qvec: np.ndarray | None) -> float:
        if qvec is None or self.index.vectors is None:
            return 0.0
        rows = self._unit_rows[idx]
        return float((self.index.vectors[rows] @ qvec).max()) if len(rows) else 0.0

    def _evidence(self, idx: int, qvec: np.ndarray | None) -> tuple[int, int] | None:
        """The span of the passage's sentence closest to the question (rows after the first
        unit of a passage are its sentences)."""
        if qvec is None or self.index.units is None or self.index.vectors is None:
            return None
        rows = self._unit_rows[idx]
        if len(rows) < 2:
            return None
        best = rows[1 + int(np.argmax(self.index.vectors[rows[1:]] @ qvec))]
        _, start, end = self.index.units[best].tolist()
        return (int(start), int(end))


def _check_calibration(index: LoadedIndex) -> None:
    cal = index.manifest.get("calibration") or {}
    known = set(hit_features(0.0, None, 0.0, 0.0, 0.0))
    features, weights = cal.get("features"), cal.get("weights")
    if (
        not isinstance(features, list) or not isinstance(weights, list) or len(features) != len(weights)
        or not set(features) <= known or not isinstance(cal.get("threshold"), int | float)
    ):  # fmt: skip
        raise IndexMismatchError(
            f"The calibration in {index.folder / 'manifest.json'} does not fit this version of qa "
            f"(features {features}). Rebuild the index: qa index build --index {index.folder} --force"
        )


def _group_units(units: np.ndarray | None, n: int) -> list[np.ndarray]:
    if units is None:
        return []
    order = np.argsort(units[:, 0], kind="stable")
    counts = np.bincount(units[:, 0], minlength=n)
    return np.split(order, np.cumsum(counts)[:-1])


def latin_share(query: str) -> float:
    """Share of the query's letters that are Latin: cross-lingual similarities run lower."""
    letters = [c for c in unicodedata.normalize("NFKC", query) if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


def _reference(reference: list[tuple[int, float]], idx: int) -> float | None:
    """Mean dense score of the best other passages: a hit that stands out is more likely an answer."""
    others = [d for i, d in reference if i != idx][:REFERENCE]
    return sum(others) / len(others) if others else None


def hit_features(dense: float, reference: float | None, coverage: float, latin: float, bm25: float) -> dict[str, float]:
    """The inputs of the calibrated confidence (see qa.calibration)."""
    return {
        "dense": dense,
        "gap": dense - reference if reference is not None else 0.0,
        "coverage": coverage,
        "latin": latin,
        "dense_latin": dense * latin,
        "bm25": bm25,
    }


def _coverage(tokens: list[str], weights: np.ndarray, text: str) -> float:
    """IDF-weighted share of the query's keywords that occur in `text`."""
    if not tokens:
        return 0.0
    norm = re.sub(r"\s+", "", fold(text))
    total = float(weights.sum())
    if total <= 0:
        return 0.0
    found = sum(float(w) for t, w in zip(tokens, weights, strict=True) if t in norm)
    return found / total


def highlight_spans(text: str, tokens: list[str]) -> tuple[tuple[int, int], ...]:
    """Character spans of `text` where query terms occur (compared in `fold`ed form)."""
    terms = {t for t in tokens if len(t) >= 2 or t.isdigit()}
    if not terms:
        return ()
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        for c in fold(ch):
            chars.append(c)
            origin.append(i)
    norm = "".join(chars)
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
