"""Where the time of ``bench_loader.py`` goes at one size, stage by stage, on one core.

Each stage is timed on its own (best of ``--repeats``, wall clock and CPU time) over the cached sample and shards of
``bench_loader.py``: the PNG loop's decode and resize; ``load_split``'s file read, sha256,
Parquet decode and copy into one array; and one epoch of float conversion (batch 64, RGBY), from
the memory-bandwidth floor through the conversion as it was written before (three full-size
temporaries per batch) to ``BatchLoader`` as it is now (converted a sample or a few at a time,
in cache, into recycled buffers), and with its buffer recycling switched off.

Run: ``python bench/profile_loader.py [--n 400] [--size 224] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from bench_loader import (
    BATCH_SIZE,
    ensure_prepared,
    ensure_sample,
    pin_to_one_core,
    timed_runs,
)
from PIL import Image

from hpa_tune.classes import CHANNELS
from hpa_tune.data import loader as loader_module
from hpa_tune.data.loader import BatchLoader, copy_images, load_split
from hpa_tune.data.shards import COMPRESSION, ShardManifest

PNG_SAMPLES = 64  # the decoded 512 px planes of this many samples are held in memory


def _report(title: str, stages: dict[str, Callable[[], object]], n: int, repeats: int) -> None:
    print(f"\n{title}\n\n| stage | µs / sample, wall | µs / sample, CPU | samples/s, wall |")
    print("|---|---:|---:|---:|")
    for name, run in stages.items():
        times = timed_runs(run, repeats)
        wall, cpu = min(times["wall"]), min(times["cpu"])
        print(f"| {name} | {wall / n * 1e6:,.0f} | {cpu / n * 1e6:,.0f} | {n / wall:,.0f} |")


def png_stages(files: list[list[str]], size: int) -> dict[str, Callable[[], object]]:
    """The PNG loop's two halves: decoding the four planes, and resizing them."""

    def decode() -> list[Image.Image]:
        planes = []
        for paths in files:
            for path in paths:
                with Image.open(path) as img:
                    img.load()
                    planes.append(img.copy())
        return planes

    decoded = decode()
    return {
        "open + decode 4 PNGs": decode,
        f"resize 4 planes 512 -> {size} (bilinear)": lambda: [
            p.resize((size, size), Image.Resampling.BILINEAR) for p in decoded
        ],
    }


def load_stages(root: Path, size: int, n: int) -> dict[str, Callable[[], object]]:
    """``load_split``'s stages, each over every shard of the split."""
    paths = [root / s.path for s in ShardManifest.load(root).shards_for("train", size)]
    blobs = [p.read_bytes() for p in paths]
    tables = [pq.read_table(pa.BufferReader(b)) for b in blobs]

    def copy_out() -> np.ndarray:
        # The loader's own copy step (one copy per shard, chunk by chunk).
        images = np.empty((n, len(CHANNELS), size, size), dtype=np.uint8)
        at = 0
        for table in tables:
            rows = table.num_rows
            copy_images(table.column("image"), images[at : at + rows].reshape(rows, -1))
            at += rows
        return images

    return {
        "read shard files (page cache)": lambda: [p.read_bytes() for p in paths],
        "sha256": lambda: [hashlib.sha256(b).hexdigest() for b in blobs],
        f"Parquet decode ({COMPRESSION} + Arrow)": lambda: [
            pq.read_table(pa.BufferReader(b)) for b in blobs
        ],
        "copy into one (N, 4, S, S) array": copy_out,
        "**load_split, all of the above**": lambda: load_split(root, "train", size),
    }


def _epoch(loader: BatchLoader) -> Callable[[], None]:
    def run() -> None:
        for _ in loader:  # holds one batch at a time, as a training loop does
            pass

    return run


def _without_recycling(loader: BatchLoader) -> Callable[[], None]:
    def run() -> None:
        saved = loader_module._storage_use_count
        loader_module._storage_use_count = None  # every batch gets new memory, as a fallback
        try:
            _epoch(loader)()
        finally:
            loader_module._storage_use_count = saved

    return run


def conversion_stages(root: Path, size: int) -> dict[str, Callable[[], object]]:
    """One epoch of float conversion (batch 64, RGBY, no shuffle), floor to loader."""
    arrays = load_split(root, "train", size)
    mean, std = ShardManifest.load(root).stats_for(size)
    loader = BatchLoader(arrays, BATCH_SIZE, channels="rgby", mean=mean, std=std)
    training = BatchLoader(
        arrays, BATCH_SIZE, channels="rgb", mean=mean, std=std, shuffle=True, augment=True
    )
    m = torch.tensor([v * 255 for v in mean]).view(1, -1, 1, 1)  # as BatchLoader builds them
    inv = torch.tensor([1 / (v * 255) for v in std]).view(1, -1, 1, 1)
    starts = range(0, len(arrays), BATCH_SIZE)
    uint8 = [torch.from_numpy(arrays.images[s : s + BATCH_SIZE]) for s in starts]
    before = [(x.float() - m) * inv for x in uint8]
    same = all(torch.equal(a, b) for (a, _), b in zip(loader, before, strict=True))
    print(f"\nBatchLoader's batches bit-identical to (x.float() - mean) * inv_std: {same}")
    out = torch.from_numpy(np.empty((BATCH_SIZE, len(CHANNELS), size, size), dtype=np.float32))

    def fill() -> None:
        for x in uint8:
            out[: len(x)].fill_(1.0)

    def copy() -> None:
        for x in uint8:
            out[: len(x)].copy_(x)

    def whole_batch_recycled() -> None:
        for x in uint8:
            out[: len(x)].copy_(x).sub_(m).mul_(inv)

    return {
        "floor: write the float32 output once (fill_, reused buffer)": fill,
        "floor: uint8 -> float32 copy, no normalisation (reused buffer)": copy,
        "before: (x.float() - mean) * inv_std, whole batch": lambda: [
            (x.float() - m) * inv for x in uint8
        ],
        "whole batch in place, new memory: x.float().sub_(mean).mul_(inv_std)": lambda: [
            x.float().sub_(m).mul_(inv) for x in uint8
        ],
        "whole batch in place, reused buffer": whole_batch_recycled,
        "BatchLoader epoch, recycling off (new NumPy memory per batch)": _without_recycling(loader),
        "**BatchLoader epoch (in cache, recycled buffers)**": _epoch(loader),
        "BatchLoader epoch, RGB shuffled + augmented": _epoch(training),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="as prepared")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    raw = ensure_sample(args.n)
    root = ensure_prepared(raw, args.n, tuple(sorted(set(args.sizes))))
    pin_to_one_core()
    ids = load_split(root, "train", args.size).ids[:PNG_SAMPLES]
    files = [[str(raw / "train" / f"{i}_{c}.png") for c in CHANNELS] for i in ids]
    _report("PNG loop", png_stages(files, args.size), len(files), args.repeats)
    _report("load_split", load_stages(root, args.size, args.n), args.n, args.repeats)
    _report("Float conversion, one epoch", conversion_stages(root, args.size), args.n, args.repeats)


if __name__ == "__main__":
    main()
