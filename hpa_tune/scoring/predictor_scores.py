"""Scores of the refit's candidate predictors (single model, equal or val-weighted ensemble, with
or without TTA) under every threshold method, and the threshold method each predictor uses.

Pure functions over arrays. The threshold method is chosen from val alone (cross-validated
within val, see ``threshold_methods.choose_method``); holdout labels are only ever scored, so
shuffling them cannot change a threshold (a test checks exactly that).

Every figure at fitted thresholds scores ``DECISION_RULE``, the rule ``predict`` writes into a
submission (``submission_labels``): the thresholds, then a row with no label gets its most
confident class. Figures at 0.5 and the val cross-validation that chooses the method use plain
thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpa_tune.scoring.metrics import DEFAULT_THRESHOLD, per_class_f1
from hpa_tune.scoring.thresholds import (
    at_least_one_label,
    choose_method,
    fit_thresholds,
    list_threshold_methods,
)

DECISION_RULE = "at_least_one_label"
DECISION_RULE_RECORD = {  # metrics.json's "decision_rule"
    "name": DECISION_RULE,
    "what": "as predict writes: classes at or above their thresholds; a row with none gets its "
    "class of highest probability / threshold",
    "scored_in": [
        "holdout_macro_f1_tuned",
        "val_macro_f1_tuned",
        "per_class holdout_f1 and val_f1_tuned",
        "predictors' holdout_macro_f1",
    ],
    "plain_thresholds_in": ["@0.5 figures", "predictors' val_cv_macro_f1"],
}


def submission_labels(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The 0/1 labels ``predict`` writes for ``probs`` under ``thresholds`` (``DECISION_RULE``)."""
    return at_least_one_label(probs, thresholds)


def _rule_f1(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per-class F1 of ``submission_labels``."""
    return per_class_f1(targets, submission_labels(probs, thresholds), 0.5)


SINGLE, SINGLE_TTA, ENSEMBLE, ENSEMBLE_TTA = "single", "single_tta", "ensemble", "ensemble_tta"
# The members weighted as selected on val (``ensemble_selection``); "ensemble" is the equal mean.
WEIGHTED, WEIGHTED_TTA = "weighted", "weighted_tta"


def predictor_name(ensemble: bool, tta: bool) -> str:
    """The name of the predictor a refit produces: the winner alone, or the weighted ensemble
    that selection on val chose."""
    return (WEIGHTED if ensemble else SINGLE) + ("_tta" if tta else "")


@dataclass(frozen=True)
class PredictorScores:
    """One predictor: the chosen threshold method and its thresholds; every method's scores."""

    method: str
    thresholds: np.ndarray
    val_cv_macro_f1: dict[str, float]
    holdout_macro_f1: dict[str, float]
    holdout_class_f1: np.ndarray  # per class, predict's rule at the chosen thresholds
    holdout_class_f1_05: np.ndarray  # per class, at 0.5
    val_class_f1: np.ndarray  # per class, predict's rule (optimistic: thresholds fitted there)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the chosen method, val CV and holdout macro F1 of every method."""
        return {
            "threshold_method": self.method,
            "holdout_macro_f1_tuned": float(self.holdout_class_f1.mean()),
            "holdout_macro_f1@0.5": float(self.holdout_class_f1_05.mean()),
            "val_cv_macro_f1": self.val_cv_macro_f1,
            "holdout_macro_f1": self.holdout_macro_f1,
            **self.extra,
        }


def score_predictor(
    val_targets: np.ndarray,
    val_probs: np.ndarray,
    holdout_targets: np.ndarray,
    holdout_probs: np.ndarray,
    train_rates: np.ndarray,
    seed: int = 0,
) -> PredictorScores:
    """Choose a threshold method on val, fit it on all of val, and score the holdout with the
    labels ``predict`` would write (``submission_labels``).

    Args:
        val_targets, val_probs: (N_val, K) val labels and the predictor's probabilities.
        holdout_targets, holdout_probs: (N_holdout, K), scored only.
        train_rates: (K,) positive frequency of each class in the train split.
        seed: the val fold split of the cross-validation.
    """
    method, cv = choose_method(val_targets, val_probs, train_rates, seed=seed)
    fitted = {
        m: fit_thresholds(m, val_targets, val_probs, train_rates) for m in list_threshold_methods()
    }
    holdout = {
        m: float(_rule_f1(holdout_targets, holdout_probs, thr).mean()) for m, thr in fitted.items()
    }
    return PredictorScores(
        method=method,
        thresholds=fitted[method],
        val_cv_macro_f1=cv,
        holdout_macro_f1=holdout,
        holdout_class_f1=_rule_f1(holdout_targets, holdout_probs, fitted[method]),
        holdout_class_f1_05=per_class_f1(holdout_targets, holdout_probs, DEFAULT_THRESHOLD),
        val_class_f1=_rule_f1(val_targets, val_probs, fitted[method]),
    )


def predictor_table(predictors: dict[str, dict[str, Any]], chosen: str) -> list[str]:
    """Lines of a text table: holdout macro F1 of every predictor (rows) under every threshold
    method (columns); ``*`` marks each predictor's method chosen on val, ``>`` the final one."""
    methods = list_threshold_methods()
    width = max(len(m) for m in methods) + 2
    lines = ["holdout macro F1".ljust(16) + "".join(m.rjust(width) for m in methods)]
    for name, summary in predictors.items():
        cells = [
            (
                f"{summary['holdout_macro_f1'][m]:.4f}"
                + ("*" if m == summary["threshold_method"] else " ")
            )
            for m in methods
        ]
        mark = ">" if name == chosen else " "
        lines.append(f"{mark} {name}".ljust(16) + "".join(c.rjust(width) for c in cells))
    return lines
