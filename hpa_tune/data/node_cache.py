"""A per-node cache of decoded splits: shards fetched once per node, mapped by every trial there.

The first process on a node that needs a split at a size fetches its shards (local path, ``s3://``
or ``gs://``), checks each one's sha256 against the manifest (a mismatch is refetched once, then
reported naming the shard), and decodes them into one uint8 ``.npy`` file per split and size.
Every later process maps that file read-only-in-practice (copy-on-write, never written), so the
page cache holds one copy per node however many trials read it, and no trial copies the split.

Layout of the cache (``$HPA_TUNE_SHARD_CACHE``, default ``$HPA_TUNE_CACHE/shards``)::

    events.log                      # one line per fetch, decode, hit and eviction (with pid)
    <manifest sha256[:16]>-<size>/  # one entry per prepared set and image size
        train.images.npy  train.labels.npy  train.ids.npy   # ids written last: "complete"
        last_used                   # its mtime orders entries for eviction
    <manifest sha256[:16]>-<size>.lock

A re-prepared set has a new manifest and so new entries. Entries beyond the size limit
(``$HPA_TUNE_SHARD_CACHE_GB``, default 100) are evicted least recently used first, skipping any
being written. Deleting the cache at any time is safe: processes that mapped a file keep reading
it (Linux keeps a deleted file's pages while mapped), and the next one rebuilds the entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.loader import SplitArrays, fill_rows
from hpa_tune.data.shards import MANIFEST_NAME, ShardInfo, ShardManifest
from hpa_tune.errors import NotRetryableError
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.cache import cache_root
from hpa_tune.storage.local_lock import exclusive_lock

log = logging.getLogger(__name__)
EVENTS_FILE, USED_FILE = "events.log", "last_used"
DEFAULT_LIMIT_GB = 100.0
CACHE_ENV, LIMIT_ENV = "HPA_TUNE_SHARD_CACHE", "HPA_TUNE_SHARD_CACHE_GB"


@dataclass(frozen=True)
class NodeCache:
    """Where this node keeps decoded splits, and how many bytes it may hold."""

    root: Path
    limit_bytes: int

    @classmethod
    def from_env(cls) -> NodeCache:
        """``$HPA_TUNE_SHARD_CACHE`` (default ``$HPA_TUNE_CACHE/shards``), limited to
        ``$HPA_TUNE_SHARD_CACHE_GB`` GB (default 100).

        Raises:
            NotRetryableError: the limit is not a number of GB (the message names the variable).
        """
        root = os.environ.get(CACHE_ENV) or cache_root() / "shards"
        raw = os.environ.get(LIMIT_ENV) or ""
        try:
            limit_gb = float(raw) if raw else DEFAULT_LIMIT_GB
        except ValueError:
            limit_gb = float("nan")
        if not limit_gb >= 0:  # also NaN
            raise NotRetryableError(
                f"{LIMIT_ENV}={raw!r}: expected a number of GB (default {DEFAULT_LIMIT_GB:g})"
            )
        return cls(Path(root), int(min(limit_gb, 1e12) * 1e9))

    def check_writable(self) -> None:
        """Stop unless the cache's root is, or can be made, a directory this process writes in.

        Creates the root (as the first trial would) and a temporary file in it.

        Raises:
            NotRetryableError: one line naming the directory (and ``$HPA_TUNE_SHARD_CACHE`` when
                it was set) and why it cannot hold the cache.
        """
        where = f"{CACHE_ENV}={self.root}" if os.environ.get(CACHE_ENV) else f"{self.root}"
        hint = f"point ${CACHE_ENV} at a directory this user can write"
        if self.root.exists() and not self.root.is_dir():
            raise NotRetryableError(
                f"{where}: not a directory, cannot hold the shard cache; {hint}"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise NotRetryableError(
                f"{where}: cannot write the shard cache there ({reason}); {hint}"
            ) from None

    def event(self, what: str, detail: str) -> None:
        """Append one line to ``events.log`` (and the module's logger)."""
        line = f"{time.time():.3f} pid={os.getpid()} {what} {detail}"
        log.info("node cache: %s %s", what, detail)
        with (self.root / EVENTS_FILE).open("a") as f:
            f.write(line + "\n")


def _split_files(entry: Path, split: str) -> tuple[Path, Path, Path]:
    return tuple(entry / f"{split}.{part}.npy" for part in ("images", "labels", "ids"))  # type: ignore[return-value]


def _mapped(entry: Path, split: str) -> SplitArrays:
    images, labels, ids = _split_files(entry, split)
    # Copy-on-write mapping: writable for torch.from_numpy, but pages stay the shared page cache
    # as long as nothing writes (and nothing does).
    return SplitArrays(
        np.load(ids, allow_pickle=False).astype(object),
        np.load(images, mmap_mode="c"),
        np.load(labels, mmap_mode="c"),
    )


def _fetch_verified(cache: NodeCache, data: str, shard: ShardInfo) -> bytes:
    """The shard's bytes with the manifest's sha256; one refetch on a mismatch."""
    location = storage.join(data, shard.path)
    for attempt in (1, 2):
        try:
            raw = storage.read_bytes(location)
        except FileNotFoundError:
            raise NotRetryableError(
                f"{location}: shard listed in the manifest is missing"
            ) from None
        if hashlib.sha256(raw).hexdigest() == shard.sha256:
            cache.event("fetched", f"{location} ({len(raw)} bytes)")
            return raw
        cache.event("sha256-mismatch", f"{location} (attempt {attempt})")
    raise NotRetryableError(
        f"{location}: sha256 does not match the manifest after a refetch (corrupt or modified "
        "shard); re-run prepare"
    )


def _decode_split(
    cache: NodeCache, data: str, manifest: ShardManifest, split: str, size: int, entry: Path
) -> None:
    """Fetch, verify and decode every shard of ``split`` into ``entry`` (one shard in memory)."""
    shards = manifest.shards_for(split, size)
    n = sum(s.rows for s in shards)
    images_path, labels_path, ids_path = _split_files(entry, split)
    tmp = entry / f".{split}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(
        tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, len(CHANNELS), size, size)
    )
    labels = np.zeros((n, NUM_CLASSES), dtype=np.uint8)
    ids: list[str] = []
    at = 0
    for shard in shards:
        table = pq.read_table(pa.BufferReader(_fetch_verified(cache, data, shard)))
        if table.num_rows != shard.rows:
            raise NotRetryableError(
                f"{storage.join(data, shard.path)}: {table.num_rows} rows, manifest says {shard.rows}"
            )
        at = fill_rows(table, images, labels, ids, at)
    images.flush()
    del images
    np.save(tmp / "labels.npy", labels)
    np.save(tmp / "ids.npy", np.asarray(ids, dtype=str))
    os.replace(tmp / "images.npy", images_path)
    os.replace(tmp / "labels.npy", labels_path)
    os.replace(tmp / "ids.npy", ids_path)  # last: its presence marks the split complete
    shutil.rmtree(tmp, ignore_errors=True)
    cache.event("decoded", f"{split}@{size} -> {images_path} ({n} samples)")


