"""Shard loading: checksummed, exact round trip; batches normalised, channel-sliced, augmented."""

import numpy as np
import pytest
import torch

from hpa_tune.classes import channel_indices
from hpa_tune.data import loader as loader_module
from hpa_tune.data.loader import BatchLoader, SplitArrays, load_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import ShardManifest
from hpa_tune.errors import HpaTuneError
from tests.conftest import SMALL_SOURCE


@pytest.fixture
def prepared(kaggle_dir, tmp_path):
    raw, _ = kaggle_dir
    # A tiny shard limit forces several shards per split.
    prepare(
        raw,
        tmp_path / "out",
        PrepareOptions(
            sizes=(32,), workers=1, expected_size=SMALL_SOURCE, shard_bytes=10 * 4 * 32 * 32
        ),
    )
    return tmp_path / "out"


def test_shards_are_size_limited_and_load_back_in_order(prepared):
    m = ShardManifest.load(prepared)
    train_shards = m.shards_for("train", 32)
    assert len(train_shards) > 1 and all(s.rows <= 9 for s in train_shards)
    train = load_split(prepared, "train", 32)
    assert train.images.shape == (m.splits["train"], 4, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.shape == (m.splits["train"], 28) and len(set(train.ids)) == len(train)


def test_corrupt_shard_is_named(prepared):
    shard = ShardManifest.load(prepared).shards_for("val", 32)[0]
    path = prepared / shard.path
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(HpaTuneError, match=f"{shard.path}: sha256 does not match"):
        load_split(prepared, "val", 32)


def test_unprepared_size_is_named(prepared):
    with pytest.raises(HpaTuneError, match="image size 224 was not prepared"):
        load_split(prepared, "train", 224)


def _arrays(n=10, size=8):
    rng = np.random.default_rng(0)
    return SplitArrays(
        np.array([f"id{i}" for i in range(n)], dtype=object),
        rng.integers(0, 256, (n, 4, size, size), dtype=np.uint8),
        (rng.random((n, 28)) < 0.2).astype(np.uint8),
    )


def test_batches_cover_every_sample_once_and_are_normalised():
    data = _arrays()
    mean, std = [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.25, 0.25]
    loader = BatchLoader(data, 4, channels="rgby", mean=mean, std=std)
    xs, ys = zip(*loader, strict=True)
    assert [len(x) for x in xs] == [4, 4, 2] and len(loader) == 3
    x = torch.cat(xs).numpy()
    expected = (data.images / 255.0 - np.array(mean)[None, :, None, None]) / np.array(std)[
        None, :, None, None
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), data.labels)


def test_rgb_batches_drop_the_yellow_channel():
    data = _arrays()
    assert channel_indices("rgb") == [0, 1, 2]
    x, _ = next(iter(BatchLoader(data, 10, channels="rgb", mean=[0.0] * 4, std=[1 / 255] * 4)))
    np.testing.assert_array_equal(x.numpy(), data.images[:, :3].astype(np.float32))


def test_shuffle_is_reproducible_per_epoch_and_differs_between_epochs():
    data = _arrays(50)
    loader = BatchLoader(data, 50, shuffle=True, seed=3)
    # Within a batch indices are sorted, so compare the order of the batches' label sums.
    small = BatchLoader(data, 5, shuffle=True, seed=3)
    order = [y.sum().item() for _, y in small]
    assert order == [y.sum().item() for _, y in small]
    small.set_epoch(1)
    assert order != [y.sum().item() for _, y in small]
    assert len(list(loader)) == 1


def test_augmentation_only_flips_and_rotates():
    data = _arrays(16)
    plain = torch.cat([x for x, _ in BatchLoader(data, 16)])
    aug = torch.cat([x for x, _ in BatchLoader(data, 16, augment=True, seed=1)])
    variants = 0
    for a, p in zip(aug, plain, strict=True):
        candidates = [torch.rot90(q, k, dims=(-2, -1)) for q in (p, p.flip(-1)) for k in range(4)]
        matches = [torch.equal(a, c) for c in candidates]
        assert any(matches)
        variants += not matches[0]
    assert variants > 0


