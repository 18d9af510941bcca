"""Fast-path loaders: same batches as BatchLoader, every sample once per epoch, device
augmentation equal to the host's, any uint8 array-like (np.memmap included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.device_loader import (
    DeviceArrayLoader,
    PinnedPrefetchLoader,
    dihedral_on_device,
    epoch_plan,
)
from hpa_tune.data.loader import BatchLoader, SplitArrays
from hpa_tune.data.symmetry import dihedral, dihedral_per_sample

FAST_LOADERS = [DeviceArrayLoader, PinnedPrefetchLoader]
# CUDA cases run only where a GPU is present (a GPU session: pytest tests/test_device_loader.py).
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]
MEAN, STD = [0.1, 0.2, 0.3, 0.4], [0.5, 0.25, 0.2, 0.1]


def random_split(n: int = 22, size: int = 8, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, len(CHANNELS), size, size), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, NUM_CLASSES), dtype=np.uint8)
    return SplitArrays(np.array([f"s{i}" for i in range(n)], dtype=object), images, labels)


def indexed_split(n: int = NUM_CLASSES, size: int = 6) -> SplitArrays:
    """Sample i: every pixel i (unchanged by any flip or turn) and the single label i."""
    images = np.broadcast_to(
        np.arange(n, dtype=np.uint8)[:, None, None, None], (n, len(CHANNELS), size, size)
    ).copy()
    labels = np.eye(n, NUM_CLASSES, dtype=np.uint8)
    return SplitArrays(np.arange(n).astype(str).astype(object), images, labels)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", FAST_LOADERS)
@pytest.mark.parametrize("channels", ["rgb", "rgby"])
def test_fast_loader_batches_equal_the_plain_loaders_bit_for_bit(kind, channels, device):
    data = random_split()
    plain = BatchLoader(data, 5, channels=channels, mean=MEAN, std=STD)
    fast = kind(data, 5, channels=channels, mean=MEAN, std=STD, device=device)
    assert len(fast) == len(plain) == 5
    for (xf, yf), (xp, yp) in zip(fast, plain, strict=True):
        assert xf.device.type == device
        assert torch.equal(xf.cpu(), xp)
        assert torch.equal(yf.cpu(), yp)
        assert xf.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", FAST_LOADERS)
def test_every_sample_is_seen_once_per_epoch_with_shuffling_and_augmentation(kind, device):
    data = indexed_split()
    kw = {"mean": MEAN, "std": STD, "shuffle": True, "augment": True, "seed": 3, "device": device}
    loader = kind(data, 5, channels="rgb", **kw)
    orders = []
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        seen = []
        for x, y in loader:
            from_label = y.argmax(dim=1)
            # undo the normalisation of red: the pixel value is the sample's index
            from_image = (x[:, 0, 0, 0] / (1 / (STD[0] * 255)) + MEAN[0] * 255).round().long()
            assert torch.equal(from_label, from_image)
            seen.extend(from_label.tolist())
        assert sorted(seen) == list(range(len(data)))
        orders.append(seen)
    assert orders[0] != orders[1]  # a new permutation each epoch
    loader.set_epoch(1)
    assert [i for _, y in loader for i in y.argmax(dim=1).tolist()] == orders[0]


def test_both_fast_loaders_serve_the_same_augmented_epoch():
    data = random_split(n=17)
    kw = {"channels": "rgby", "mean": MEAN, "std": STD, "shuffle": True, "augment": True, "seed": 7}
    device, pinned = DeviceArrayLoader(data, 4, **kw), PinnedPrefetchLoader(data, 4, **kw)
    for loader in (device, pinned):
        loader.set_epoch(2)
    for (xd, yd), (xp, yp) in zip(device, pinned, strict=True):
        assert torch.equal(xd, xp)
        assert torch.equal(yd, yp)


@pytest.mark.parametrize("device", DEVICES)
def test_on_device_augmentation_equals_the_host_augmentation_for_the_same_codes(device):
    x = torch.randint(0, 256, (24, 3, 9, 9), dtype=torch.uint8)
    codes = torch.arange(24) % 8
    on_device = dihedral_on_device(x.to(device), codes.to(device))
    assert torch.equal(on_device.cpu(), dihedral_per_sample(x, codes))
    for code in range(8):
        same = torch.full((3,), code)
        assert torch.equal(dihedral_on_device(x[:3], same), dihedral(x[:3], code))


def test_the_eight_codes_give_eight_different_symmetries():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(8, 1, 4, 4)
    out = dihedral_on_device(x, torch.arange(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_epoch_plan_is_a_permutation_sorted_within_each_batch():
    order, codes = epoch_plan(23, 5, seed=1, epoch=4, shuffle=True, augment=True)
    assert sorted(order) == list(range(23))
    for start in range(0, 23, 5):
        assert list(order[start : start + 5]) == sorted(order[start : start + 5])
    assert codes is not None and codes.min() >= 0 and codes.max() <= 7
    again, _ = epoch_plan(23, 5, seed=1, epoch=4, shuffle=True, augment=True)
    assert np.array_equal(order, again)


@pytest.mark.parametrize("kind", FAST_LOADERS)
def test_a_memory_mapped_split_gives_the_same_batches_as_one_in_memory(kind, tmp_path):
    data = random_split(n=13)
    mapped = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=data.images.shape)
    mapped[:] = data.images
    mapped.flush()
    readonly = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="r", shape=data.images.shape)
    on_disk = SplitArrays(data.ids, readonly, data.labels)
    kw = {"channels": "rgb", "mean": MEAN, "std": STD, "shuffle": True, "augment": True}
    for (xm, ym), (xa, ya) in zip(kind(on_disk, 4, **kw), kind(data, 4, **kw), strict=True):
        assert torch.equal(xm, xa)
        assert torch.equal(ym, ya)


def test_device_loader_reports_the_bytes_it_keeps_resident():
    data = random_split(n=10, size=8)
    assert DeviceArrayLoader.nbytes(data, "rgb") == 10 * (3 * 64 + 4 * NUM_CLASSES)
    loader = DeviceArrayLoader(data, 4, channels="rgb")
    held = loader.images.numel() + loader.labels.numel() * 4
    assert held == DeviceArrayLoader.nbytes(data, "rgb")


@pytest.mark.parametrize("kind", FAST_LOADERS)
def test_training_leaves_out_a_last_batch_of_one_sample(kind):
    data = random_split(n=11)
    dropping = kind(data, 5, channels="rgb", shuffle=True, drop_single_last=True)
    assert len(dropping) == 2
    assert [len(y) for _, y in dropping] == [5, 5]
    assert [len(y) for _, y in kind(data, 5, channels="rgb")] == [5, 5, 1]
