"""Loading prepared shards into memory and serving ready torch batches.

A split is read once into contiguous uint8 arrays (checksums verified); batches are gathered by
index and sliced to the requested channels as uint8, and only then converted and normalised — no
per-sample decoding. On a GPU the uint8 batch is copied over and converted there. On the CPU the
conversion runs a few samples at a time into recycled float buffers (``_FloatBuffers``), so the
uint8 -> float32 copy and the two in-place normalisation passes stay in the core's cache, and no
batch pays for fresh memory to be mapped and zeroed (see BENCHMARKS.md, section 1).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hpa_tune.classes import CHANNELS, NUM_CLASSES, channel_indices
from hpa_tune.data.shards import ShardInfo, ShardManifest
from hpa_tune.data.symmetry import dihedral_per_sample
from hpa_tune.errors import HpaTuneError

# Samples of float output converted per step on the CPU: about one L2 cache's worth (one sample
# at 224 px RGBY, 16 at 64 px).
_CHUNK_BYTES = 1 << 20
# Output buffers a loader keeps for reuse: a consumer holds one or two batches at a time.
_MAX_BUFFERS = 4
# torch's count of references to a storage; inductor's CUDA-graph trees recycle outputs by it too.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


@dataclass(frozen=True)
class SplitArrays:
    """One split at one size: images (N, C, S, S) uint8 in CHANNELS order, labels (N, K) uint8."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _read_shard(root: Path, shard: ShardInfo, verify: bool) -> pa.Table:
    path = root / shard.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HpaTuneError(f"{path}: shard listed in the manifest is missing") from None
    if verify and hashlib.sha256(data).hexdigest() != shard.sha256:
        raise HpaTuneError(
            f"{path}: sha256 does not match the manifest (corrupt or modified shard)"
        )
    return pq.read_table(pa.BufferReader(data))  # zero-copy, unlike io.BytesIO


def copy_images(column: pa.ChunkedArray, out: np.ndarray) -> None:
    """The fixed-width ``image`` column into ``out`` (rows, row bytes), one chunk (row group) at a
    time: each chunk is read in place, so the shard's images are copied once, not combined first."""
    at = 0
    for chunk in column.chunks:
        width = chunk.type.byte_width
        flat = np.frombuffer(
            chunk.buffers()[1],
            dtype=np.uint8,
            count=len(chunk) * width,
            offset=chunk.offset * width,
        )
        out[at : at + len(chunk)] = flat.reshape(len(chunk), width)
        at += len(chunk)


def fill_rows(
    table: pa.Table, images: np.ndarray, labels: np.ndarray, ids: list[str], at: int
) -> int:
    """Copy one shard's rows into ``images``/``labels`` from row ``at`` and append its Ids;
    returns the next free row."""
    rows = slice(at, at + table.num_rows)
    copy_images(table.column("image"), images[rows].reshape(table.num_rows, -1))
    flat_labels = table.column("labels").combine_chunks().flatten()
    labels[rows] = flat_labels.to_numpy(zero_copy_only=False).reshape(-1, NUM_CLASSES)
    ids.extend(table.column("id").to_pylist())
    return at + table.num_rows


def load_split(root: Path, split: str, size: int, verify: bool = True) -> SplitArrays:
    """Read every shard of ``split`` at ``size`` into one SplitArrays.

    Raises:
        HpaTuneError: the size or split was not prepared, or a shard is missing or corrupt.
    """
    root = Path(root)
    manifest = ShardManifest.load(root)
    manifest.check_prepared(root, split, size)
    shards = manifest.shards_for(split, size)
    n = sum(s.rows for s in shards)
    images = np.empty((n, len(CHANNELS), size, size), dtype=np.uint8)
    labels = np.empty((n, NUM_CLASSES), dtype=np.uint8)
    ids: list[str] = []
    at = 0
    for shard in shards:
        table = _read_shard(root, shard, verify)
        at = fill_rows(table, images, labels, ids, at)
    return SplitArrays(np.asarray(ids, dtype=object), images, labels)


