"""BatchLoader on a CUDA device: the same batches as on the CPU, and how fast (needs a GPU).

On a GPU the loader gathers uint8 on the CPU, copies it over and converts there; this checks, on
random data, that every batch (RGBY plain; RGB shuffled and augmented) equals the CPU path's bit
for bit, then prints samples/s of an epoch on the device (synchronised) with one CPU thread.

Run: ``python bench/check_loader_cuda.py [--n 400] [--sizes 64 224]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data import loader as loader_module
from hpa_tune.data.loader import BatchLoader, SplitArrays

SETTINGS: list[dict[str, Any]] = [
    {"channels": "rgby"},
    {"channels": "rgb", "shuffle": True, "augment": True, "seed": 3},
]


def _epoch_seconds(loader: BatchLoader, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _x, _y in loader:
            pass
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, storage use count "
        f"available: {loader_module._storage_use_count is not None}"
    )
    rng = np.random.default_rng(0)
    for size in args.sizes:
        data = SplitArrays(
            np.array([f"s{i}" for i in range(args.n)], dtype=object),
            rng.integers(0, 256, (args.n, len(CHANNELS), size, size), dtype=np.uint8),
            (rng.random((args.n, NUM_CLASSES)) < 0.2).astype(np.uint8),
        )
        for kwargs in SETTINGS:
            cpu = BatchLoader(data, 64, **kwargs)
            gpu = BatchLoader(data, 64, device="cuda", **kwargs)
            same = all(
                torch.equal(x.cpu(), cx) and torch.equal(y.cpu(), cy)
                for (x, y), (cx, cy) in zip(gpu, cpu, strict=True)
            )
            seconds = _epoch_seconds(gpu)
            print(f"{size} px {kwargs}: identical to CPU {same}; {args.n / seconds:,.0f} samples/s")


if __name__ == "__main__":
    main()
