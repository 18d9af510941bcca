"""Samples/s on one core: a plain Pillow PNG loop against the Parquet-shard loader.

Both sides deliver the same thing: normalised float32 RGBY batches of 64 samples, (64, 4, S, S).

(a) PNG loop: per sample, open the four 512 px channel PNGs with Pillow, resize each to S
    (bilinear, as ``prepare`` does), stack into (4, S, S) uint8; per batch, stack, convert to a
    float tensor and normalise.
(b) Shard loader: ``load_split`` (read, sha256, zstd/Parquet decode, copy into one array) plus
    one epoch of ``BatchLoader`` — what the first epoch of a trial costs; and, separately, one
    epoch of ``BatchLoader`` over data already in memory — what every later epoch costs.

The sample (rendered by ``write_kaggle_sample``) and its prepared shards are cached under
``bench/out/``. Rendering and preparing use every core; the measurements then run pinned to one
core with one torch and one Arrow thread. Each figure is the best (shortest) of ``--repeats``
runs, or of as many as fill one second when runs are shorter: other processes on a shared
machine only ever add time.

Run: ``python bench/bench_loader.py [--n 400] [--sizes 64 224] [--repeats 3] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow
import torch
from _machine import describe, machine_info
from PIL import Image

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.loader import BatchLoader, load_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.sample import write_kaggle_sample
from hpa_tune.data.shards import ShardManifest
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
    """Shards of ``raw`` at ``sizes``, every labelled sample in ``train`` (cached)."""
    root = OUT / f"prepared-n{n}-{'-'.join(map(str, sizes))}"
    try:
        manifest = ShardManifest.load(root)
        if manifest.splits.get("train") == n and set(sizes) <= set(manifest.sizes):
            return root
    except HpaTuneError:  # not prepared yet, or by another format version: prepare again
        pass
    prepare(raw, root, PrepareOptions(sizes=sizes, val_fraction=0.0, holdout_fraction=0.0))
    return root


def _normalise(x: np.ndarray, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    return (torch.from_numpy(x).float() - mean) * inv_std


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


def best_seconds(
    run: Callable[[], object], repeats: int, min_total: float = MIN_TOTAL_SECONDS
) -> tuple[float, list[float]]:
    """Shortest and all wall-clock times of at least ``repeats`` calls of ``run``.

    Calls go on until they add up to ``min_total`` seconds (at most 100 calls), so that
    millisecond-long runs get enough tries for their best to be meaningful.
    """
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_total and len(times) < 100):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), times


def _drain(batches: Iterator[object]) -> None:
    for _ in batches:
        pass


def measure_size(raw: Path, root: Path, size: int, repeats: int) -> dict[str, object]:
    """Samples/s of the PNG loop and the shard loader at one size, with their ratios."""
    mean, std = ShardManifest.load(root).stats_for(size)
    shape = (1, len(CHANNELS), 1, 1)
    mean_t = torch.tensor([m * 255 for m in mean]).view(shape)
    inv_std_t = torch.tensor([1 / (s * 255) for s in std]).view(shape)
    arrays = load_split(root, "train", size)
    files = [[raw / "train" / f"{id_}_{c}.png" for c in CHANNELS] for id_ in arrays.ids]
    n = len(arrays)

    def png_loop() -> None:
        _drain(png_batches(files, size, mean_t, inv_std_t))

    def loader_epoch() -> None:
        _drain(iter(BatchLoader(arrays, BATCH_SIZE, channels="rgby", mean=mean, std=std)))

    def loader_first_epoch() -> None:
        fresh = load_split(root, "train", size)
        _drain(iter(BatchLoader(fresh, BATCH_SIZE, channels="rgby", mean=mean, std=std)))

    png_s, png_all = best_seconds(png_loop, repeats)
    first_s, first_all = best_seconds(loader_first_epoch, repeats)
    load_s, load_all = best_seconds(lambda: load_split(root, "train", size), repeats)
    epoch_s, epoch_all = best_seconds(loader_epoch, repeats)
    return {
        "size": size,
        "samples": n,
        "png_loop_sps": n / png_s,
        "loader_load_and_epoch_sps": n / first_s,
        "loader_load_split_sps": n / load_s,
        "loader_epoch_in_memory_sps": n / epoch_s,
        "ratio_load_and_epoch": png_s / first_s,
        "ratio_epoch_in_memory": png_s / epoch_s,
        "seconds": {
            "png_loop": png_all,
            "loader_load_and_epoch": first_all,
            "loader_load_split": load_all,
            "loader_epoch_in_memory": epoch_all,
        },
    }


def markdown_table(results: list[dict[str, object]]) -> str:
    """The results as a Markdown table (samples/s; ratios against the PNG loop)."""
    lines = [
        "| size | (a) PNG loop | (b) load_split + 1 epoch | (b)/(a) | load_split only "
        "| epoch, data in memory | in memory/(a) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} px | {r['png_loop_sps']:,.0f} | {r['loader_load_and_epoch_sps']:,.0f} "
            f"| **{r['ratio_load_and_epoch']:,.1f}x** | {r['loader_load_split_sps']:,.0f} "
            f"| {r['loader_epoch_in_memory_sps']:,.0f} | **{r['ratio_epoch_in_memory']:,.1f}x** |"
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
        f"1 Arrow thread; samples/s, best of >= {args.repeats} runs; setup {setup_s:.0f} s\n"
    )
    print(markdown_table(results))
    if args.json:
        report = {
            "machine": info,
            "n": args.n,
            "batch_size": BATCH_SIZE,
            "repeats": args.repeats,
            "statistic": "best",
            "threads": 1,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
