"""Samples/s on one core: a plain Pillow PNG loop against the Parquet-shard loader.

Both sides deliver the same thing: normalised float32 RGBY batches of 64 samples, (64, 4, S, S).

(a) PNG loop: per sample, open the four 512 px channel PNGs with Pillow, resize each to S
    (bilinear, as ``prepare`` does), stack into (4, S, S) uint8; per batch, stack, convert to a
    float tensor and normalise it in place.
(b) Shard loader: ``load_split`` (read, sha256, LZ4/Parquet decode, copy into one array) plus
    one epoch of ``BatchLoader`` — what the first epoch of a trial costs; and, separately, one
    epoch of ``BatchLoader`` over data already in memory — what every later epoch costs. For
    information, also an in-memory epoch as a trial trains: RGB, shuffled and augmented.
(c) Warm node cache: ``cached_split`` of a split this node has already decoded (read the
    manifest, map the uint8 file) plus one epoch of ``BatchLoader`` over the mapping — what the
    first epoch of every trial but the first on a node costs (``data.node_cache``).

The sample (rendered by ``write_kaggle_sample``) and its prepared shards are cached under
``bench/out/``. Rendering and preparing use every core; the measurements then run pinned to one
core with one torch and one Arrow thread. Each figure is the best (shortest) of ``--repeats``
runs, or of as many as fill one second when runs are shorter: other processes on a shared
machine only ever add time. Every run is timed by wall clock and by the process's CPU time (user
+ system), which leaves out time spent waiting while other processes had the core.

Run: ``python bench/bench_loader.py [--n 400] [--sizes 64 224] [--repeats 3] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import torch
from _machine import describe, machine_info
from PIL import Image

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.builtin_sample.render import write_kaggle_sample
from hpa_tune.data.loader import BatchLoader, load_split
from hpa_tune.data.node_cache import NodeCache, cached_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import COMPRESSION, ShardManifest
from hpa_tune.errors import HpaTuneError

OUT = Path(__file__).resolve().parent / "out"
BATCH_SIZE = 64
SOURCE_SIZE = 512
MIN_TOTAL_SECONDS = 1.0


def ensure_sample(n: int) -> Path:
    """The rendered Kaggle-layout sample of ``n`` train images (cached)."""
    raw = OUT / f"kaggle-n{n}"
    if not (raw / "train.csv").is_file():
        # write_kaggle_sample renames a finished directory into place, so train.csv means complete.
        min_per_class = min(20, n // NUM_CLASSES)
        write_kaggle_sample(raw, n, NUM_CLASSES, size=SOURCE_SIZE, min_per_class=min_per_class)
    return raw


def ensure_prepared(raw: Path, n: int, sizes: tuple[int, ...]) -> Path:
    """Shards of ``raw`` at ``sizes``, every labelled sample in ``train`` (cached per codec)."""
    root = OUT / f"prepared-n{n}-{'-'.join(map(str, sizes))}-{COMPRESSION}"
    try:
        manifest = ShardManifest.load(root)
        if manifest.splits.get("train") == n and set(sizes) <= set(manifest.sizes):
            return root
    except HpaTuneError:  # not prepared yet, or by another format version: prepare again
        pass
    prepare(raw, root, PrepareOptions(sizes=sizes, val_fraction=0.0, holdout_fraction=0.0))
    return root


def _normalise(x: np.ndarray, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    # In place: one float allocation per batch rather than three (BENCHMARKS.md, section 1.2).
    return torch.from_numpy(x).float().sub_(mean).mul_(inv_std)


def png_batches(
    files: list[list[Path]], size: int, mean: torch.Tensor, inv_std: torch.Tensor
) -> Iterator[torch.Tensor]:
    """(a): decode and resize every sample's PNGs, yield normalised float batches."""
    for start in range(0, len(files), BATCH_SIZE):
        samples = []
        for paths in files[start : start + BATCH_SIZE]:
            planes = []
            for path in paths:
                with Image.open(path) as img:
                    planes.append(np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)))
            samples.append(np.stack(planes))
        yield _normalise(np.stack(samples), mean, inv_std)


