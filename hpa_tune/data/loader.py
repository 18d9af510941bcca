"""Loading prepared shards into memory and serving ready torch batches.

A split is read once into contiguous uint8 arrays (checksums verified); batches are gathered by
index, sliced to the requested channels, moved to the device as uint8 and only then converted and
normalised — no per-sample decoding, no Python loop over samples.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from hpa_tune.classes import CHANNEL_SETS, CHANNELS, NUM_CLASSES
from hpa_tune.data.shards import ShardInfo, ShardManifest
from hpa_tune.errors import HpaTuneError


@dataclass(frozen=True)
class SplitArrays:
    """One split at one size: images (N, C, S, S) uint8 in CHANNELS order, labels (N, K) uint8."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _read_shard(
    root: Path, shard: ShardInfo, verify: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    path = root / shard.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HpaTuneError(f"{path}: shard listed in the manifest is missing") from None
    if verify and hashlib.sha256(data).hexdigest() != shard.sha256:
        raise HpaTuneError(
            f"{path}: sha256 does not match the manifest (corrupt or modified shard)"
        )
    table = pq.read_table(io.BytesIO(data))
    image_col = table.column("image").combine_chunks()
    row_bytes = image_col.type.byte_width
    images = np.frombuffer(
        image_col.buffers()[1],
        dtype=np.uint8,
        count=len(image_col) * row_bytes,
        offset=image_col.offset * row_bytes,
    )
    labels_col = table.column("labels").combine_chunks()
    labels = labels_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, NUM_CLASSES)
    return table.column("id").to_pylist(), images, labels


def load_split(root: Path, split: str, size: int, verify: bool = True) -> SplitArrays:
    """Read every shard of ``split`` at ``size`` into one SplitArrays.

    Raises:
        HpaTuneError: the size or split was not prepared, or a shard is missing or corrupt.
    """
    root = Path(root)
    manifest = ShardManifest.load(root)
    if size not in manifest.sizes:
        raise HpaTuneError(
            f"{root}: image size {size} was not prepared; prepared sizes: {manifest.sizes}"
        )
    shards = manifest.shards_for(split, size)
    n = sum(s.rows for s in shards)
    if split not in manifest.splits:
        raise HpaTuneError(
            f"{root}: no split {split!r}; prepared splits: {sorted(manifest.splits)}"
        )
    images = np.empty((n, len(CHANNELS), size, size), dtype=np.uint8)
    labels = np.empty((n, NUM_CLASSES), dtype=np.uint8)
    ids: list[str] = []
    at = 0
    for shard in shards:
        shard_ids, flat, shard_labels = _read_shard(root, shard, verify)
        k = len(shard_ids)
        images[at : at + k] = flat.reshape(k, len(CHANNELS), size, size)
        labels[at : at + k] = shard_labels
        ids.extend(shard_ids)
        at += k
    return SplitArrays(np.asarray(ids, dtype=object), images, labels)


def channel_indices(channels: str) -> list[int]:
    """Indices into CHANNELS for a channel set name (``rgb`` or ``rgby``)."""
    if channels not in CHANNEL_SETS:
        raise ValueError(f"unknown channels {channels!r}; expected one of {sorted(CHANNEL_SETS)}")
    return [CHANNELS.index(c) for c in CHANNEL_SETS[channels]]


def _dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one random flip/90° rotation (of the 8 symmetries of a square) per sample."""
    codes = torch.randint(0, 8, (x.shape[0],), generator=generator)
    out = x.clone()
    for code in range(1, 8):
        idx = torch.nonzero(codes == code).flatten().to(x.device)
        if idx.numel() == 0:
            continue
        part = x.index_select(0, idx)
        if code >= 4:
            part = part.flip(-1)
        out[idx] = torch.rot90(part, code % 4, dims=(-2, -1))
    return out


class BatchLoader:
    """Iterates a SplitArrays as (float images, float labels) batches on a device.

    Args:
        data: the split in memory.
        batch_size: samples per batch (the last batch may be smaller).
        channels: ``rgb`` (the study's input) or ``rgby``.
        mean, std: per-channel normalisation in 0..1 units, for all of CHANNELS.
        shuffle: a new permutation each epoch (see ``set_epoch``), reproducible from ``seed``.
        augment: random flips and 90° rotations (microscopy has no orientation).
        device: where batches are delivered.
    """

    def __init__(
        self,
        data: SplitArrays,
        batch_size: int,
        *,
        channels: str = "rgby",
        mean: list[float] | None = None,
        std: list[float] | None = None,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.device = torch.device(device)
        self.channel_idx = channel_indices(channels)
        # RGB and RGBY are leading channels of the stored order, so a slice (one copy) suffices.
        self._n_leading = (
            len(self.channel_idx) if self.channel_idx == list(range(len(self.channel_idx))) else 0
        )
        mean = mean if mean is not None else [0.5] * len(CHANNELS)
        std = std if std is not None else [0.25] * len(CHANNELS)
        shape = (1, len(self.channel_idx), 1, 1)
        self._mean = torch.tensor(
            [mean[i] * 255 for i in self.channel_idx], device=self.device
        ).view(shape)
        self._inv_std = torch.tensor(
            [1 / (std[i] * 255) for i in self.channel_idx], device=self.device
        ).view(shape)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle/augmentation stream of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        for start in range(0, n, self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            if self._n_leading:
                raw = self.data.images[idx, : self._n_leading]
            else:
                raw = self.data.images[idx][:, self.channel_idx]
            x = torch.from_numpy(raw).to(self.device, non_blocking=True)
            x = (x.float() - self._mean) * self._inv_std
            if self.augment:
                x = _dihedral(x, generator)
            y = torch.from_numpy(self.data.labels[idx]).to(self.device, non_blocking=True).float()
            yield x, y
