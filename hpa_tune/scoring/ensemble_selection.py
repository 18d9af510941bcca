"""Which refit members to average, and with what weights: greedy ensemble selection with
replacement (Caruana et al., 2004), cross-validated within val, falling back to the winner alone.

Averaging the winner with the next best distinct trials at equal weight can hurt: on held-out
data ``refit --top-k 3 --tta`` scored 0.407 macro F1 where the winner alone scored 0.444. Here
the members and their weights are chosen by what val says:

``greedy_counts``  starts from the winner (candidate 0: the search's best single candidate, and
                   the predictor any ensemble must beat, so "no additions" *is* the winner alone)
                   and repeatedly adds the candidate, repeats allowed, whose addition most
                   improves the score of the averaged probabilities; it stops when no addition
                   improves it or after ``rounds`` additions. Weights are counts / total.
``select_ensemble`` cross-validates that procedure within val (select on K-1 folds, predict the
                   held-out fold, score the pooled out-of-fold predictions, averaged over a few
                   fold splits) against the winner alone under the same protocol, and keeps the
                   ensemble only when it scores strictly higher; then the weights are selected
                   once more on all of val.

The score is a cheaper proxy of what the refit optimises on val (macro F1 after a threshold
method chosen by cross-validation, ``scoring.thresholds``): macro F1 at the best *global*
threshold (``metrics.best_global_macro_f1``, the search's ``val_macro_f1_global``). Running the
six-method choice inside every greedy step of every fold would cost hundreds of nested
cross-validations; the global threshold is one of those six methods, is invariant to where a
weighting puts the probabilities overall, and with one degree of freedom overfits a ~92-sample
val split little. In the cross-validation the threshold is fitted on the selection folds and
applied to the held-out fold, never scored on the data it was fitted on.

Pure numpy; ties always go to the lower candidate index, so a selection is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpa_tune.scoring.metrics import best_global_macro_f1, macro_f1

DEFAULT_ROUNDS = 10  # greedy additions after the winner: weights in steps of at least 1/11
DEFAULT_FOLDS = 5
DEFAULT_REPEATS = 3
SCORE_NAME = "macro F1 at the best global threshold"

Score = Callable[[np.ndarray, np.ndarray], float]


def global_threshold_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The selection's score: macro F1 at the best global threshold of ``probs``."""
    return best_global_macro_f1(y_true, probs)[0]