def timed_runs(
    run: Callable[[], object], repeats: int, min_total: float = MIN_TOTAL_SECONDS
) -> dict[str, list[float]]:
    """Wall-clock and CPU seconds of each of at least ``repeats`` calls of ``run``.

    CPU seconds are the process's user + system time: on a shared machine they leave out the time
    the process waited for the core while others ran on it. Calls go on until their wall-clock
    times add up to ``min_total`` seconds (at most 100 calls), so that millisecond-long runs get
    enough tries for their best to be meaningful.
    """
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    while len(times["wall"]) < repeats or (
        sum(times["wall"]) < min_total and len(times["wall"]) < 100
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        times["cpu"].append(time.process_time() - cpu)
        times["wall"].append(time.perf_counter() - wall)
    return times


def _drain(batches: Iterator[object]) -> None:
    for _ in batches:
        pass


def measure_size(raw: Path, root: Path, size: int, repeats: int) -> dict[str, Any]:
    """Samples/s of the PNG loop and the shard loader at one size, by wall clock and CPU time."""
    mean, std = ShardManifest.load(root).stats_for(size)
    shape = (1, len(CHANNELS), 1, 1)
    mean_t = torch.tensor([m * 255 for m in mean]).view(shape)
    inv_std_t = torch.tensor([1 / (s * 255) for s in std]).view(shape)
    arrays = load_split(root, "train", size)
    files = [[raw / "train" / f"{id_}_{c}.png" for c in CHANNELS] for id_ in arrays.ids]
    n = len(arrays)

    def png_loop() -> None:
        _drain(png_batches(files, size, mean_t, inv_std_t))

    def loader_first_epoch() -> None:
        fresh = load_split(root, "train", size)
        _drain(iter(BatchLoader(fresh, BATCH_SIZE, channels="rgby", mean=mean, std=std)))

    # Later epochs of a trial reuse its loader (and so the loader's recycled batch buffers).
    loader = BatchLoader(arrays, BATCH_SIZE, channels="rgby", mean=mean, std=std)
    training = BatchLoader(
        arrays, BATCH_SIZE, channels="rgb", mean=mean, std=std, shuffle=True, augment=True
    )

    def training_epoch() -> None:
        training.set_epoch(training.epoch + 1)
        _drain(iter(training))

    cache = NodeCache(OUT / "node-cache", 10**12)
    cached_split(root, "train", size, cache)  # decoded once on this node, outside the timing

    def warm_cache_first_epoch() -> None:
        mapped = cached_split(root, "train", size, cache)
        _drain(iter(BatchLoader(mapped, BATCH_SIZE, channels="rgby", mean=mean, std=std)))

    runs = {
        "png_loop": png_loop,
        "loader_load_and_epoch": loader_first_epoch,
        "loader_load_split": lambda: load_split(root, "train", size),
        "loader_epoch_in_memory": lambda: _drain(iter(loader)),
        "training_epoch": training_epoch,
        "warm_cache_and_epoch": warm_cache_first_epoch,
    }
    seconds = {key: timed_runs(run, repeats) for key, run in runs.items()}
    result: dict[str, Any] = {"size": size, "samples": n, "seconds": seconds}
    for clock in ("wall", "cpu"):
        best = {key: min(times[clock]) for key, times in seconds.items()}
        result[clock] = {
            **{f"{key}_sps": n / s for key, s in best.items()},
            "ratio_load_and_epoch": best["png_loop"] / best["loader_load_and_epoch"],
            "ratio_epoch_in_memory": best["png_loop"] / best["loader_epoch_in_memory"],
            "ratio_warm_cache_and_epoch": best["png_loop"] / best["warm_cache_and_epoch"],
        }
    return result


def markdown_table(results: list[dict[str, Any]], clock: str) -> str:
    """The ``clock`` ("wall" or "cpu") figures as a Markdown table: samples/s and ratios to (a)."""
    lines = [
        "| size | (a) PNG loop | (b) load_split + 1 epoch | (b)/(a) | load_split only "
        "| epoch, data in memory | in memory/(a) | in memory, RGB shuffled + augmented "
        "| (c) warm node cache + 1 epoch | (c)/(a) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f = r[clock]
        lines.append(
            f"| {r['size']} px | {f['png_loop_sps']:,.0f} | {f['loader_load_and_epoch_sps']:,.0f} "
            f"| **{f['ratio_load_and_epoch']:,.1f}x** | {f['loader_load_split_sps']:,.0f} "
            f"| {f['loader_epoch_in_memory_sps']:,.0f} | **{f['ratio_epoch_in_memory']:,.1f}x** "
            f"| {f['training_epoch_sps']:,.0f} | {f['warm_cache_and_epoch_sps']:,.0f} "
            f"| **{f['ratio_warm_cache_and_epoch']:,.1f}x** |"
        )
    return "\n".join(lines)


def pin_to_one_core() -> int:
    """Run this process on its first allowed CPU with one torch and one Arrow thread."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    return core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=400, help="samples (512 px, 4 PNGs each)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sizes = tuple(sorted(set(args.sizes)))

    start = time.perf_counter()
    raw = ensure_sample(args.n)
    root = ensure_prepared(raw, args.n, sizes)
    setup_s = time.perf_counter() - start
    core = pin_to_one_core()
    results = [measure_size(raw, root, size, args.repeats) for size in sizes]
    info = machine_info()
    print(f"{describe(info)}\n")
    print(
        f"{args.n} samples, batch {BATCH_SIZE}, RGBY float32; pinned to CPU {core}, 1 torch / "
        f"1 Arrow thread; {COMPRESSION} shards; samples/s, best of >= {args.repeats} runs; "
        f"setup {setup_s:.0f} s\n"
    )
    print("By wall clock:\n")
    print(markdown_table(results, "wall"))
    print("\nBy CPU time (user + system) of the process:\n")
    print(markdown_table(results, "cpu"))
    if args.json:
        report = {
            "machine": info,
            "n": args.n,
            "batch_size": BATCH_SIZE,
            "repeats": args.repeats,
            "statistic": "best",
            "clocks": {"wall": "time.perf_counter", "cpu": "time.process_time"},
            "threads": 1,
            "compression": COMPRESSION,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