def _entry_bytes(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def evict(cache: NodeCache, keep: Path | None = None) -> list[Path]:
    """Delete least recently used entries until the cache fits its limit; returns those deleted.
    ``keep`` (the entry in use) and entries another process is writing are never deleted."""
    entries = [p for p in cache.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    sizes = {e: _entry_bytes(e) for e in entries}
    total = sum(sizes.values())

    def last_used(e: Path) -> float:
        marker = e / USED_FILE
        return marker.stat().st_mtime if marker.exists() else 0.0

    deleted = []
    for entry in sorted(entries, key=last_used):
        if total <= cache.limit_bytes:
            break
        if entry == keep:
            continue
        with exclusive_lock(entry.with_name(entry.name + ".lock"), blocking=False) as got:
            if not got:
                continue
            shutil.rmtree(entry, ignore_errors=True)
        total -= sizes[entry]
        deleted.append(entry)
        cache.event("evicted", f"{entry} ({sizes[entry]} bytes)")
    return deleted


def cached_split(
    data: str | Path, split: str, size: int, cache: NodeCache | None = None
) -> SplitArrays:
    """One split at one size as memory-mapped arrays, decoded through this node's cache.

    Args:
        data: a prepared directory: local path, ``s3://`` or ``gs://`` URI.
        split: ``train``, ``val``, ``holdout`` or ``test``.
        size: an image size the set was prepared at.
        cache: where to cache (default: ``NodeCache.from_env()``).

    Raises:
        NotRetryableError: no manifest, a size or split that was not prepared, or a shard that is
            missing or still corrupt after one refetch (named).
    """
    data = storage.location_arg(data)
    cache = cache or NodeCache.from_env()
    raw_manifest, manifest = ShardManifest.read(data)
    manifest.check_prepared(data, split, size)
    entry = cache.root / f"{hashlib.sha256(raw_manifest).hexdigest()[:16]}-{size}"
    for _ in range(2):
        try:
            return _open_split(cache, data, manifest, split, size, entry)
        except FileNotFoundError:  # the cache was deleted under us: build the entry again
            continue
    return _open_split(cache, data, manifest, split, size, entry)


def _open_split(
    cache: NodeCache, data: str, manifest: ShardManifest, split: str, size: int, entry: Path
) -> SplitArrays:
    cache.check_writable()  # a cache that cannot be written fails the same way on a retry
    images_path, _, ids_path = _split_files(entry, split)
    if ids_path.exists():
        (entry / USED_FILE).touch()
        cache.event("hit", f"{split}@{size} {data}")
    else:
        with exclusive_lock(entry.with_name(entry.name + ".lock")):
            if ids_path.exists():  # another process decoded it while this one waited
                cache.event("hit", f"{split}@{size} {data} (after waiting)")
            else:
                entry.mkdir(parents=True, exist_ok=True)
                for stale in entry.glob(f".{split}.*"):  # left by a process that died decoding
                    shutil.rmtree(stale, ignore_errors=True)
                _decode_split(cache, data, manifest, split, size, entry)
            (entry / USED_FILE).touch()
        evict(cache, keep=entry)
    arrays = _mapped(entry, split)
    cache.event("mapped", f"{images_path} inode={os.stat(images_path).st_ino}")
    return arrays


__all__ = ["MANIFEST_NAME", "NodeCache", "cached_split", "evict"]
