"""Per-class decision thresholds, fitted on one split and applied to another.

Estimator-shaped on purpose (``fit`` on validation predictions, ``apply`` elsewhere): a threshold
must never be scored on the data it was tuned on. Tuning lifted the study's test macro F1 from
0.260 to 0.309.

The methods below turn val predictions into per-class thresholds, with a choice between them
that does not overfit val.

Every method is a pure function ``fit(y_true, probs, train_rates) -> thresholds`` over val
predictions (``train_rates``: each class's positive frequency in the train split). Per-class
F1-optimal thresholds fitted on a small val split overfit it (a class with three val positives
gets a threshold tuned to those three); the other methods trade that variance for bias:

``fixed_0.5``    0.5 for every class.
``global``       one threshold for every class, maximising val macro F1.
``per_class``    each class's F1-optimal threshold on val (the study's tuning).
``shrunk``       per-class thresholds pulled toward the global one by ``n / (n + SHRINK_STRENGTH)``
                 where ``n`` is the class's val positives: a rare class keeps mostly the global.
``class_ratio``  each class predicted positive for the same fraction of val samples as its train
                 frequency (the 2018 Kaggle winner's calibration); uses no val labels.
``shrunk_ratio`` per-class thresholds pulled toward the class-ratio ones the same way: where a
                 model's classes are calibrated differently (ln weights), one global threshold
                 is a poor target, a class's own ratio threshold a better one.

``choose_method`` scores every method by K-fold cross-validation *within* val (fit on K-1 folds,
predict the held-out fold, macro F1 of the pooled out-of-fold predictions, averaged over three
fold splits) and returns the best; the holdout never enters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hpa_tune.scoring.metrics import DEFAULT_THRESHOLD, macro_f1, per_class_f1


def best_threshold(
    y_true: np.ndarray, scores: np.ndarray, default: float = DEFAULT_THRESHOLD
) -> float:
    """The threshold that maximises one class's F1 on (y_true, scores).

    Every distinct score is a candidate cut; the returned threshold lies halfway between the
    lowest score predicted positive and the next lower score, so small shifts of the scores on
    other data do not flip borderline predictions. A class without positives keeps ``default``.

    Args:
        y_true: (N,) 0/1 truth of one class.
        scores: (N,) predicted probabilities of that class.
        default: threshold returned when the class has no positives.

    Returns:
        The F1-maximising threshold (ties: the highest such threshold).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or len(s) == 0:
        return default
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # Only cut where the score changes, so tied scores fall on the same side.
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    f1 = np.where(last_of_run, 2 * tp / (tp + fp + n_pos), -1.0)
    k = int(np.argmax(f1))
    lower = s_sorted[k + 1] if k + 1 < len(s_sorted) else 0.0
    return float((s_sorted[k] + lower) / 2)


@dataclass
class ClassThresholds:
    """One threshold per class; ``fit`` on validation predictions, ``apply`` to any other split."""

    default: float = DEFAULT_THRESHOLD
    thresholds_: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, y_true: np.ndarray, probs: np.ndarray) -> ClassThresholds:
        """Choose each class's threshold to maximise that class's F1 on (y_true, probs)."""
        y_true, probs = np.asarray(y_true), np.asarray(probs)
        if y_true.shape != probs.shape or y_true.ndim != 2:
            raise ValueError(
                f"y_true {y_true.shape} and probs {probs.shape} must be the same (N, K) shape"
            )
        self.thresholds_ = np.array(
            [best_threshold(y_true[:, k], probs[:, k], self.default) for k in range(probs.shape[1])]
        )
        return self

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """0/1 predictions of ``probs`` under the fitted thresholds."""
        if self.thresholds_.size == 0:
            raise RuntimeError("ClassThresholds.apply called before fit")
        return (np.asarray(probs) >= self.thresholds_).astype(np.uint8)

    def to_list(self) -> list[float]:
        """The fitted thresholds as plain floats (for JSON)."""
        return [float(t) for t in self.thresholds_]

    @classmethod
    def from_list(cls, values: list[float]) -> ClassThresholds:
        """Rebuild from ``to_list`` output."""
        return cls(thresholds_=np.asarray(values, dtype=np.float64))


def at_least_one_label(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0/1 predictions where a row with nothing above threshold gets its most confident class.

    "Most confident" is the class with the highest ``prob / threshold`` ratio, i.e. the one
    closest to (or furthest past) its own threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    thr = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-9, None)
    pred = (probs >= thr).astype(np.uint8)
    empty = pred.sum(axis=1) == 0
    if empty.any():
        best = np.argmax(probs[empty] / thr, axis=1)
        pred[np.flatnonzero(empty), best] = 1
    return pred


# Threshold methods and their cross-validated choice.

ThresholdFit = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

