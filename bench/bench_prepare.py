"""``prepare`` at N, 2N and 4N samples: peak memory (flat) and samples/s against a Pillow loop.

(a) Memory: each ``prepare`` runs in a fresh process (sizes 64 and 224 from 512 px sources, as on
    the Kaggle data); we record that process's peak RSS, its RSS after imports (the floor), and
    the largest decoding worker's peak RSS. With back-pressure between the decoding workers and
    the shard writers, and shards written as bounded row groups, the peak above the floor should
    not grow with the number of samples.
(b) Throughput: samples/s of ``prepare`` with 1 and 2 workers against the plain Pillow loop on
    one core (per sample: open the four channel PNGs, resize each to 64 and 224, stack) — the
    decoding work ``prepare`` cannot avoid; ``prepare`` adds writing Parquet, checksums and stats.

The sample (rendered by ``write_kaggle_sample``, 4N train images) is cached under ``bench/out/``;
the N and 2N sets are its first rows (``train.csv`` cut, ``train/`` linked). One run of each
figure, all in one invocation, so the ratios compare like with like on a busy machine.

Run: ``python bench/bench_prepare.py [--n 300] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe, machine_info
from PIL import Image

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.builtin_sample.render import write_kaggle_sample

OUT = Path(__file__).resolve().parent / "out"
SOURCE_SIZE = 512
SIZES = (64, 224)

# Runs in a fresh interpreter: prints peak RSS (self, largest child) and the floor after imports.
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from hpa_tune.data.prepare import PrepareOptions, prepare

def status_kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

raw, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def cpu_s():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

floor = status_kib("VmRSS")
start, cpu = time.perf_counter(), cpu_s()
result = prepare(raw, out, PrepareOptions(sizes=(64, 224), workers=workers))
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds": seconds,
    "cpu_seconds": cpu_s() - cpu,
    "samples": sum(result.manifest.splits.values()),
    "floor_mib": floor / 1024,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec.
    "peak_mib": status_kib("VmHWM") / 1024,
    "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def ensure_sample(n_total: int) -> Path:
    """The rendered Kaggle-layout sample of ``n_total`` train images (cached)."""
    raw = OUT / f"prepare-kaggle-n{n_total}"
    if not (raw / "train.csv").is_file():
        write_kaggle_sample(raw, n_total, NUM_CLASSES, size=SOURCE_SIZE, min_per_class=5)
    return raw


def first_rows(raw: Path, n: int) -> Path:
    """A Kaggle layout holding the first ``n`` rows of ``raw`` (its ``train/`` linked, no test)."""
    sub = OUT / f"{raw.name}-first{n}"
    sub.mkdir(parents=True, exist_ok=True)
    lines = (raw / "train.csv").read_text().splitlines()
    (sub / "train.csv").write_text("\n".join(lines[: n + 1]) + "\n")
    if not (sub / "train").exists():
        (sub / "train").symlink_to(raw / "train")
    return sub


def run_prepare(raw: Path, workers: int, tag: str) -> dict[str, Any]:
    """One ``prepare`` in a fresh process; its timing and memory figures."""
    out = OUT / f"prepared-{tag}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(raw), str(out), str(workers)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["samples_per_s"] = figures["samples"] / figures["seconds"]
    figures["samples_per_cpu_s"] = figures["samples"] / figures["cpu_seconds"]
    return figures


def pillow_loop(raw: Path, n: int) -> tuple[float, float]:
    """Samples per wall-clock and per CPU second of the plain decode loop (one thread)."""
    ids = [ln.split(",")[0] for ln in (raw / "train.csv").read_text().splitlines()[1 : n + 1]]
    start, cpu = time.perf_counter(), time.process_time()
    for sample_id in ids:
        planes: dict[int, list[np.ndarray]] = {s: [] for s in SIZES}
        for color in CHANNELS:
            with Image.open(raw / "train" / f"{sample_id}_{color}.png") as img:
                img.load()
                for s in SIZES:
                    planes[s].append(np.asarray(img.resize((s, s), Image.Resampling.BILINEAR)))
        for s in SIZES:
            np.stack(planes[s])
    return len(ids) / (time.perf_counter() - start), len(ids) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="N: the smallest set (samples)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    info = machine_info()
    print(describe(info))
    raw = ensure_sample(4 * args.n)
    sets = {k: first_rows(raw, k * args.n) for k in (1, 2, 4)}

    loop, loop_cpu = pillow_loop(sets[1], args.n)
    memory = {f"{k}N": run_prepare(sets[k], 1, f"{k}N-w1") for k in (1, 2, 4)}
    memory["4N, 2 workers"] = run_prepare(sets[4], 2, "4N-w2")
    print(f"\n(a) prepare peak RSS, sizes {SIZES} from {SOURCE_SIZE} px, N = {args.n}")
    print("| samples | workers | peak RSS MiB | floor MiB | peak - floor MiB | worker peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fig in memory.items():
        workers = 2 if "2 workers" in label else 1
        print(
            f"| {label.split(',')[0]} ({fig['samples']}) | {workers} | {fig['peak_mib']:.0f} | "
            f"{fig['floor_mib']:.0f} | {fig['peak_mib'] - fig['floor_mib']:.0f} | "
            f"{fig['worker_peak_mib']:.0f} |"
        )
    one, two = memory["4N"], memory["4N, 2 workers"]
    print(f"\n(b) samples/s at 4N ({4 * args.n}), baseline: Pillow loop on one core (N samples)")
    print("| what | samples/s (wall) | vs loop | samples per CPU-s | vs loop |")
    print("|---|---:|---:|---:|---:|")
    print(f"| Pillow loop, 1 core | {loop:.1f} | 1.00x | {loop_cpu:.1f} | 1.00x |")
    for label, fig in (("prepare --workers 1", one), ("prepare --workers 2", two)):
        wall, cpu = fig["samples_per_s"], fig["samples_per_cpu_s"]
        print(f"| {label} | {wall:.1f} | {wall / loop:.2f}x | {cpu:.1f} | {cpu / loop_cpu:.2f}x |")
    print(f"\nscaling, 2 workers vs 1 (wall): {two['samples_per_s'] / one['samples_per_s']:.2f}x")
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        result = {"machine": info, "n": args.n, "memory": memory, "pillow_loop_per_s": loop}
        result["pillow_loop_per_cpu_s"] = loop_cpu
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
