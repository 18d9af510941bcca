"""The per-node shard cache: fetch and decode once per node, map everywhere, verify, evict."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hpa_tune.data.loader import load_split
from hpa_tune.data.node_cache import EVENTS_FILE, USED_FILE, NodeCache, cached_split, evict
from hpa_tune.data.shards import ShardManifest
from hpa_tune.errors import HpaTuneError, NotRetryableError


def events(cache_root: Path, kind: str) -> list[str]:
    lines = (cache_root / EVENTS_FILE).read_text().splitlines()
    return [line for line in lines if line.split()[2] == kind]


def test_a_split_is_decoded_once_then_every_reader_maps_the_same_file(sample_shards, tmp_path):
    cache = NodeCache(tmp_path / "cache", 10**12)
    first = cached_split(sample_shards, "train", 32, cache)
    second = cached_split(sample_shards, "train", 32, cache)
    reference = load_split(sample_shards, "train", 32)
    n_shards = len(ShardManifest.load(sample_shards).shards_for("train", 32))
    assert len(events(cache.root, "fetched")) == n_shards
    assert len(events(cache.root, "decoded")) == 1 and len(events(cache.root, "hit")) == 1
    assert isinstance(first.images, np.memmap) and first.images.filename == second.images.filename
    np.testing.assert_array_equal(first.images, reference.images)
    np.testing.assert_array_equal(second.labels, reference.labels)
    assert list(second.ids) == list(reference.ids)


def _trial_process(data: str, cache_dir: str, barrier, queue) -> None:
    """What a trial does with its data: load train + val at its size through the node cache."""
    os.environ["HPA_TUNE_SHARD_CACHE"] = cache_dir
    from hpa_tune.train.trial_data import load_trial_data

    barrier.wait()  # both "trials" ask for the data at the same moment
    data_ = load_trial_data(data, [32])
    path = str(data_.split(32, "train").images.filename)
    maps = Path("/proc/self/maps").read_text()
    queue.put((os.getpid(), path, os.stat(path).st_ino, path in maps))


def test_concurrent_trials_on_one_node_fetch_and_decode_once_and_share_the_file(
    sample_shards, tmp_path
):
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    cache_dir = tmp_path / "node-cache"
    procs = [
        ctx.Process(
            target=_trial_process, args=(str(sample_shards), str(cache_dir), barrier, queue)
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    manifest = ShardManifest.load(sample_shards)
    shards = manifest.shards_for("train", 32) + manifest.shards_for("val", 32)
    fetched = [line.split()[3] for line in events(cache_dir, "fetched")]
    assert sorted(fetched) == sorted(str(sample_shards / s.path) for s in shards)  # once each
    assert len(events(cache_dir, "decoded")) == 2  # train and val, once each
    assert len(events(cache_dir, "hit")) == 2  # the other trial found both splits decoded
    (pid_a, file_a, inode_a, mapped_a), (pid_b, file_b, inode_b, mapped_b) = results
    assert pid_a != pid_b and file_a == file_b and inode_a == inode_b
    assert mapped_a and mapped_b  # each process maps the file (shared through the page cache)


def _copy_set(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_corrupt_shard_is_refetched_once_then_named(sample_shards, tmp_path):
    data = _copy_set(sample_shards, tmp_path / "shards")
    shard = ShardManifest.load(data).shards_for("val", 32)[0]
    raw = bytearray((data / shard.path).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (data / shard.path).write_bytes(bytes(raw))
    cache = NodeCache(tmp_path / "cache", 10**12)
    with pytest.raises(NotRetryableError, match="sha256 does not match") as err:
        cached_split(data, "val", 32, cache)
    assert str(data / shard.path) in str(err.value) and "\n" not in str(err.value)
    assert len(events(cache.root, "sha256-mismatch")) == 2
    assert not list(cache.root.glob("*/val.ids.npy"))  # nothing half-decoded is left as complete


def test_a_missing_shard_is_named_and_not_worth_a_retry(sample_shards, tmp_path):
    data = _copy_set(sample_shards, tmp_path / "shards")
    shard = ShardManifest.load(data).shards_for("val", 32)[0]
    (data / shard.path).unlink()
    with pytest.raises(NotRetryableError, match="shard listed in the manifest is missing") as err:
        cached_split(data, "val", 32, NodeCache(tmp_path / "cache", 10**12))
    assert str(data / shard.path) in str(err.value)


@pytest.mark.parametrize("value", ["abc", "-3", "nan"])
def test_a_cache_limit_that_is_not_a_number_of_gb_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("HPA_TUNE_SHARD_CACHE_GB", value)
    with pytest.raises(NotRetryableError) as err:
        NodeCache.from_env()
    assert (
        str(err.value)
        == f"HPA_TUNE_SHARD_CACHE_GB='{value}': expected a number of GB (default 100)"
    )


def test_a_cache_root_that_is_a_file_is_not_worth_a_retry(sample_shards, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotRetryableError, match="not a directory"):
        cached_split(sample_shards, "val", 32, NodeCache(tmp_path / "afile", 10**12))


def test_deleting_the_cache_while_a_split_is_mapped_is_safe(sample_shards, tmp_path):
    cache = NodeCache(tmp_path / "cache", 10**12)
    mapped = cached_split(sample_shards, "val", 32, cache)
    total = int(mapped.images.sum())
    shutil.rmtree(cache.root)
    assert int(mapped.images.sum()) == total  # the mapping outlives the file
    again = cached_split(sample_shards, "val", 32, cache)
    assert int(again.images.sum()) == total
    assert len(events(cache.root, "decoded")) == 1  # rebuilt in the new cache


def _entry(root: Path, name: str, size: int, used: float) -> Path:
    entry = root / name
    entry.mkdir(parents=True)
    (entry / "train.images.npy").write_bytes(b"\0" * size)
    (entry / USED_FILE).touch()
    os.utime(entry / USED_FILE, (used, used))
    return entry


def test_least_recently_used_entries_are_evicted_beyond_the_limit(tmp_path):
    cache = NodeCache(tmp_path, limit_bytes=2500)
    oldest = _entry(tmp_path, "aaaa-64", 1000, used=100)
    middle = _entry(tmp_path, "bbbb-64", 1000, used=200)
    current = _entry(tmp_path, "cccc-224", 1000, used=50)  # in use, though its stamp is oldest
    newest = _entry(tmp_path, "dddd-64", 1000, used=300)
    assert evict(cache, keep=current) == [oldest, middle]
    assert current.exists() and newest.exists()


@pytest.mark.parametrize(("split", "size", "message"), [("train", 224, "image size 224 was not prepared"), ("nope", 32, "no split 'nope'")])  # fmt: skip
def test_a_split_or_size_that_was_not_prepared_is_named_as_the_plain_loader_names_it(
    sample_shards, tmp_path, split, size, message
):
    with pytest.raises(HpaTuneError, match=message) as cached:
        cached_split(sample_shards, split, size, NodeCache(tmp_path / "cache", 10**12))
    with pytest.raises(HpaTuneError, match=message) as plain:
        load_split(sample_shards, split, size)
    assert str(cached.value) == str(plain.value)
    assert not (tmp_path / "cache").exists()  # refused before touching the cache