class _FloatBuffers:
    """Float32 CPU batch buffers of one shape, each reused once nothing outside refers to it.

    A buffer goes out as a new view. Whatever the consumer keeps of a batch — the tensor, a slice,
    a NumPy array of it, a tensor autograd saved for backward — holds a reference to the buffer's
    storage, so its use count stays above the count it had when only this pool held it, and the
    buffer is not handed out again until those are gone. (Keeping only ``x.untyped_storage()``
    is not seen: copy a batch to keep it that way.) Without torch's use-count function every batch
    gets new memory. New memory comes from NumPy, which asks Linux for transparent huge pages.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self._pool: list[tuple[torch.Tensor, int, int]] = []  # buffer, storage, idle use count
        self._lock = threading.Lock()  # a buffer is checked and its view made in one step

    def take(self, rows: int) -> torch.Tensor:
        """A float32 tensor of ``rows`` x ``shape[1:]`` that no earlier batch still uses."""
        with self._lock:
            if _storage_use_count is not None:
                for buf, storage, idle in self._pool:
                    if _storage_use_count(storage) == idle:
                        return buf[:rows]
            buf = torch.from_numpy(np.empty(self.shape, dtype=np.float32))
            if _storage_use_count is not None and len(self._pool) < _MAX_BUFFERS:
                storage = buf.untyped_storage()._cdata
                self._pool.append((buf, storage, _storage_use_count(storage)))
            return buf[:rows]


def samples_served(n: int, batch_size: int, drop_single_last: bool) -> int:
    """How many of ``n`` samples an epoch serves: all, less a last batch of one when asked
    (BatchNorm cannot normalise a single sample)."""
    if drop_single_last and n > 1 and n % batch_size == 1:
        return n - 1
    return n


class BatchLoader:
    """Iterates a SplitArrays as (float images, float labels) batches on a device.

    Every batch is a tensor of its own while anything refers to it; on the CPU its memory is
    reused for a later batch once nothing does (see ``_FloatBuffers``).

    Args:
        data: the split in memory.
        batch_size: samples per batch (the last batch may be smaller).
        channels: ``rgb`` (the study's input) or ``rgby``.
        mean, std: per-channel normalisation in 0..1 units, for all of CHANNELS.
        shuffle: a new permutation each epoch (see ``set_epoch``), reproducible from ``seed``.
        augment: random flips and 90° rotations (microscopy has no orientation).
        device: where batches are delivered.
        drop_single_last: leave out a last batch of one sample (training: BatchNorm cannot
            normalise a single sample on a 1x1 map).
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
        drop_single_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self._n_used = max(samples_served(len(data), batch_size, drop_single_last), 1)
        self.device = torch.device(device)
        self.channel_idx = channel_indices(channels)
        # RGB and RGBY are leading channels of the stored order, so a slice (no copy) suffices.
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
        sample_shape = (len(self.channel_idx), *data.images.shape[2:])
        self._chunk = max(1, _CHUNK_BYTES // (4 * int(np.prod(sample_shape))))
        self._buffers = _FloatBuffers((min(batch_size, len(data)), *sample_shape))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle/augmentation stream of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (self._n_used + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        for start in range(0, self._n_used, self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            codes = torch.randint(0, 8, (len(idx),), generator=generator) if self.augment else None
            if self.device.type == "cpu":
                x = self._cpu_batch(idx, codes)
            else:
                x = self._device_batch(idx, codes)
            y = torch.from_numpy(self.data.labels[idx]).to(self.device, non_blocking=True).float()
            yield x, y

    def _uint8_rows(self, idx: np.ndarray) -> np.ndarray:
        """The selected channels of samples ``idx`` (sorted): a view when they are consecutive."""
        first, last = int(idx[0]), int(idx[-1])
        rows: slice | np.ndarray = slice(first, last + 1) if last - first + 1 == len(idx) else idx
        if self._n_leading:
            return self.data.images[rows, : self._n_leading]
        return self.data.images[rows][:, self.channel_idx]

    def _cpu_batch(self, idx: np.ndarray, codes: torch.Tensor | None) -> torch.Tensor:
        x = self._buffers.take(len(idx))
        for at in range(0, len(idx), self._chunk):
            part = slice(at, at + self._chunk)
            raw = torch.from_numpy(self._uint8_rows(idx[part]))
            if codes is not None:
                raw = dihedral_per_sample(raw, codes[part])
            # In place, in this order: the same float32 values as (x.float() - mean) * inv_std.
            x[part].copy_(raw).sub_(self._mean).mul_(self._inv_std)
        return x

    def _device_batch(self, idx: np.ndarray, codes: torch.Tensor | None) -> torch.Tensor:
        raw = np.ascontiguousarray(self._uint8_rows(idx))
        x = torch.from_numpy(raw).to(self.device, non_blocking=True)
        if codes is not None:
            x = dihedral_per_sample(x, codes)
        return x.float().sub_(self._mean).mul_(self._inv_std)
