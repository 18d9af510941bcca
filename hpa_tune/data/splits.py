"""Multi-label stratified train / val / holdout splits (pure, reproducible from the seed)."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

TRAIN, VAL, HOLDOUT, TEST = "train", "val", "holdout", "test"
LABELLED_SPLITS = (TRAIN, VAL, HOLDOUT)


def _stratified_take(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask selecting about ``fraction`` of rows, stratified over every label."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0 or len(labels) == 0:
        return mask
    n_take = max(1, round(fraction * len(labels)))
    if n_take >= len(labels):
        mask[:] = True
        return mask
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_take, random_state=seed)
    _, taken = next(splitter.split(np.zeros(len(labels)), labels))
    mask[taken] = True
    return mask


def assign_splits(
    labels: np.ndarray, val_fraction: float, holdout_fraction: float, seed: int
) -> np.ndarray:
    """Assign each labelled sample to ``train``, ``val`` or ``holdout`` by iterative stratification.

    The holdout is drawn first from all samples, then val from the rest, each stratified so every
    class keeps about its overall frequency in each split.

    Args:
        labels: (N, K) 0/1 multi-hot labels.
        val_fraction: share of all samples for validation (checkpoint selection, thresholds).
        holdout_fraction: share of all samples never used for training, selection or thresholds.
        seed: the same seed and labels always give the same assignment.

    Returns:
        (N,) array of split names.

    Raises:
        ValueError: when the fractions are negative or leave nothing for training.
    """
    if val_fraction < 0 or holdout_fraction < 0 or val_fraction + holdout_fraction >= 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) and holdout_fraction ({holdout_fraction}) must be "
            "non-negative and sum to less than 1"
        )
    labels = np.asarray(labels)
    splits = np.full(len(labels), TRAIN, dtype=object)
    holdout = _stratified_take(labels, holdout_fraction, seed)
    splits[holdout] = HOLDOUT
    rest = np.flatnonzero(~holdout)
    if len(rest) and val_fraction > 0:
        val_share = val_fraction / (1 - holdout_fraction)
        val = _stratified_take(labels[rest], val_share, seed + 1)
        splits[rest[val]] = VAL
    return splits


def class_counts(labels: np.ndarray, splits: np.ndarray) -> dict[str, list[int]]:
    """Positives per class in each split present in ``splits``."""
    labels = np.asarray(labels)
    return {
        name: [int(c) for c in labels[splits == name].sum(axis=0)]
        for name in (TRAIN, VAL, HOLDOUT, TEST)
        if np.any(splits == name)
    }
