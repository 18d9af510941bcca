"""Peak memory of a search's driver and of each trial process as the prepared set grows.

The built-in sample (prepared at 64 px) is replicated into sets 1x, 2x and 4x its size (the
train and val shards listed k times in the manifest: the same bytes, so nothing else changes).
For each, ``hpa-tune run`` runs as a child process (2 trials at once, 1 epoch, baseline_cnn at
64 px, CPU, no refit) with a fresh node shard cache, while this script samples every 0.2 s the
memory of the driver and of every Ray trial process below it (``/proc/PID/status``: VmRSS,
RssAnon = private memory, RssFile = file-backed pages such as the mapped split; VmHWM = the
kernel's own peak RSS). Figures are peaks over the run.

Run: ``python bench/bench_search_memory.py [--scales 1 2 4] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from _machine import describe, machine_info

from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample
from hpa_tune.data.shards import ShardManifest

OUT = Path(__file__).resolve().parent / "out"
SIZE = 64
SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 2, "max_epochs": 1},
    "scheduler": {"type": "fifo"},
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
    "fixed": {"image_size": SIZE, "channels": "rgb", "arch": "baseline_cnn", "batch_size": 32},
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


def replicated(base: Path, k: int, out: Path) -> Path:
    """``base`` with its train and val shards at SIZE listed ``k`` times (copied under new names)."""
    manifest = ShardManifest.load(base)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for split in ("train", "val", "holdout"):
        for copy in range(k if split != "holdout" else 1):
            for i, shard in enumerate(manifest.shards_for(split, SIZE)):
                rel = f"size_{SIZE}/{split}-{copy:02d}{i:03d}.parquet"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(base / shard.path, out / rel)
                shards.append(replace(shard, path=rel))
    splits = {
        **manifest.splits,
        "train": manifest.splits["train"] * k,
        "val": manifest.splits["val"] * k,
    }
    counts = {
        **manifest.class_counts,
        "train": [c * k for c in manifest.class_counts["train"]],
        "val": [c * k for c in manifest.class_counts["val"]],
    }
    replace(manifest, sizes=[SIZE], shards=shards, splits=splits, class_counts=counts).save(out)
    return out


def _status_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0])
    return fields


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def watch(root: int, stop: threading.Event, peaks: dict[str, dict[str, Any]]) -> None:
    """Record per-process peaks of the driver (``root``) and its trial processes until ``stop``."""
    while not stop.is_set():
        for pid in _descendants(root):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                kind = "driver" if pid == root else None
                if kind is None and ("ImplicitFunc" in title or "_tune_trainable" in title):
                    kind = "trial"
                if kind is None:
                    continue
                status = _status_kb(pid)
            except OSError:
                continue
            entry = peaks.setdefault(str(pid), {"kind": kind})
            for key, kb in status.items():
                entry[key] = max(entry.get(key, 0), kb)
        stop.wait(0.2)


def measure(data: Path, work: Path) -> dict[str, Any]:
    """Run one search on ``data``; peaks (MiB) of the driver and of each trial process."""
    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    env = {
        **os.environ,
        "HPA_TUNE_SHARD_CACHE": str(work / "node-cache"),
        "HPA_TUNE_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "hpa_tune.cli",
        "run",
        str(space),
        "--data",
        str(data),
        "--storage",
        str(work / "runs"),
        "--name",
        "m",
        "--quiet",
        "--no-refit",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks: dict[str, dict[str, Any]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(proc.pid, stop, peaks))
    watcher.start()
    output = proc.communicate()[0].decode()
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"run failed:\n{output[-3000:]}")
    mib = {
        pid: {k: (v / 1024 if k != "kind" else v) for k, v in e.items()} for pid, e in peaks.items()
    }
    return {"seconds": time.perf_counter() - start, "processes": mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = ensure_builtin_sample()
    results = []
    with tempfile.TemporaryDirectory(dir=OUT if OUT.is_dir() else None) as tmp:
        for k in args.scales:
            data = replicated(base, k, Path(tmp) / f"x{k}")
            manifest = ShardManifest.load(data)
            split_mib = (
                (manifest.splits["train"] + manifest.splits["val"]) * 4 * SIZE * SIZE / 2**20
            )
            r = measure(data, Path(tmp) / f"work-x{k}")
            results.append(
                {
                    "scale": k,
                    "train": manifest.splits["train"],
                    "val": manifest.splits["val"],
                    "train_val_mib": split_mib,
                    **r,
                }
            )
            shutil.rmtree(data)
    print(f"{describe(machine_info())}\n")
    print(
        "| set | train+val samples | uint8 arrays at 64 px | driver peak RSS | trial peak RSS "
        "| trial peak private (RssAnon) | trial peak file-backed (RssFile) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        procs = r["processes"].values()
        driver = next(p for p in procs if p["kind"] == "driver")
        trials = [p for p in procs if p["kind"] == "trial"]

        def span(key: str, trials: list[dict[str, Any]] = trials) -> str:
            vals = sorted(p.get(key, 0) for p in trials)
            return " / ".join(f"{v:,.0f}" for v in vals) + " MiB"

        print(
            f"| {r['scale']}x | {r['train'] + r['val']:,} | {r['train_val_mib']:,.0f} MiB "
            f"| {driver['VmHWM']:,.0f} MiB | {span('VmHWM')} | {span('RssAnon')} | {span('RssFile')} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine_info(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