def weighted_mean(candidate_probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The candidates' probabilities averaged with ``weights`` (normalised to sum to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in candidate_probs])
    return np.tensordot(w / w.sum(), stacked, axes=1)


def greedy_counts(
    y_true: np.ndarray,
    candidate_probs: Sequence[np.ndarray],
    rounds: int = DEFAULT_ROUNDS,
    score: Score = global_threshold_score,
) -> np.ndarray:
    """How many times each candidate is picked by greedy selection with replacement.

    Args:
        y_true: (N, K) 0/1 truth.
        candidate_probs: C arrays (N, K); candidate 0 (the winner) is the starting ensemble.
        rounds: most additions after the winner.
        score: higher is better; ``score(y_true, averaged_probs)``.

    Returns:
        (C,) int counts, ``counts[0] >= 1``; ``[1, 0, ...]`` means the winner alone.
    """
    probs = [np.asarray(p, dtype=np.float64) for p in candidate_probs]
    counts = np.zeros(len(probs), dtype=np.int64)
    counts[0] = 1
    total = probs[0].copy()
    best = score(y_true, total)
    for _ in range(rounds):
        n = counts.sum() + 1
        gains = [score(y_true, (total + p) / n) for p in probs]
        pick = int(np.argmax(gains))  # first of the ties: the lower index
        if gains[pick] <= best:
            break
        counts[pick] += 1
        total += probs[pick]
        best = gains[pick]
    return counts


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def _out_of_fold(y_true: np.ndarray, probs: np.ndarray, rest: np.ndarray, part: np.ndarray):
    """0/1 predictions of fold ``part`` at the global threshold fitted on ``rest``."""
    threshold = best_global_macro_f1(y_true[rest], probs[rest])[1]
    return probs[part] >= threshold


def cross_validated_scores(
    y_true: np.ndarray,
    candidate_probs: Sequence[np.ndarray],
    rounds: int = DEFAULT_ROUNDS,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
) -> tuple[float, float]:
    """(greedy ensemble, winner alone): macro F1 of pooled out-of-fold predictions, the weights
    and both thresholds chosen on the other folds, averaged over ``repeats`` fold splits."""
    y_true = np.asarray(y_true)
    probs = [np.asarray(p, dtype=np.float64) for p in candidate_probs]
    n = len(y_true)
    k = max(2, min(folds, n))
    ensemble_total = winner_total = 0.0
    for repeat in range(repeats):
        ensemble_pred = np.zeros(y_true.shape, dtype=bool)
        winner_pred = np.zeros(y_true.shape, dtype=bool)
        for part in _folds(n, k, seed + repeat):
            rest = np.setdiff1d(np.arange(n), part)
            counts = greedy_counts(y_true[rest], [p[rest] for p in probs], rounds)
            mixed = weighted_mean(probs, counts)
            ensemble_pred[part] = _out_of_fold(y_true, mixed, rest, part)
            winner_pred[part] = _out_of_fold(y_true, probs[0], rest, part)
        ensemble_total += macro_f1(y_true, ensemble_pred.astype(np.float64))
        winner_total += macro_f1(y_true, winner_pred.astype(np.float64))
    return ensemble_total / repeats, winner_total / repeats


@dataclass(frozen=True)
class EnsembleChoice:
    """The selection's outcome: weights per candidate (``[1, 0, ...]``: the winner alone)."""

    weights: np.ndarray
    counts: np.ndarray
    cv_ensemble: float | None  # cross-validated val score of the greedy ensemble
    cv_winner: float | None  # ... and of the winner alone, same folds and thresholds
    reason: str

    @property
    def is_ensemble(self) -> bool:
        """True when more than the winner carries weight."""
        return bool(np.count_nonzero(self.weights) > 1)

    def record(self, names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready, with the candidates named (``metrics.json``'s ``ensemble_selection``)."""
        return {
            "chosen": "weighted_ensemble" if self.is_ensemble else "winner_alone",
            "reason": self.reason,
            "weights": {n: float(w) for n, w in zip(names, self.weights, strict=True)},
            "counts": {n: int(c) for n, c in zip(names, self.counts, strict=True)},
            "val_cv_macro_f1": {
                "weighted_ensemble": self.cv_ensemble,
                "winner_alone": self.cv_winner,
            },
            "score": f"{SCORE_NAME}, pooled out-of-fold within val",
        }


def _winner_alone(n: int, reason: str, cv: tuple[float | None, float | None]) -> EnsembleChoice:
    counts = np.zeros(n, dtype=np.int64)
    counts[0] = 1
    return EnsembleChoice(counts.astype(np.float64), counts, cv[0], cv[1], reason)


def select_ensemble(
    y_true: np.ndarray,
    candidate_probs: Sequence[np.ndarray],
    rounds: int = DEFAULT_ROUNDS,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
) -> EnsembleChoice:
    """The weighted ensemble greedy selection makes of all of val, if its cross-validated score
    beats the winner's alone; otherwise the winner alone.

    Args:
        y_true: (N, K) val labels.
        candidate_probs: C val probability arrays (N, K), the winner first.
        rounds, folds, repeats, seed: see ``greedy_counts`` and ``cross_validated_scores``.

    Raises:
        ValueError: no candidates, or a candidate whose shape is not ``y_true``'s.
    """
    y_true = np.asarray(y_true)
    if not candidate_probs:
        raise ValueError("ensemble selection needs at least one candidate")
    for i, p in enumerate(candidate_probs):
        if np.shape(p) != y_true.shape:
            raise ValueError(
                f"candidate {i}: probs {np.shape(p)} differ from labels {y_true.shape}"
            )
    if len(candidate_probs) == 1:
        return _winner_alone(1, "one candidate", (None, None))
    cv = cross_validated_scores(y_true, candidate_probs, rounds, folds, repeats, seed)
    scores = f"cross-validated val {SCORE_NAME} {cv[0]:.4f} vs winner alone {cv[1]:.4f}"
    if not cv[0] > cv[1]:
        return _winner_alone(len(candidate_probs), f"no ensemble beat the winner: {scores}", cv)
    counts = greedy_counts(y_true, candidate_probs, rounds)
    if counts.sum() == counts[0]:
        return _winner_alone(
            len(candidate_probs), f"selection on all of val added nothing ({scores})", cv
        )
    weights = counts / counts.sum()
    return EnsembleChoice(weights, counts, cv[0], cv[1], f"the ensemble beat the winner: {scores}")
