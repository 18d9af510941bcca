"""Parquet shards of preprocessed images plus ``manifest.json`` — written once, read by many.

Layout of a prepared directory::

    manifest.json                      # ShardManifest: sizes, splits, class counts, sha256 per shard
    rejected.csv                       # Id,reason of every sample left out
    size_64/train-00000.parquet        # one row per sample: id, image (C*S*S uint8 bytes), labels
    size_64/val-00000.parquet ...

Each image is stored as raw uint8 bytes in (C, S, S) order with C = CHANNELS (red, green, blue,
yellow); labels are a 28-long 0/1 list.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.errors import NotRetryableError
from hpa_tune.storage import filesystems as storage

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_BYTES = 256 * 2**20
# LZ4 decodes 2-3x faster than zstd (level 1) for 10-15% larger files; decoding is most of what a
# trial's first epoch spends on reading shards (BENCHMARKS.md, section 1.3).
COMPRESSION = "lz4"
# A row group is what the writer holds in memory before writing (and what a reader decodes at
# once): at most this many rows and, for large images, about this many bytes. Small enough that
# prepare's peak memory stops growing after a few hundred samples (BENCHMARKS.md, prepare).
ROW_GROUP_ROWS = 256
ROW_GROUP_BYTES = 8 * 2**20


def shard_schema(size: int) -> pa.Schema:
    """Arrow schema of a shard holding images of side ``size``."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("image", pa.binary(len(CHANNELS) * size * size)),
            ("labels", pa.list_(pa.uint8(), NUM_CLASSES)),
        ]
    )


@dataclass(frozen=True)
class ShardInfo:
    """One shard file as recorded in the manifest."""

    path: str  # relative to the manifest's directory
    size: int
    split: str
    rows: int
    sha256: str


@dataclass
class ShardManifest:
    """Everything a reader needs to trust and load a prepared directory."""

    class_names: list[str]
    channel_order: list[str]
    sizes: list[int]
    splits: dict[str, int]
    class_counts: dict[str, list[int]]
    channel_stats: dict[str, dict[str, list[float]]]  # str(size) -> {"mean", "std"} on train, 0..1
    shards: list[ShardInfo]
    seed: int
    val_fraction: float
    holdout_fraction: float
    source: str = ""
    rejected: int = 0
    resized: int = 0
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # Every Id of sample_submission.csv in its order, rejected ones included: a submission
    # must list them all (``predict`` gives the ones not in the test split a fallback row).
    test_ids: list[str] = field(default_factory=list)

    def save(self, directory: Path) -> Path:
        """Write ``manifest.json`` into ``directory``."""
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> ShardManifest:
        """Read and check ``directory/manifest.json`` (a local path, ``s3://`` or ``gs://``).

        Raises:
            NotRetryableError: the directory has no manifest or one of another format version.
        """
        return cls.read(directory)[1]

    @classmethod
    def read(cls, directory: Path | str) -> tuple[bytes, ShardManifest]:
        """The manifest's bytes (its identity, e.g. for caches) and the manifest; see ``load``."""
        path = storage.join(storage.location_arg(directory), MANIFEST_NAME)
        try:
            data = storage.read_bytes(path)
        except FileNotFoundError:
            raise NotRetryableError(
                f"{path}: not found; is {directory} a directory written by `hpa-tune prepare`?"
            ) from None
        raw = json.loads(data)
        if raw.get("format_version") != FORMAT_VERSION:
            raise NotRetryableError(
                f"{path}: format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}; re-run prepare"
            )
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        return data, cls(**raw)

    def check_prepared(self, where: str | Path, split: str, size: int) -> None:
        """Stop unless ``split`` was prepared at ``size``.

        Raises:
            NotRetryableError: naming ``where`` (the prepared directory) and what it does hold.
        """
        if size not in self.sizes:
            raise NotRetryableError(
                f"{where}: image size {size} was not prepared; prepared sizes: {self.sizes}"
            )
        if split not in self.splits:
            raise NotRetryableError(
                f"{where}: no split {split!r}; prepared splits: {sorted(self.splits)}"
            )

    def shards_for(self, split: str, size: int) -> list[ShardInfo]:
        """Shards of one split at one size, in write order."""
        return [s for s in self.shards if s.split == split and s.size == size]

    def stats_for(self, size: int) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (0..1 scale) of the train split at ``size``."""
        stats = self.channel_stats[str(size)]
        return stats["mean"], stats["std"]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Appends samples of one (split, size); rolls over to a new file at a byte limit.

    Memory stays bounded whatever the shard size: samples are written as Parquet row groups of
    at most ``ROW_GROUP_ROWS`` rows and ``ROW_GROUP_BYTES`` bytes while a shard file is open.
    """

    def __init__(
        self, root: Path, split: str, size: int, max_bytes: int = DEFAULT_SHARD_BYTES
    ) -> None:
        self.root, self.split, self.size = root, split, size
        row_bytes = len(CHANNELS) * size * size + NUM_CLASSES
        self.rows_per_shard = max(1, max_bytes // row_bytes)
        self.rows_per_group = max(1, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES // row_bytes))
        self.shards: list[ShardInfo] = []
        self._ids: list[str] = []
        self._images: list[bytes] = []
        self._labels: list[np.ndarray] = []
        self._file: pq.ParquetWriter | None = None
        self._file_rows = 0
        (root / f"size_{size}").mkdir(parents=True, exist_ok=True)

    def _rel(self) -> str:
        return f"size_{self.size}/{self.split}-{len(self.shards):05d}.parquet"

    def add(self, sample_id: str, image: np.ndarray, labels: np.ndarray) -> None:
        """Buffer one sample; writes a row group, and closes a shard at the size limit."""
        self._ids.append(sample_id)
        self._images.append(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self._labels.append(np.asarray(labels, dtype=np.uint8))
        room = self.rows_per_shard - self._file_rows
        if len(self._ids) >= min(self.rows_per_group, room):
            self._write_group()
        if self._file_rows >= self.rows_per_shard:
            self._close_shard()

    def _write_group(self) -> None:
        if not self._ids:
            return
        schema = shard_schema(self.size)
        labels = pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(self._labels)), NUM_CLASSES
        )
        table = pa.Table.from_arrays(
            [
                pa.array(self._ids, pa.string()),
                pa.array(self._images, schema.field("image").type),
                labels,
            ],
            schema=schema,
        )
        if self._file is None:
            # No dictionary encoding: every image is unique, and trying one only slows reading.
            self._file = pq.ParquetWriter(
                self.root / self._rel(), schema, compression=COMPRESSION, use_dictionary=False
            )
        self._file.write_table(table, row_group_size=len(self._ids))
        self._file_rows += len(self._ids)
        self._ids, self._images, self._labels = [], [], []

    def _close_shard(self) -> None:
        if self._file is None:
            return
        self._file.close()
        rel = self._rel()
        self.shards.append(
            ShardInfo(rel, self.size, self.split, self._file_rows, sha256_of(self.root / rel))
        )
        self._file, self._file_rows = None, 0

    def abort(self) -> None:
        """Close the open shard file without recording it (after a failure: it releases the
        file, so the space of a removed staging directory is given back at once)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file, self._ids, self._images, self._labels = None, [], [], []

    def flush(self) -> None:
        """Write buffered samples and close the open shard (no-op when nothing is pending)."""
        self._write_group()
        self._close_shard()
