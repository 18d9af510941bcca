"""Per-class thresholds maximise each class's F1 where fitted, and are applied elsewhere."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa_tune.scoring.metrics import per_class_f1
from hpa_tune.scoring.thresholds import ClassThresholds, at_least_one_label, best_threshold


def _brute_force_best_f1(y, s):
    candidates = np.r_[np.unique(s), 1.01]
    return max(f1_score(y, s >= t, zero_division=0) for t in candidates)


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_reaches_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(200) < 0.15).astype(int)
    s = np.round(np.clip(0.3 * y + rng.normal(0.3, 0.2, 200), 0, 1), 2)  # ties on purpose
    t = best_threshold(y, s)
    assert f1_score(y, s >= t, zero_division=0) == pytest.approx(_brute_force_best_f1(y, s))


def test_threshold_lies_between_the_cut_scores():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.7, 0.3, 0.1])
    assert best_threshold(y, s) == pytest.approx(0.5)


def test_class_without_positives_keeps_the_default():
    assert best_threshold(np.zeros(5), np.linspace(0, 1, 5), default=0.5) == 0.5


def test_fitted_thresholds_never_lower_f1_on_the_fitting_data():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 28)) < 0.08).astype(int)
    probs = np.clip(0.25 * y + rng.uniform(0, 0.5, (300, 28)), 0, 1)
    tuned = ClassThresholds().fit(y, probs)
    assert np.all(per_class_f1(y, probs, tuned.thresholds_) >= per_class_f1(y, probs) - 1e-12)
    assert tuned.apply(probs).shape == probs.shape


def test_thresholds_round_trip_and_refuse_apply_before_fit():
    with pytest.raises(RuntimeError, match="before fit"):
        ClassThresholds().apply(np.zeros((1, 2)))
    t = ClassThresholds.from_list([0.2, 0.7])
    np.testing.assert_array_equal(t.apply(np.array([[0.3, 0.3]])), [[1, 0]])


def test_every_row_gets_at_least_one_label():
    probs = np.array([[0.1, 0.05, 0.2], [0.9, 0.1, 0.1]])
    pred = at_least_one_label(probs, np.array([0.5, 0.1, 0.5]))
    assert pred.sum(axis=1).min() == 1
    assert pred[0].tolist() == [0, 1, 0]  # 0.05/0.1 is the highest prob/threshold ratio
    assert pred[1].tolist() == [1, 1, 0]