def _reference_batches(data, batch_size, channels, mean, std, shuffle, augment, seed, epoch):
    """The loader's contract written out plainly: whole batches, float math out of place."""
    ch = channel_indices(channels)
    m = torch.tensor([mean[i] * 255 for i in ch]).view(1, -1, 1, 1)
    inv_std = torch.tensor([1 / (std[i] * 255) for i in ch]).view(1, -1, 1, 1)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data)) if shuffle else np.arange(len(data))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    for start in range(0, len(data), batch_size):
        idx = np.sort(order[start : start + batch_size])
        x = (torch.from_numpy(data.images[idx][:, ch]).float() - m) * inv_std
        if augment:
            codes = torch.randint(0, 8, (len(idx),), generator=generator)
            for i, code in enumerate(codes.tolist()):
                sample = x[i].flip(-1) if code >= 4 else x[i]
                x[i] = torch.rot90(sample, code % 4, dims=(-2, -1))
        yield x, torch.from_numpy(data.labels[idx]).float()


@pytest.mark.parametrize("chunk_samples", [1, 3, 64])
@pytest.mark.parametrize(
    ("channels", "shuffle", "augment"),
    [("rgby", False, False), ("rgb", False, False), ("rgb", True, False), ("rgb", True, True)],
)
def test_float_batches_equal_uint8_minus_mean_over_std_bit_for_bit(
    monkeypatch, chunk_samples, channels, shuffle, augment
):
    # The CPU path converts a few samples at a time into recycled buffers; none of that may show.
    data = _arrays(23, size=12)
    n_channels = len(channel_indices(channels))
    monkeypatch.setattr(loader_module, "_CHUNK_BYTES", chunk_samples * 4 * n_channels * 12 * 12)
    mean, std = [0.1, 0.2, 0.3, 0.4], [0.21, 0.17, 0.25, 0.3]
    kwargs = dict(channels=channels, mean=mean, std=std, shuffle=shuffle, augment=augment, seed=5)
    loader = BatchLoader(data, 8, **kwargs)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        expected = _reference_batches(data, 8, epoch=epoch, **kwargs)
        for (x, y), (ex, ey) in zip(loader, expected, strict=True):
            assert x.dtype == torch.float32 and torch.equal(x, ex)
            assert torch.equal(y, ey)


def test_device_path_gives_the_cpu_paths_batches():
    # The path taken for a GPU (uint8 batch copied over, then converted), run on the CPU.
    data = _arrays(20, size=12)
    loader = BatchLoader(data, 7, channels="rgb", shuffle=True, augment=True, seed=2)
    generator = torch.Generator().manual_seed(0)
    for idx in (np.arange(3, 10), np.array([0, 4, 5, 19])):
        codes = torch.randint(0, 8, (len(idx),), generator=generator)
        assert torch.equal(loader._device_batch(idx, codes), loader._cpu_batch(idx, codes))


def test_batches_still_held_are_never_overwritten():
    data = _arrays(40, size=12)
    loader = BatchLoader(data, 4, shuffle=True, augment=True, seed=1)
    kept = []
    for i, (x, _) in enumerate(loader):
        # Whatever a consumer keeps of a batch: the tensor, a view, a NumPy array, a detached view.
        kept.append([x, x[:, :2], x.numpy(), x[1:].detach()][i % 4])
    expected = [
        x for x, _ in _reference_batches(data, 4, "rgby", [0.5] * 4, [0.25] * 4, True, True, 1, 0)
    ]
    for i, (k, ex) in enumerate(zip(kept, expected, strict=True)):
        want = [ex, ex[:, :2], ex.numpy(), ex[1:]][i % 4]
        np.testing.assert_array_equal(np.asarray(k), np.asarray(want))


def test_cpu_batches_reuse_memory_once_released():
    if loader_module._storage_use_count is None:
        pytest.skip("this torch has no storage use count; every batch gets new memory")
    loader = BatchLoader(_arrays(40, size=12), 4)
    # A for loop holds one batch while the next is made, so two buffers take turns.
    assert len({x.data_ptr() for x, _ in loader}) == 2


def test_unknown_channel_set_is_rejected():
    with pytest.raises(ValueError, match="rgby"):
        BatchLoader(_arrays(), 2, channels="rgbx")


def test_a_training_loader_drops_a_last_batch_of_one_sample():
    data = _arrays(n=9)
    train = BatchLoader(data, 4, shuffle=True, drop_single_last=True)
    sizes = [len(x) for x, _ in train]
    assert sizes == [4, 4] and len(train) == 2
    # Evaluation keeps every sample, and a larger last batch is never dropped.
    assert [len(x) for x, _ in BatchLoader(data, 4)] == [4, 4, 1]
    assert [len(x) for x, _ in BatchLoader(_arrays(n=10), 4, drop_single_last=True)] == [4, 4, 2]
