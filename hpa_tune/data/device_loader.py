"""Fast-path batch loaders: the whole epoch's work on the device, or pinned copies one batch ahead.

``DeviceArrayLoader`` keeps a split's uint8 images (only the selected channels) and its labels on
the device. An epoch's order and augmentation codes are drawn on the host once and copied over
once; every batch is then gathered, turned (flips / 90° rotations) and normalised on the device
without synchronising with the host — no per-batch host work.

``PinnedPrefetchLoader`` serves splits too large for that: a background thread gathers the next
batch's uint8 rows into a pinned host buffer while the current batch trains; the copy to the
device is non-blocking, and turning and normalising happen on the device as above.

Both accept any uint8 array-like with NumPy slicing (an ``np.ndarray`` or an ``np.memmap``), and
both deliver channels-last float32 batches with the same values as ``BatchLoader``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from hpa_tune.classes import channel_indices
from hpa_tune.data.loader import SplitArrays, samples_served

# Rows copied to the device per step when a split is uploaded (bounds the host-side copy).
_UPLOAD_ROWS = 512
# Pinned host buffers in the ring: one being filled, one being copied, one spare.
_PINNED_BUFFERS = 3


def epoch_plan(
    n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, augment: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The order of samples in an epoch and each position's symmetry code (0..7), or None.

    Each batch's indices are sorted (sequential reads from a memory map). A pure function of its
    arguments: the same epoch gets the same plan on every device and in both fast loaders.
    """
    rng = np.random.default_rng([seed, epoch, 1])
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        order[start : start + batch_size].sort()
    codes = rng.integers(0, 8, n, dtype=np.int64) if augment else None
    return order, codes


