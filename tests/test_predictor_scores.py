"""Candidate predictors are scored on the holdout under every method; choices come from val."""

import numpy as np
import pytest

from hpa_tune.scoring.metrics import macro_f1
from hpa_tune.scoring.predictor_scores import predictor_table, score_predictor, submission_labels
from hpa_tune.scoring.thresholds import at_least_one_label, list_threshold_methods


def _split(seed, n):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 28)) < np.linspace(0.02, 0.4, 28)).astype(np.uint8)
    return y, np.clip(0.3 * y + rng.normal(0.3, 0.2, y.shape), 0, 1)


def test_the_threshold_choice_never_reads_holdout_labels():
    val_y, val_p = _split(0, 200)
    hold_y, hold_p = _split(1, 200)
    rates = val_y.mean(axis=0)
    first = score_predictor(val_y, val_p, hold_y, hold_p, rates)
    shuffled = np.random.default_rng(7).permutation(hold_y)
    second = score_predictor(val_y, val_p, shuffled, hold_p, rates)
    assert second.method == first.method
    np.testing.assert_array_equal(second.thresholds, first.thresholds)
    assert second.val_cv_macro_f1 == first.val_cv_macro_f1
    assert second.holdout_macro_f1 != first.holdout_macro_f1  # the holdout is scored, nothing more


def test_every_method_is_scored_on_the_holdout_and_the_chosen_one_is_best_on_val_cv():
    val_y, val_p = _split(2, 150)
    hold_y, hold_p = _split(3, 150)
    scores = score_predictor(val_y, val_p, hold_y, hold_p, val_y.mean(axis=0))
    assert set(scores.holdout_macro_f1) == set(list_threshold_methods())
    assert scores.val_cv_macro_f1[scores.method] == max(scores.val_cv_macro_f1.values())
    summary = scores.summary()
    assert summary["holdout_macro_f1_tuned"] == scores.holdout_macro_f1[scores.method]


def test_predictor_table_has_a_row_per_predictor_and_marks_the_choices():
    val_y, val_p = _split(4, 100)
    hold_y, hold_p = _split(5, 100)
    s = score_predictor(val_y, val_p, hold_y, hold_p, val_y.mean(axis=0)).summary()
    lines = predictor_table({"single": s, "ensemble_tta": s}, chosen="ensemble_tta")
    assert len(lines) == 3 and all(m in lines[0] for m in list_threshold_methods())
    assert lines[2].startswith("> ensemble_tta") and lines[1].startswith("  single")
    assert lines[1].count("*") == 1


def test_the_tuned_holdout_figures_score_the_labels_predict_writes():
    val_y, val_p = _split(6, 200)
    hold_y, hold_p = _split(7, 200)
    hold_p = hold_p * 0.5  # a shifted holdout: many rows have no class above its threshold
    scores = score_predictor(val_y, val_p, hold_y, hold_p, val_y.mean(axis=0))
    written = at_least_one_label(hold_p, scores.thresholds)  # what `hpa-tune predict` applies
    plain = (hold_p >= scores.thresholds).astype(np.uint8)
    assert (plain.sum(axis=1) == 0).any() and not (written.sum(axis=1) == 0).any()
    summary = scores.summary()
    assert summary["holdout_macro_f1_tuned"] == pytest.approx(macro_f1(hold_y, written))
    assert summary["holdout_macro_f1_tuned"] != pytest.approx(macro_f1(hold_y, plain))
    np.testing.assert_array_equal(submission_labels(hold_p, scores.thresholds), written)
