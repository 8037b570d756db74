"""Stage 5b: the calibrated "no answer" decision.

A hit's confidence is a logistic model over a few scale-stable features (`hit_features`
in qa.search): the best cosine similarity of the passage or one of its sentences to the
question, its margin over the next best passages, the IDF-weighted share of the
question's keywords found in the passage, and the share of Latin letters in the
question (cross-lingual similarities run lower). It is fitted on a labelled
query set that includes unanswerable questions (`qa eval --calibrate`), and stored in
the index manifest. A result is answered when its top hit's confidence reaches the
threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DENSE_FEATURES = ("dense", "gap", "coverage", "latin", "dense_latin")
LEXICAL_FEATURES = ("coverage", "latin")

# Fitted with `qa eval tests/data/queries.jsonl --calibrate` on the seed index.
DEFAULTS: dict[str, dict[str, Any]] = {
    "intfloat/multilingual-e5-small": {
        "features": list(DENSE_FEATURES),
        "weights": [15.6044, 28.756, 4.387, 1.4634, 1.905],
        "bias": -16.5065,
        "threshold": 0.3131,
        "fitted": True,
        "fitted_on": "tests/data/queries.jsonl (shipped default)",
    },
}
LEXICAL_DEFAULT: dict[str, Any] = {
    "features": list(LEXICAL_FEATURES),
    "weights": [8.0, -2.0],
    "bias": -4.0,
    "threshold": 0.5,
    "fitted": False,
}
# Another model starts from the e5 numbers, marked as not fitted for it.
GENERIC_DENSE: dict[str, Any] = {
    **DEFAULTS["intfloat/multilingual-e5-small"],
    "fitted": False,
    "fitted_on": None,
    "note": "not fitted for this model: run qa eval --calibrate",
}


def for_manifest(old_manifest: Mapping[str, Any] | None, model: Mapping[str, Any] | None) -> dict[str, Any]:
    """The calibration a new build starts with: the previous one if it fits, else a default."""
    features = list(DENSE_FEATURES) if model else list(LEXICAL_FEATURES)
    if old_manifest:
        old = old_manifest.get("calibration")
        old_model = old_manifest.get("model")
        same_model = (old_model or {}).get("fingerprint") == (model or {}).get("fingerprint")
        if old and old.get("features") == features and same_model:
            return dict(old)
    if model is None:
        return dict(LEXICAL_DEFAULT)
    return dict(DEFAULTS.get(model["name"], GENERIC_DENSE))


def confidence(calibration: Mapping[str, Any], features: Mapping[str, float]) -> float:
    """Calibrated probability that a hit answers the question."""
    z = float(calibration["bias"])
    for name, w in zip(calibration["features"], calibration["weights"], strict=True):
        z += float(w) * float(features.get(name, 0.0))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, sample_weight: np.ndarray | None = None, l2: float = 1e-2, iterations: int = 100
) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularized, optionally weighted logistic regression (Newton's method)."""
    n, d = x.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.eye(d + 1) * l2
    reg[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(a @ w, -50, 50)))
        grad = a.T @ (sw * (p - y)) + reg @ w
        hess = a.T @ (a * (sw * p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def best_threshold(scores: Sequence[float], answerable: Sequence[bool], precision: float | None = None) -> float:
    """The threshold with the best F1 of the decision "unanswerable" (refuse when below);
    with `precision`, the lowest threshold whose answered-precision reaches it."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(answerable, dtype=bool)
    candidates = np.unique(np.concatenate([s, [0.5]]))
    best, best_value = 0.5, -1.0
    for t in candidates:
        answered = s >= t
        if precision is not None:
            tp = int((answered & y).sum())
            prec = tp / max(int(answered.sum()), 1)
            value = -t if prec >= precision else -2.0
        else:
            refused = ~answered
            tp = int((refused & ~y).sum())
            p = tp / max(int(refused.sum()), 1)
            r = tp / max(int((~y).sum()), 1)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            # ties: prefer answering more (a lower threshold)
            value = f1 - 1e-6 * t
        if value > best_value:
            best, best_value = float(t), value
    # Midpoint to the next lower score, so a small drift does not flip the decision.
    lower = s[s < best]
    return float((best + lower.max()) / 2) if lower.size else best
