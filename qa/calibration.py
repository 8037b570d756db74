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
from dataclasses import replace

import numpy as np

from qa.manifest import Calibration, Manifest, ModelInfo

DENSE_FEATURES = ("dense", "gap", "coverage", "latin", "dense_latin")
LEXICAL_FEATURES = ("coverage", "latin")

# Fitted with `qa eval tests/data/queries.jsonl --calibrate` on the seed index.
DEFAULTS: dict[str, Calibration] = {
    "intfloat/multilingual-e5-small": Calibration(
        features=DENSE_FEATURES,
        weights=(15.6044, 28.756, 4.387, 1.4634, 1.905),
        bias=-16.5065,
        threshold=0.3131,
        fitted=True,
        fitted_on="tests/data/queries.jsonl (shipped default)",
    ),
}
LEXICAL_DEFAULT = Calibration(features=LEXICAL_FEATURES, weights=(8.0, -2.0), bias=-4.0, threshold=0.5)


def default_for(model: ModelInfo | None) -> Calibration:
    """The shipped calibration for a model; another model starts from the e5 numbers, marked unfitted."""
    if model is None:
        return LEXICAL_DEFAULT
    if model.name in DEFAULTS:
        return DEFAULTS[model.name]
    generic = DEFAULTS["intfloat/multilingual-e5-small"]
    return replace(
        generic, fitted=False, fitted_on=None, details={"note": "not fitted for this model: run qa eval --calibrate"}
    )


def for_manifest(old: Manifest | None, model: ModelInfo | None) -> Calibration:
    """The calibration a new build starts with: the previous one if it fits, else a default."""
    features = DENSE_FEATURES if model else LEXICAL_FEATURES
    if old is not None:
        same_model = (old.model.fingerprint if old.model else None) == (model.fingerprint if model else None)
        if old.calibration.features == features and same_model:
            return old.calibration
    return default_for(model)


def confidence(calibration: Calibration, features: Mapping[str, float]) -> float:
    """Calibrated probability that a hit answers the question."""
    z = calibration.bias
    for name, w in zip(calibration.features, calibration.weights, strict=True):
        z += w * float(features.get(name, 0.0))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularized, class-balanced logistic regression (scikit-learn).

    `l2` is the penalty's strength (scikit-learn's C is its inverse); features are standardized
    first so the penalty treats them alike, and the weights returned apply to the raw features.
    """
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=1.0 / l2, class_weight="balanced", max_iter=1000)
    model.fit((x - mu) / sd, y.astype(int))
    w_std, b_std = model.coef_[0], float(model.intercept_[0])
    return w_std / sd, b_std - float((w_std * mu / sd).sum())


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
