"""Splits are stratified over every label, disjoint and reproducible from the seed."""

import numpy as np
import pytest

from hpa_tune.classes import kaggle_label_sets
from hpa_tune.data.splits import HOLDOUT, TRAIN, VAL, assign_splits, class_counts


def _real_labels(n, seed=0):
    sets = kaggle_label_sets()
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 28), dtype=np.uint8)
    for i, j in enumerate(rng.choice(len(sets), n, replace=False)):
        y[i, list(sets[j])] = 1
    return y


def test_split_sizes_follow_the_fractions():
    y = _real_labels(3000)
    splits = assign_splits(y, 0.15, 0.15, seed=0)
    counts = {s: int((splits == s).sum()) for s in (TRAIN, VAL, HOLDOUT)}
    # Iterative stratification trades exact sizes for label balance: within 1% of the target.
    assert abs(counts[HOLDOUT] - 450) <= 30
    assert abs(counts[VAL] - 450) <= 30
    assert sum(counts.values()) == 3000


def test_every_frequent_class_keeps_its_share_in_every_split():
    y = _real_labels(3000)
    splits = assign_splits(y, 0.15, 0.15, seed=0)
    for name in (TRAIN, VAL, HOLDOUT):
        share = y[splits == name].mean(axis=0)
        frequent = y.mean(axis=0) > 0.05
        np.testing.assert_allclose(share[frequent], y.mean(axis=0)[frequent], atol=0.02)


def test_same_seed_same_splits_other_seed_other_splits():
    y = _real_labels(800)
    a = assign_splits(y, 0.2, 0.1, seed=7)
    assert (a == assign_splits(y, 0.2, 0.1, seed=7)).all()
    assert (a != assign_splits(y, 0.2, 0.1, seed=8)).any()


@pytest.mark.parametrize("val,holdout", [(-0.1, 0.1), (0.5, 0.5), (0.7, 0.4)])
def test_bad_fractions_are_rejected(val, holdout):
    with pytest.raises(ValueError, match="fraction"):
        assign_splits(np.zeros((10, 28)), val, holdout, seed=0)


def test_class_counts_per_split():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    splits = np.array([TRAIN, TRAIN, VAL], dtype=object)
    assert class_counts(y, splits) == {TRAIN: [2, 1], VAL: [0, 1]}
