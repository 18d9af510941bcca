"""Threshold methods fit on val only; the choice between them is cross-validated within val."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa_tune.scoring.thresholds import (
    choose_method,
    class_ratio_thresholds,
    cross_validated_scores,
    fit_thresholds,
    global_threshold,
    list_threshold_methods,
    per_class_thresholds,
    rate_threshold,
    shrunk_thresholds,
)


def _val(seed=0, n=300, k=6):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < np.linspace(0.03, 0.4, k)).astype(np.uint8)
    probs = np.clip(0.35 * y + rng.normal(0.3, 0.18, (n, k)), 0, 1)
    return y, probs


@pytest.mark.parametrize("seed", range(5))
def test_class_ratio_thresholds_hit_the_target_rates_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    probs = rng.random((n, 28))
    rates = rng.random(28) * 0.5
    thr = class_ratio_thresholds(probs, rates)
    predicted_rate = (probs >= thr).mean(axis=0)
    np.testing.assert_allclose(predicted_rate, np.round(rates * n) / n, atol=1e-12)


def test_rate_threshold_edges_predict_nothing_or_everything():
    s = np.array([0.2, 0.9, 0.5])
    assert (s >= rate_threshold(s, 0.0)).sum() == 0
    assert (s >= rate_threshold(s, 1.0)).sum() == 3


def test_global_threshold_is_the_best_single_cut_for_macro_f1():
    y, p = _val()
    t = global_threshold(y, p)
    best = f1_score(y, p >= t, average="macro", zero_division=0)
    for other in (0.1, 0.3, 0.5, 0.7):
        assert best >= f1_score(y, p >= other, average="macro", zero_division=0) - 1e-12


def test_shrunk_thresholds_lie_between_per_class_and_global_and_follow_the_positive_count():
    y, p = _val()
    per_class, glob = per_class_thresholds(y, p), global_threshold(y, p)
    shrunk = shrunk_thresholds(y, p, strength=10)
    lo, hi = np.minimum(per_class, glob), np.maximum(per_class, glob)
    assert np.all((shrunk >= lo - 1e-12) & (shrunk <= hi + 1e-12))
    n_pos = y.sum(axis=0)
    weight = n_pos / (n_pos + 10)
    np.testing.assert_allclose(shrunk, weight * per_class + (1 - weight) * glob)
    # A class without val positives gets exactly the global threshold.
    y[:, 0] = 0
    assert shrunk_thresholds(y, p)[0] == pytest.approx(global_threshold(y, p))


def test_shrunk_ratio_pulls_a_class_without_val_positives_to_its_class_ratio_threshold():
    y, p = _val()
    y[:, 2] = 0
    rates = np.full(y.shape[1], 0.1)
    thr = fit_thresholds("shrunk_ratio", y, p, rates)
    assert thr[2] == pytest.approx(class_ratio_thresholds(p, rates)[2])
    n = y[:, 5].sum()
    expected = (n * per_class_thresholds(y, p)[5] + 10 * class_ratio_thresholds(p, rates)[5]) / (
        n + 10
    )
    assert thr[5] == pytest.approx(expected)


def test_unknown_method_is_named_with_the_valid_ones():
    y, p = _val()
    with pytest.raises(ValueError, match="per_class"):
        fit_thresholds("magic", y, p, y.mean(axis=0))


def test_class_ratio_never_reads_labels():
    y, p = _val()
    rates = y.mean(axis=0)
    shuffled = np.random.default_rng(1).permutation(y)
    np.testing.assert_array_equal(
        fit_thresholds("class_ratio", y, p, rates),
        fit_thresholds("class_ratio", shuffled, p, rates),
    )


def test_cross_validation_scores_every_method_on_out_of_fold_predictions():
    y, p = _val()
    scores = cross_validated_scores(y, p, y.mean(axis=0), folds=5)
    assert set(scores) == set(list_threshold_methods())
    assert all(0 <= s <= 1 for s in scores.values())
    # Out-of-fold: per-class thresholds score lower than when fitted and scored on all of val.
    in_sample = f1_score(y, p >= per_class_thresholds(y, p), average="macro", zero_division=0)
    assert scores["per_class"] < in_sample


def test_the_chosen_method_is_the_cross_validated_best_and_deterministic():
    y, p = _val(seed=3)
    method, scores = choose_method(y, p, y.mean(axis=0))
    assert scores[method] == max(scores.values())
    assert choose_method(y, p, y.mean(axis=0)) == (method, scores)