def dihedral_on_device(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` (N, C, S, S) turned by its code, without a host round trip.

    The same map as ``symmetry.dihedral``: a horizontal flip when ``code >= 4``, then
    ``code % 4`` quarter turns. ``codes`` lives on ``x``'s device.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square images, got {tuple(x.shape[-2:])}")
    view = (-1,) + (1,) * (x.dim() - 1)
    x = torch.where((codes >= 4).view(view), x.flip(-1), x)
    turns = (codes % 4).view(view)
    out = x
    for k in (1, 2, 3):
        out = torch.where(turns == k, torch.rot90(x, k, dims=(-2, -1)), out)
    return out


class _Normaliser:
    """uint8 (N, C, S, S) on the device -> channels-last float32, ``(x - mean) * inv_std``."""

    def __init__(
        self, channel_idx: list[int], mean: list[float] | None, std: list[float] | None, device
    ) -> None:
        n = max(channel_idx) + 1
        mean = mean if mean is not None else [0.5] * max(n, 4)
        std = std if std is not None else [0.25] * max(n, 4)
        shape = (1, len(channel_idx), 1, 1)
        self.mean = torch.tensor([mean[i] * 255 for i in channel_idx], device=device).view(shape)
        self.inv_std = torch.tensor([1 / (std[i] * 255) for i in channel_idx], device=device).view(
            shape
        )

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        x = torch.empty(raw.shape, dtype=torch.float32, device=raw.device)
        x = x.contiguous(memory_format=torch.channels_last)
        # The same float32 operations, in the same order, as BatchLoader's.
        return x.copy_(raw).sub_(self.mean).mul_(self.inv_std)


class _FastLoaderBase:
    """Shared arguments and epoch bookkeeping of the fast-path loaders."""

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
        if len(data) == 0:
            raise ValueError("a loader over an empty split has no batches")
        self.data, self.batch_size = data, batch_size
        # Training leaves out a last batch of one sample: BatchNorm cannot normalise it.
        self._n_used = samples_served(len(data), batch_size, drop_single_last)
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.device = torch.device(device)
        self.channel_idx = channel_indices(channels)
        self._normalise = _Normaliser(self.channel_idx, mean, std, self.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle/augmentation stream of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (self._n_used + self.batch_size - 1) // self.batch_size

    def _plan(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The epoch's plan, cut to the samples served (see ``drop_single_last``)."""
        order, codes = epoch_plan(
            len(self.data), self.batch_size, self.seed, self.epoch, self.shuffle, self.augment
        )
        return order[: self._n_used], None if codes is None else codes[: self._n_used]

    def _host_rows(self, idx: np.ndarray | slice) -> np.ndarray:
        """The selected channels of rows ``idx`` as a contiguous uint8 array (any array-like)."""
        k = len(self.channel_idx)
        if self.channel_idx == list(range(k)):
            return np.ascontiguousarray(self.data.images[idx, :k])
        return np.ascontiguousarray(self.data.images[idx][:, self.channel_idx])


class DeviceArrayLoader(_FastLoaderBase):
    """A split resident on the device; batches gathered, turned and normalised there.

    Same arguments as ``BatchLoader`` (with ``drop_single_last``: leave out a last batch of one
    sample). The upload happens once, at construction.
    """

    def __init__(self, data: SplitArrays, batch_size: int, **kwargs) -> None:
        super().__init__(data, batch_size, **kwargs)
        n, k = len(data), len(self.channel_idx)
        self.images = torch.empty(
            (n, k, *data.images.shape[2:]), dtype=torch.uint8, device=self.device
        )
        for start in range(0, n, _UPLOAD_ROWS):
            rows = slice(start, min(start + _UPLOAD_ROWS, n))
            self.images[rows].copy_(torch.from_numpy(self._host_rows(rows)))
        self.labels = torch.from_numpy(np.asarray(data.labels, dtype=np.float32)).to(self.device)

    @staticmethod
    def nbytes(data: SplitArrays, channels: str) -> int:
        """Device bytes a split takes when resident (images of the chosen channels + labels)."""
        per_sample = len(channel_indices(channels)) * int(np.prod(data.images.shape[2:]))
        return len(data) * (per_sample + 4 * int(data.labels.shape[1]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, codes = self._plan()
        order_t = torch.from_numpy(order).to(self.device, non_blocking=True)
        codes_t = (
            torch.from_numpy(codes).to(self.device, non_blocking=True)
            if codes is not None
            else None
        )
        for start in range(0, len(order), self.batch_size):
            idx = order_t[start : start + self.batch_size]
            raw = self.images.index_select(0, idx)
            if codes_t is not None:
                raw = dihedral_on_device(raw, codes_t[start : start + self.batch_size])
            yield self._normalise(raw), self.labels.index_select(0, idx)


class PinnedPrefetchLoader(_FastLoaderBase):
    """Host-resident split; the next batch is gathered into pinned memory while this one trains.

    Same arguments as ``BatchLoader``. Pinned memory and non-blocking copies apply on CUDA; on a
    CPU device the same code runs with ordinary memory (so it can be tested anywhere).
    """

    def __init__(self, data: SplitArrays, batch_size: int, **kwargs) -> None:
        super().__init__(data, batch_size, **kwargs)
        self._cuda = self.device.type == "cuda"
        shape = (min(batch_size, len(data)), len(self.channel_idx), *data.images.shape[2:])
        self._ring = [
            torch.empty(shape, dtype=torch.uint8, pin_memory=self._cuda)
            for _ in range(_PINNED_BUFFERS)
        ]
        self._copied: list[torch.cuda.Event | None] = [None] * _PINNED_BUFFERS

    def _fill(self, slot: int, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` into ring buffer ``slot``; their labels."""
        event = self._copied[slot]
        if event is not None:
            event.synchronize()  # the device has finished reading this buffer
        buf = self._ring[slot][: len(idx)]
        buf.numpy()[...] = self._host_rows(idx)
        labels = torch.from_numpy(np.asarray(self.data.labels[idx], dtype=np.float32))
        return buf, labels.pin_memory() if self._cuda else labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, codes = self._plan()
        starts = list(range(0, len(order), self.batch_size))
        batches = [order[s : s + self.batch_size] for s in starts]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpa-prefetch") as pool:
            pending: Future = pool.submit(self._fill, 0, batches[0])
            for i, start in enumerate(starts):
                host_x, host_y = pending.result()
                if i + 1 < len(batches):
                    slot = (i + 1) % _PINNED_BUFFERS
                    pending = pool.submit(self._fill, slot, batches[i + 1])
                raw = host_x.to(self.device, non_blocking=True)
                y = host_y.to(self.device, non_blocking=True)
                if self._cuda:
                    event = torch.cuda.Event()
                    event.record()
                    self._copied[i % _PINNED_BUFFERS] = event
                if codes is not None:
                    part = torch.from_numpy(codes[start : start + self.batch_size])
                    raw = dihedral_on_device(raw, part.to(self.device, non_blocking=True))
                yield self._normalise(raw), y