SHRINK_STRENGTH = 10.0  # val positives at which a class's own threshold gets half the weight
GLOBAL_GRID = np.round(np.arange(0.02, 0.99, 0.02), 2)


def rate_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold at which ``scores >= threshold`` holds for the nearest count to ``rate * N``.

    Lies halfway between the last score kept and the first left out (ties stay together).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(s) == 0:
        return DEFAULT_THRESHOLD
    k = round(float(rate) * len(s))
    if k <= 0:
        return float(np.nextafter(s[0], np.inf))
    if k >= len(s):
        return float(s[-1])
    return float((s[k - 1] + s[k]) / 2)


def class_ratio_thresholds(probs: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Per-class thresholds that make each class's predicted-positive rate its target ``rates``."""
    probs = np.asarray(probs)
    return np.array([rate_threshold(probs[:, k], rates[k]) for k in range(probs.shape[1])])


def global_threshold(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The single threshold of ``GLOBAL_GRID`` with the best macro F1 (ties: the one nearest 0.5)."""
    scores = [macro_f1(y_true, probs, float(t)) for t in GLOBAL_GRID]
    best = max(scores)
    ties = [t for t, s in zip(GLOBAL_GRID, scores, strict=True) if s == best]
    return float(min(ties, key=lambda t: abs(t - DEFAULT_THRESHOLD)))


def per_class_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each class's F1-optimal threshold (0.5 for a class without positives)."""
    return np.array([best_threshold(y_true[:, k], probs[:, k]) for k in range(probs.shape[1])])


def shrunk_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    strength: float = SHRINK_STRENGTH,
    target: np.ndarray | float | None = None,
) -> np.ndarray:
    """Per-class thresholds shrunk toward ``target`` (default: the global threshold) by each
    class's count of val positives ``n``: weight ``n / (n + strength)`` on the class's own."""
    n_pos = np.asarray(y_true).sum(axis=0).astype(np.float64)
    weight = n_pos / (n_pos + strength)
    if target is None:
        target = global_threshold(y_true, probs)
    return weight * per_class_thresholds(y_true, probs) + (1 - weight) * np.asarray(target)


_METHODS: dict[str, ThresholdFit] = {
    "fixed_0.5": lambda y, p, r: np.full(p.shape[1], DEFAULT_THRESHOLD),
    "global": lambda y, p, r: np.full(p.shape[1], global_threshold(y, p)),
    "class_ratio": lambda y, p, r: class_ratio_thresholds(p, r),
    "shrunk": lambda y, p, r: shrunk_thresholds(y, p),
    "shrunk_ratio": lambda y, p, r: shrunk_thresholds(y, p, target=class_ratio_thresholds(p, r)),
    "per_class": lambda y, p, r: per_class_thresholds(y, p),
}


def list_threshold_methods() -> list[str]:
    """Method names, simplest first (the order ties are broken in)."""
    return list(_METHODS)


def fit_thresholds(
    method: str, y_true: np.ndarray, probs: np.ndarray, train_rates: np.ndarray
) -> np.ndarray:
    """Thresholds of ``method`` fitted on (y_true, probs).

    Raises:
        ValueError: unknown method (the valid ones are listed) or mismatched shapes.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown threshold method {method!r}; valid: {list_threshold_methods()}")
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if y_true.shape != probs.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and probs {probs.shape} must be one (N, K) shape")
    return np.asarray(_METHODS[method](y_true, probs, np.asarray(train_rates)), dtype=np.float64)


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def cross_validated_scores(
    y_true: np.ndarray,
    probs: np.ndarray,
    train_rates: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, float]:
    """Each method's macro F1 on val's out-of-fold predictions (fit on the other folds), averaged
    over ``repeats`` different fold splits (a small val split makes one split's score noisy)."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    k = max(2, min(folds, len(y_true)))
    scores = dict.fromkeys(_METHODS, 0.0)
    for repeat in range(repeats):
        parts = _folds(len(y_true), k, seed + repeat)
        for method in _METHODS:
            pred = np.zeros_like(y_true, dtype=np.uint8)
            for part in parts:
                rest = np.setdiff1d(np.arange(len(y_true)), part)
                thr = fit_thresholds(method, y_true[rest], probs[rest], train_rates)
                pred[part] = probs[part] >= thr
            scores[method] += float(per_class_f1(y_true, pred.astype(np.float64), 0.5).mean())
    return {m: v / repeats for m, v in scores.items()}


def choose_method(
    y_true: np.ndarray, probs: np.ndarray, train_rates: np.ndarray, folds: int = 5, seed: int = 0
) -> tuple[str, dict[str, float]]:
    """The method with the best cross-validated val macro F1 (ties: the simpler), and all scores."""
    scores = cross_validated_scores(y_true, probs, train_rates, folds, seed)
    best = max(scores.values())
    return next(m for m in _METHODS if scores[m] == best), scores
