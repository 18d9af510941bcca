"""What the shard codec costs ``load_split`` on one core: file size, sha256, decode, the lot.

Rewrites the train shard of ``bench_loader.py``'s prepared sample (400 samples) at each size with
each codec, with and without Parquet dictionary encoding, as ``ShardWriter`` writes it otherwise
(one row group), under ``bench/out/codecs/``; then times, interleaved round by round so that load
from other processes falls on every codec alike: sha256 of the file, the Parquet decode, and
read + sha256 + decode + copy into one (N, 4, S, S) array (``load_split``'s work).

Run: ``python bench/bench_codecs.py [--n 400] [--sizes 64 224] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _machine import describe, machine_info
from bench_loader import OUT, ensure_prepared, ensure_sample, pin_to_one_core

from hpa_tune.classes import CHANNELS
from hpa_tune.data.shards import ShardManifest

CODECS = [("zstd", True), ("zstd", False), ("lz4", True), ("lz4", False), ("none", False)]


def _load(path: Path, n: int, size: int) -> np.ndarray:
    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    column = pq.read_table(pa.BufferReader(data)).column("image").combine_chunks()
    flat = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=n * len(CHANNELS) * size**2)
    images = np.empty((n, len(CHANNELS), size, size), dtype=np.uint8)
    images[:] = flat.reshape(n, len(CHANNELS), size, size)
    return images


def measure_size(root: Path, size: int, rounds: int) -> None:
    """Print one Markdown table of the codecs at ``size``."""
    (shard,) = ShardManifest.load(root).shards_for("train", size)
    table = pq.read_table(root / shard.path)
    n = table.num_rows
    stages: dict[tuple[str, bool], dict[str, Callable[[], object]]] = {}
    sizes: dict[tuple[str, bool], int] = {}
    for codec, dictionary in CODECS:
        path = OUT / "codecs" / f"{size}-{codec}-dict{int(dictionary)}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table, path, compression=codec, use_dictionary=dictionary, row_group_size=1024
        )
        data = path.read_bytes()
        sizes[codec, dictionary] = len(data)
        stages[codec, dictionary] = {
            "sha256": lambda d=data: hashlib.sha256(d).hexdigest(),
            "decode": lambda d=data: pq.read_table(pa.BufferReader(d)),
            "load": lambda p=path: _load(p, n, size),
        }
    times = {key: {stage: [] for stage in s} for key, s in stages.items()}
    for _ in range(rounds):
        for key, s in stages.items():
            for stage, run in s.items():
                start = time.perf_counter()
                run()
                times[key][stage].append(time.perf_counter() - start)
    print(f"\n{size} px, {n} samples; µs / sample, best / median of {rounds} rounds\n")
    print("| codec | dictionary | MB | sha256 | Parquet decode | read + sha256 + decode + copy |")
    print("|---|---|---:|---:|---:|---:|")
    for key, stage_times in times.items():
        cells = " | ".join(
            f"{min(t) / n * 1e6:,.0f} / {np.median(t) / n * 1e6:,.0f}" for t in stage_times.values()
        )
        print(f"| {key[0]} | {'yes' if key[1] else 'no'} | {sizes[key] / 1e6:.1f} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sizes = tuple(sorted(set(args.sizes)))
    root = ensure_prepared(ensure_sample(args.n), args.n, sizes)
    pin_to_one_core()
    print(describe(machine_info()))
    for size in sizes:
        measure_size(root, size, args.rounds)


if __name__ == "__main__":
    main()
