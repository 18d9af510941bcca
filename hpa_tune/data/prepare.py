"""``hpa-tune prepare``: a Kaggle-layout directory -> Parquet shards, manifest and splits.

One bad sample never costs the others: label problems and unreadable images are written to
``rejected.csv`` and counted, everything else is kept. Splits are assigned from the label rows
that pass validation (before decoding), so an unreadable image only removes itself from its split.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
from collections import Counter, deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from hpa_tune.classes import CHANNELS, NUM_CLASSES, class_names
from hpa_tune.data.decode import DecodedSample, SampleError, decode_sample
from hpa_tune.data.kaggle_layout import (
    LabelRow,
    Rejection,
    check_raw_dir,
    index_channel_files,
    missing_channels,
    read_submission_ids,
    read_train_csv,
)
from hpa_tune.data.output_swap import (
    check_output_dir,
    no_space_error,
    output_bytes_bound,
    staging_dir,
    swap_in,
)
from hpa_tune.data.shards import DEFAULT_SHARD_BYTES, ShardManifest, ShardWriter
from hpa_tune.data.splits import TEST, TRAIN, VAL, assign_splits, class_counts
from hpa_tune.errors import HpaTuneError

ProgressFn = Callable[[int, int], None]  # (done, total)
_CHUNK = 4  # samples per task sent to a decoding worker
_CHUNKS_IN_FLIGHT = 2  # per worker: enough to keep it busy, few enough to bound memory


@dataclass(frozen=True)
class PrepareOptions:
    """Options of ``prepare`` (defaults are the CLI's)."""

    sizes: tuple[int, ...] = (64, 224)
    val_fraction: float = 0.15
    holdout_fraction: float = 0.15
    seed: int = 0
    workers: int = 0  # 0: one per CPU
    strict: bool = False
    shard_bytes: int = DEFAULT_SHARD_BYTES
    expected_size: int = 512


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` wrote and what it left out."""

    manifest: ShardManifest
    rejected: list[Rejection]
    out_dir: Path


@dataclass(frozen=True)
class _Task:
    id: str
    labels: tuple[int, ...]
    split: str
    files: dict[str, Path]


# A decoded sample and, for train samples, per size its per-channel (sum, sum of squares) as a
# (2, C) int64 array: the moments are computed by the decoding worker, not the single writer.
_Decoded = tuple[DecodedSample, dict[int, np.ndarray]]


def channel_sums(image: np.ndarray) -> np.ndarray:
    """Per-channel sum and sum of squares of a (C, S, S) uint8 image, exact, as (2, C) int64."""
    x = image.reshape(image.shape[0], -1).astype(np.int64)
    return np.stack([x.sum(axis=1), np.einsum("ij,ij->i", x, x)])


def _decode_task(task: _Task, sizes: tuple[int, ...], expected_size: int) -> _Decoded | str:
    try:
        sample = decode_sample(task.files, sizes, expected_size)
        sums = (
            {s: channel_sums(im) for s, im in sample.images.items()} if task.split == TRAIN else {}
        )
        return sample, sums
    except SampleError as err:
        return str(err)
    except Exception as err:  # one bad sample never costs the others, whatever it raises
        return f"cannot decode: {type(err).__name__}: {err}"


def _multi_hot(rows: list[LabelRow]) -> np.ndarray:
    y = np.zeros((len(rows), NUM_CLASSES), dtype=np.uint8)
    for i, row in enumerate(rows):
        y[i, list(row.labels)] = 1
    return y


def _tasks_for(
    rows: list[LabelRow], splits: np.ndarray, image_dir: Path, rejected: list[Rejection]
) -> list[_Task]:
    index = index_channel_files(image_dir)
    tasks = []
    for row, split in zip(rows, splits, strict=True):
        files = index.get(row.id, {})
        missing = missing_channels(files)
        if missing:
            names = ", ".join(f"{row.id}_{c}.png" for c in missing)
            rejected.append(
                Rejection(row.id, f"missing channel file(s) in {image_dir.name}/: {names}")
            )
        else:
            tasks.append(_Task(row.id, row.labels, str(split), files))
    return tasks


def _decode_chunk(
    tasks: list[_Task], sizes: tuple[int, ...], expected_size: int
) -> list[_Decoded | str]:
    return [_decode_task(t, sizes, expected_size) for t in tasks]


def _decoded(
    tasks: list[_Task], options: PrepareOptions
) -> Generator[tuple[_Task, _Decoded | str], None, None]:
    """Decode ``tasks`` on worker processes, yielding results in task order.

    Back-pressure: at most ``_CHUNKS_IN_FLIGHT`` chunks per worker are submitted ahead of the
    writer, so decoded samples never pile up in memory however many tasks there are.
    """
    workers = options.workers or os.cpu_count() or 1
    fn = partial(_decode_chunk, sizes=options.sizes, expected_size=options.expected_size)
    if workers == 1:
        yield from ((t, fn([t])[0]) for t in tasks)
        return
    chunks = iter([tasks[i : i + _CHUNK] for i in range(0, len(tasks), _CHUNK)])
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[list[_Task], Future[list[_Decoded | str]]]] = deque(
            (chunk, pool.submit(fn, chunk)) for chunk in islice(chunks, workers * _CHUNKS_IN_FLIGHT)
        )
        while pending:
            chunk, future = pending.popleft()
            results = future.result()
            for nxt in islice(chunks, 1):
                pending.append((nxt, pool.submit(fn, nxt)))
            yield from zip(chunk, results, strict=True)


class _ChannelMoments:
    """Running exact per-channel pixel sums (0..255) for the train split's mean/std."""

    def __init__(self) -> None:
        self.n = 0
        self.sums = np.zeros((2, len(CHANNELS)), dtype=np.int64)

    def add(self, pixels_per_channel: int, sums: np.ndarray) -> None:
        self.n += pixels_per_channel
        self.sums += sums

    def stats(self) -> dict[str, list[float]]:
        """Mean and std per channel on the 0..1 scale (std at least 1e-3)."""
        n = max(self.n, 1)
        mean = self.sums[0] / (n * 255.0)
        std = np.sqrt(np.maximum(self.sums[1] / (n * 255.0**2) - mean**2, 0.0))
        return {"mean": mean.tolist(), "std": np.maximum(std, 1e-3).tolist()}


def _write_rejected(out_dir: Path, rejected: list[Rejection]) -> None:
    with (out_dir / "rejected.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "reason"])
        writer.writerows([r.id, r.reason] for r in rejected)


def _read_rows(raw_dir: Path, rejected: list[Rejection]) -> tuple[list[LabelRow], list[LabelRow]]:
    check_raw_dir(raw_dir)
    rows, bad = read_train_csv(raw_dir / "train.csv")
    rejected.extend(bad)
    test_rows: list[LabelRow] = []
    if (raw_dir / "sample_submission.csv").is_file() and (raw_dir / "test").is_dir():
        test_rows, bad_test = read_submission_ids(raw_dir / "sample_submission.csv")
        rejected.extend(bad_test)
    if not rows:
        raise HpaTuneError(
            f"{raw_dir / 'train.csv'}: no usable rows (every row was rejected or the file is empty)"
        )
    return rows, test_rows


def prepare(
    raw_dir: Path,
    out_dir: Path,
    options: PrepareOptions = PrepareOptions(),
    progress: ProgressFn | None = None,
) -> PrepareResult:
    """Decode, split and shard a Kaggle-layout directory.

    The output is built in a staging directory beside ``out_dir`` and swapped in only when
    complete: until then, and after any failure, a previous output in ``out_dir`` is untouched.

    Args:
        raw_dir: holds ``train.csv`` and ``train/``; optionally ``sample_submission.csv`` and ``test/``.
        out_dir: receives ``manifest.json``, ``rejected.csv`` and ``size_*/`` shards.
        options: sizes, split fractions, seed, workers, strictness.
        progress: called as ``progress(done, total)`` while decoding.

    Raises:
        HpaTuneError: the directory is not a Kaggle layout, ``out_dir`` cannot be replaced
            safely, a split would be empty, ``strict`` and samples were rejected, or the disk
            beside ``out_dir`` filled up (saying how much the output needs).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    rejected: list[Rejection] = []
    rows, test_rows = _read_rows(raw_dir, rejected)
    check_output_dir(raw_dir, out_dir, options.sizes)
    splits = assign_splits(
        _multi_hot(rows), options.val_fraction, options.holdout_fraction, options.seed
    )
    _check_splits_filled(Counter(str(s) for s in splits), raw_dir / "train.csv", options, None)
    tasks = _tasks_for(rows, splits, raw_dir / "train", rejected)
    tasks += _tasks_for(test_rows, np.full(len(test_rows), TEST), raw_dir / "test", rejected)

    # A symlinked --out is replaced where it points; the link itself stays.
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    staged = staging_dir(target)
    free_at_start = shutil.disk_usage(staged).free
    try:
        manifest = _write_shards(staged, tasks, rejected, options, progress)
        if options.strict and rejected:
            raise _strict_error(out_dir, rejected)
        _check_splits_filled(Counter(manifest.splits), raw_dir / "train.csv", options, out_dir)
        manifest.source = str(raw_dir.resolve())
        manifest.test_ids = [r.id for r in test_rows]
        manifest.save(staged)
        swap_in(staged, target)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        needed = output_bytes_bound(len(tasks), options.sizes)
        raise no_space_error(staged.parent, needed, free_at_start) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return PrepareResult(manifest, rejected, out_dir)


def _check_splits_filled(
    counts: Counter[str], csv_path: Path, options: PrepareOptions, out_dir: Path | None
) -> None:
    """A search needs train samples, and val ones unless asked for none: say so here, not in ``run``."""
    wanted = (TRAIN, VAL) if options.val_fraction > 0 else (TRAIN,)
    empty = [name for name in wanted if not counts.get(name)]
    if not empty:
        return
    where = "after decoding" if out_dir is not None else "from the label rows"
    got = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no samples"
    kept = f"; {out_dir} left unchanged" if out_dir is not None else ""
    raise HpaTuneError(
        f"{csv_path}: too few usable samples {where}: the {' and '.join(empty)} split(s) would "
        f"be empty ({got}); add samples or change --val-fraction/--holdout-fraction{kept}"
    )


def _strict_error(out_dir: Path, rejected: list[Rejection]) -> HpaTuneError:
    listing = "; ".join(f"{r.id}: {r.reason}" for r in rejected[:20])
    more = f" (and {len(rejected) - 20} more)" if len(rejected) > 20 else ""
    return HpaTuneError(
        f"--strict: {len(rejected)} sample(s) rejected, nothing written "
        f"({out_dir} left unchanged): {listing}{more}"
    )


def _add_sample(
    writers: dict[tuple[str, int], ShardWriter],
    moments: dict[int, _ChannelMoments],
    out_dir: Path,
    task: _Task,
    decoded: _Decoded,
    options: PrepareOptions,
) -> np.ndarray:
    """Append one decoded sample to its (split, size) shards; returns its multi-hot labels."""
    sample, sums = decoded
    y = np.zeros(NUM_CLASSES, dtype=np.uint8)
    y[list(task.labels)] = 1
    for size, image in sample.images.items():
        key = (task.split, size)
        if key not in writers:
            writers[key] = ShardWriter(out_dir, task.split, size, options.shard_bytes)
        writers[key].add(task.id, image, y)
        if size in sums:
            moments[size].add(size * size, sums[size])
    return y


def _write_shards(
    out_dir: Path,
    tasks: list[_Task],
    rejected: list[Rejection],
    options: PrepareOptions,
    progress: ProgressFn | None,
) -> ShardManifest:
    """Decode ``tasks`` into shards under ``out_dir``; write ``rejected.csv``; return the manifest."""
    writers: dict[tuple[str, int], ShardWriter] = {}
    moments = {size: _ChannelMoments() for size in options.sizes}
    kept_labels: list[np.ndarray] = []
    kept_splits: list[str] = []
    resized = 0
    # A failure (a full disk, Ctrl-C) closes the open shard files and the decoding workers at
    # once, so the staging directory's space is given back when it is removed.
    try:
        with closing(_decoded(tasks, options)) as decoded:
            for done, (task, result) in enumerate(decoded, start=1):
                if isinstance(result, str):
                    rejected.append(Rejection(task.id, result))
                else:
                    resized += result[0].resized
                    kept_labels.append(
                        _add_sample(writers, moments, out_dir, task, result, options)
                    )
                    kept_splits.append(task.split)
                if progress:
                    progress(done, len(tasks))
        for writer in writers.values():
            writer.flush()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    _write_rejected(out_dir, rejected)
    split_arr = np.asarray(kept_splits, dtype=object)
    labels = np.stack(kept_labels) if kept_labels else np.zeros((0, NUM_CLASSES), np.uint8)
    return ShardManifest(
        class_names=list(class_names()),
        channel_order=list(CHANNELS),
        sizes=list(options.sizes),
        splits=dict(Counter(kept_splits)),
        class_counts=class_counts(labels, split_arr),
        channel_stats={str(size): m.stats() for size, m in moments.items()},
        shards=[s for w in writers.values() for s in w.shards],
        seed=options.seed,
        val_fraction=options.val_fraction,
        holdout_fraction=options.holdout_fraction,
        rejected=len(rejected),
        resized=resized,
        extra={"rejected_by_reason": dict(Counter(_reason_kind(r.reason) for r in rejected))},
    )


def _reason_kind(reason: str) -> str:
    """A short category of a rejection reason, for the summary."""
    for kind in (
        "is a path, not",
        "empty Id",
        "missing channel",
        "unreadable or truncated",
        "too large",
        "not UTF-8",
        "cannot decode",
        "duplicate Id",
        "empty Target",
        "outside 0..",
        "fields",
    ):
        if kind in reason:
            return (
                kind.replace("outside 0..", "label outside 0..27")
                .replace("fields", "malformed row")
                .replace("is a path, not", "Id is a path")
            )
    return "other"
