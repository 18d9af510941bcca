"""Multi-label F1 over the whole set, from accumulated counts — never a mean of per-batch scores.

The study behind hpa-tune found that averaging F1 over batches misstates the score, so every
reported ``*_macro_f1`` is computed from true/false positive counts accumulated over all samples.
``batch_averaged_macro_f1`` exists only to show the difference.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DEFAULT_THRESHOLD = 0.5
# Candidate cuts of the single global threshold that ``val_macro_f1_global`` is scored at.
GLOBAL_THRESHOLD_GRID = tuple(round(0.025 * i, 3) for i in range(1, 40))


def confusion_counts(
    y_true: np.ndarray, y_pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class true positives, false positives and false negatives.

    Args:
        y_true: (N, K) array of 0/1 truth.
        y_pred: (N, K) array of 0/1 predictions.

    Returns:
        Three int64 arrays of length K: tp, fp, fn.
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be the same (N, K) shape")
    tp = np.sum(t & p, axis=0, dtype=np.int64)
    fp = np.sum(~t & p, axis=0, dtype=np.int64)
    fn = np.sum(t & ~p, axis=0, dtype=np.int64)
    return np.asarray(tp), np.asarray(fp), np.asarray(fn)


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0 (sklearn's zero_division=0)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def per_class_f1(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Whole-set F1 of each class, predicting positive where ``probs >= threshold``."""
    y_pred = np.asarray(probs) >= np.asarray(thresholds)
    return f1_from_counts(*confusion_counts(y_true, y_pred))


def macro_f1(
    y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray | float = DEFAULT_THRESHOLD
) -> float:
    """Macro F1 over all classes and all samples; equals sklearn ``f1_score(average="macro", zero_division=0)``."""
    return float(per_class_f1(y_true, probs, thresholds).mean())


def best_global_macro_f1(
    y_true: np.ndarray, probs: np.ndarray, grid: tuple[float, ...] = GLOBAL_THRESHOLD_GRID
) -> tuple[float, float]:
    """Macro F1 at the one threshold of ``grid``, shared by all classes, that maximises it.

    A ranking score for trials that does not depend on where a loss weighting puts the
    probabilities (ln weights lower them, full weights raise them) and, with one degree of
    freedom, overfits a small validation split little. Ties go to the threshold nearest 0.5.

    Returns:
        (macro F1, threshold).
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    best = (-1.0, DEFAULT_THRESHOLD)
    for t in sorted(grid, key=lambda g: abs(g - DEFAULT_THRESHOLD)):
        score = macro_f1(y_true, probs, t)
        if score > best[0]:
            best = (score, float(t))
    return best


def batch_averaged_macro_f1(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float = DEFAULT_THRESHOLD
) -> float:
    """Mean over batches of each batch's macro F1 — the biased estimate, reported for comparison only."""
    scores = [macro_f1(y, p, threshold) for y, p in batches]
    return float(np.mean(scores)) if scores else 0.0


class F1Accumulator:
    """Accumulates confusion counts batch by batch (torchmetrics-style ``update``/``compute``)."""

    def __init__(self, num_classes: int, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.tp = np.zeros(num_classes, dtype=np.int64)
        self.fp = np.zeros(num_classes, dtype=np.int64)
        self.fn = np.zeros(num_classes, dtype=np.int64)
        self._batch_scores: list[float] = []

    def update(self, y_true: np.ndarray, probs: np.ndarray) -> None:
        """Add one batch of truth and probabilities."""
        tp, fp, fn = confusion_counts(y_true, np.asarray(probs) >= self.threshold)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self._batch_scores.append(float(f1_from_counts(tp, fp, fn).mean()))

    def per_class(self) -> np.ndarray:
        """Whole-set per-class F1 so far."""
        return f1_from_counts(self.tp, self.fp, self.fn)

    def compute(self) -> float:
        """Whole-set macro F1 so far."""
        return float(self.per_class().mean())

    def batch_averaged(self) -> float:
        """Mean of the per-batch macro F1 scores so far (for comparison only)."""
        return float(np.mean(self._batch_scores)) if self._batch_scores else 0.0
