"""Stage 5a: fusing the dense and the keyword ranking into one score per candidate.

A small strategy table, like haystack's DocumentJoiner: each strategy maps the candidates
(each with its exact dense cosine and its BM25 score, and its rank in each list) to a
fused score. Fusion runs client-side for every store, so scores, and the calibrated
confidence built on them, mean the same whatever holds the vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

Fusion = Literal["weighted", "rrf", "dense-first"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
DEFAULT_FUSION: Fusion = "weighted"
# Measured on the shipped query set (see README "Retrieval quality"): a weighted sum of
# min-max-normalized cosine and max-normalized BM25 beat RRF and dense-first; a sweep of
# the dense weight from 0.4 to 0.8 peaked at 0.6-0.7.
WEIGHT_DENSE = 0.6
# Reciprocal rank fusion's constant (Cormack et al. 2009): 60 damps the head of each list
# so that a document ranked well by both lists beats one ranked first by only one.
RRF_K = 60


@dataclass(frozen=True, slots=True)
class Candidate:
    """A passage that either ranking proposed, with both of its scores."""

    id: str
    dense: float  # best cosine of the passage or one of its sentences (0.0 without vectors)
    lexical: float  # BM25 over words and pinyin (0.0 when no keyword matches)
    dense_rank: int | None  # 1-based rank in the dense list, None if not in it
    lexical_rank: int | None
    order: tuple[str, int]  # reading order, to break ties deterministically


@dataclass(frozen=True, slots=True)
class Scale:
    """What the normalizations need: the best BM25 in the corpus, the cosine range of the candidates."""

    lexical_max: float
    dense_lo: float
    dense_hi: float

    @classmethod
    def of(cls, candidates: Sequence[Candidate], lexical_max: float) -> Scale:
        dense = [c.dense for c in candidates]
        return cls(lexical_max if lexical_max > 0 else 1.0, min(dense, default=0.0), max(dense, default=1.0))


Strategy = Callable[[Candidate, Scale], float]


def weighted(c: Candidate, s: Scale) -> float:
    dense = (c.dense - s.dense_lo) / (s.dense_hi - s.dense_lo) if s.dense_hi > s.dense_lo else 1.0
    return WEIGHT_DENSE * dense + (1 - WEIGHT_DENSE) * c.lexical / s.lexical_max


def rrf(c: Candidate, s: Scale) -> float:
    return sum(1.0 / (RRF_K + r) for r in (c.dense_rank, c.lexical_rank) if r is not None)


def dense_first(c: Candidate, s: Scale) -> float:
    """Dense similarity; BM25 only breaks near-ties."""
    return round(c.dense, 2) + 0.01 * c.lexical / s.lexical_max


def dense_only(c: Candidate, s: Scale) -> float:
    return c.dense


def lexical_only(c: Candidate, s: Scale) -> float:
    return c.lexical


STRATEGIES: dict[str, Strategy] = {
    "weighted": weighted,
    "rrf": rrf,
    "dense-first": dense_first,
    "dense": dense_only,  # mode "dense": one list, nothing to fuse
    "lexical": lexical_only,  # mode "lexical"
}


def fuse(candidates: Sequence[Candidate], strategy: str, lexical_max: float) -> list[tuple[Candidate, float]]:
    """The candidates with their fused scores, best first (ties in reading order)."""
    scale = Scale.of(candidates, lexical_max)
    score = STRATEGIES[strategy]
    scored = [(c, float(score(c, scale))) for c in candidates]
    scored.sort(key=lambda cs: (-cs[1], cs[0].order))
    return scored


def rrf_merge(rankings: Sequence[Sequence[str]], k: int) -> list[tuple[str, int]]:
    """The `k` best ids of several rankings (each best first) by reciprocal rank fusion, each
    with the index of the ranking that placed it highest (the earlier one on a tie). Ties in
    fused score go to the better single rank, then to the earlier ranking."""
    score: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}  # id -> (its best rank, the ranking that gave it)
    for source, ids in enumerate(rankings):
        for rank, pid in enumerate(ids, start=1):
            score[pid] = score.get(pid, 0.0) + 1.0 / (RRF_K + rank)
            if pid not in best or rank < best[pid][0]:
                best[pid] = (rank, source)
    order = sorted(score, key=lambda pid: (-score[pid], best[pid]))
    return [(pid, best[pid][1]) for pid in order[:k]]
