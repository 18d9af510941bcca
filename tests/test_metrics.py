"""Whole-set macro F1 is exactly scikit-learn's, and differs from the per-batch average."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa_tune.scoring.metrics import (
    GLOBAL_THRESHOLD_GRID,
    F1Accumulator,
    batch_averaged_macro_f1,
    best_global_macro_f1,
    macro_f1,
    per_class_f1,
)


@pytest.mark.parametrize("seed", range(8))
def test_macro_f1_matches_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, k = rng.integers(1, 300), 28
    prevalence = rng.uniform(0.0, 0.3, size=k)
    y = (rng.random((n, k)) < prevalence).astype(int)
    probs = np.clip(y * rng.uniform(0.2, 1, (n, k)) + rng.uniform(0, 0.6, (n, k)), 0, 1)
    expected = f1_score(y, probs >= 0.5, average="macro", zero_division=0)
    assert macro_f1(y, probs) == pytest.approx(expected, abs=1e-12)


def test_per_class_f1_matches_sklearn_including_absent_classes():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.7, 0.0]])
    expected = f1_score(y, probs >= 0.5, average=None, zero_division=0)
    np.testing.assert_allclose(per_class_f1(y, probs), expected)
    assert per_class_f1(y, probs)[2] == 0.0  # no positives, none predicted: zero_division=0


def test_accumulator_over_batches_equals_whole_set_score():
    rng = np.random.default_rng(0)
    y = (rng.random((257, 28)) < 0.1).astype(int)
    probs = rng.random((257, 28))
    acc = F1Accumulator(28)
    for start in range(0, 257, 32):
        acc.update(y[start : start + 32], probs[start : start + 32])
    assert acc.compute() == pytest.approx(macro_f1(y, probs))
    np.testing.assert_allclose(acc.per_class(), per_class_f1(y, probs))


def test_batch_averaged_f1_is_not_the_whole_set_f1():
    # A rare class found in one batch only: batches without it score it 0 and drag the mean down.
    y = np.zeros((64, 2), dtype=int)
    y[:, 0] = 1
    y[5, 1] = 1
    probs = y.astype(float)
    batches = [(y[i : i + 16], probs[i : i + 16]) for i in range(0, 64, 16)]
    assert macro_f1(y, probs) == 1.0
    assert batch_averaged_macro_f1(batches) == pytest.approx((1.0 + 0.5 * 3) / 4)
    acc = F1Accumulator(2)
    for yb, pb in batches:
        acc.update(yb, pb)
    assert acc.batch_averaged() == pytest.approx(batch_averaged_macro_f1(batches))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same"):
        macro_f1(np.zeros((3, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("seed", range(4))
def test_global_threshold_macro_f1_is_sklearns_best_over_the_grid(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((150, 28)) < rng.uniform(0.01, 0.3, 28)).astype(int)
    probs = np.clip(y * rng.uniform(0, 0.5, y.shape) + rng.uniform(0, 0.5, y.shape), 0, 1)
    expected = max(
        f1_score(y, probs >= t, average="macro", zero_division=0) for t in GLOBAL_THRESHOLD_GRID
    )
    score, threshold = best_global_macro_f1(y, probs)
    assert score == pytest.approx(expected, abs=1e-12)
    assert macro_f1(y, probs, threshold) == pytest.approx(score, abs=1e-12)


def test_global_threshold_macro_f1_does_not_care_where_the_loss_puts_probabilities():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 28)) < 0.1).astype(int)
    probs = np.clip(y * 0.4 + rng.uniform(0, 0.6, y.shape), 0, 1)
    grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
    low_score, low_t = best_global_macro_f1(y, probs / 2, grid)  # e.g. ln weights lower them
    score, t = best_global_macro_f1(y, probs, grid)
    assert low_score == pytest.approx(score) and low_t == pytest.approx(t / 2)
    assert macro_f1(y, probs / 2) < score  # what ranking at 0.5 would have seen


def test_global_threshold_ties_go_to_the_threshold_nearest_one_half():
    y = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.9, 0.05], [0.05, 0.9]])
    assert best_global_macro_f1(y, probs, (0.1, 0.45, 0.7, 0.85)) == (1.0, 0.45)
