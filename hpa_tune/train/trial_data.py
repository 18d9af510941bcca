"""What a trial trains on: a prepared set's splits at the trial's image sizes, mapped through this
node's shard cache (``data.node_cache``), with the train split's statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.errors import HpaTuneError, NotRetryableError


@dataclass(frozen=True)
class TrialData:
    """What a trial trains on: arrays per size and split (memory-mapped from this node's shard
    cache, see ``data.node_cache``), plus the train split's statistics."""

    arrays: dict[int, dict[str, SplitArrays]]
    channel_stats: dict[int, tuple[list[float], list[float]]]
    train_positives: np.ndarray
    n_train: int

    def split(self, size: int, name: str) -> SplitArrays:
        """Arrays of one split at one size (HpaTuneError when that size was not loaded)."""
        if size not in self.arrays:
            raise HpaTuneError(f"image_size {size} is not loaded; available: {sorted(self.arrays)}")
        return self.arrays[size][name]


def load_trial_data(
    data: str | Path, sizes: list[int], splits: tuple[str, ...] = (TRAIN, VAL)
) -> TrialData:
    """The given splits at the given sizes of a prepared set (local path, ``s3://``, ``gs://``),
    through this node's shard cache: decoded once per node, then mapped, never copied."""
    manifest = ShardManifest.load(data)
    missing = [s for s in sizes if s not in manifest.sizes]
    if missing:
        raise NotRetryableError(
            f"{data}: image size(s) {missing} not prepared; prepared: {manifest.sizes}"
        )
    arrays = {size: {name: cached_split(data, name, size) for name in splits} for size in sizes}
    return TrialData(
        arrays=arrays,
        channel_stats={size: manifest.stats_for(size) for size in sizes},
        train_positives=np.asarray(manifest.class_counts[TRAIN]),
        n_train=manifest.splits[TRAIN],
    )
