"""GPU sections of the benchmark: trial throughput (plain fp32 vs fast path), packed trials, and a
real Ray Tune search. Each returns ``{"skipped": reason}`` when this machine has no CUDA device.

Throughput is end to end for a trial's inner loop: batches come from the trial's own loaders
(``BatchLoader`` on the plain path; ``DeviceArrayLoader`` on the fast path) over a synthetic
uint8 split in memory, and each step is ``engine.train_one_epoch``'s (forward, loss, backward,
Adam step, F1 bookkeeping). Inference is ``engine.predict`` over the same split.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARCHS_QUICK = [("baseline_cnn", 64), ("resnet18", 224), ("densenet121", 224)]
ARCHS_FULL = [
    ("baseline_cnn", 64),
    *[(a, s) for s in (224, 512) for a in ("resnet18", "densenet121", "densenet161")],
]
PACKED = [1, 2, 4, 8]
NO_GPU = (
    "not yet measured: needs a GPU session (no CUDA device on this machine). Command: "
    "`python -m bench --full --sections gpu --json bench/out/gpu.json`"
)


def _split(n: int, size: int, seed: int = 0) -> Any:
    from hpa_tune.classes import CHANNELS, NUM_CLASSES
    from hpa_tune.data.loader import SplitArrays

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, len(CHANNELS), size, size), dtype=np.uint8)
    labels = (rng.random((n, NUM_CLASSES)) < 0.1).astype(np.uint8)
    return SplitArrays(np.arange(n).astype(str).astype(object), images, labels)


class _BusySampler:
    """The GPU's utilisation (NVML, via ``torch.cuda.utilization``) sampled every 50 ms."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception:  # no NVML binding: the share stays unknown
                return

    def __enter__(self) -> _BusySampler:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def share(self) -> float | None:
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_arch(
    arch: str, size: int, fast: bool, batch: int, n: int, device: str = "cuda"
) -> dict[str, Any]:
    """Train and inference images/s of one architecture on one path (the second epoch is timed).

    ``device="cpu"`` runs the same code without the CUDA-only figures (a smoke test of the bench).
    """
    from hpa_tune.train.build import build_model
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.engine import build_optimizer, predict, train_one_epoch
    from hpa_tune.train.fast_path import prepare_model, resolve_fast_path, trial_loaders
    from hpa_tune.train.gpu_memory import CUDA_CONTEXT_BYTES, estimate_trial_peak
    from hpa_tune.train.losses import create_loss

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    cfg = TrialConfig(
        arch=arch, image_size=size, batch_size=batch, fast_path="on" if fast else "off"
    )
    fp = resolve_fast_path(cfg, dev)
    split = _split(n, size)
    stats = ([0.1] * 4, [0.2] * 4)
    train, val = trial_loaders(cfg, split, split, stats, dev, fp)
    model = prepare_model(build_model(cfg).to(dev), fp)
    loss_fn = create_loss("bce", torch.ones(28)).to(dev)
    optimizer = build_optimizer(model, cfg)
    amp = fp.amp if fast else False  # the plain path is measured in fp32
    train_one_epoch(model, train, loss_fn, optimizer, cfg, 0, len(train), amp)  # warm-up
    _sync(dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with _BusySampler(cuda) as busy:
        start = time.perf_counter()
        train_one_epoch(model, train, loss_fn, optimizer, cfg, 1, len(train), amp)
        _sync(dev)
        train_s = time.perf_counter() - start
    peak_allocated = torch.cuda.max_memory_allocated() if cuda else 0
    resident = sum(t.numel() * t.element_size() for t in _resident_tensors(train, val))
    # The estimate without the CUDA context, which the allocator's figure does not include.
    estimate = estimate_trial_peak(cfg, resident, amp=bool(amp)).peak - CUDA_CONTEXT_BYTES
    predict(model, val, loss_fn, amp)
    _sync(dev)
    start = time.perf_counter()
    predict(model, val, loss_fn, amp)
    _sync(dev)
    infer_s = time.perf_counter() - start
    return {
        "arch": arch,
        "size": size,
        "path": "fast" if fast else "plain_fp32",
        "batch": batch,
        "train_images_per_s": n / train_s,
        "infer_images_per_s": n / infer_s,
        "gpu_busy_share": busy.share(),
        "peak_allocated_gib": peak_allocated / 2**30,
        "estimated_peak_gib": estimate / 2**30,
    }


def _resident_tensors(*loaders: Any) -> list[torch.Tensor]:
    """The device-resident arrays of fast-path loaders (none for the others)."""
    return [
        t
        for loader in loaders
        for t in (getattr(loader, "images", None), getattr(loader, "labels", None))
        if isinstance(t, torch.Tensor)
    ]


def measure_throughput(full: bool) -> dict[str, Any]:
    """Section 3a: every architecture on both paths."""
    if not torch.cuda.is_available():
        return {"skipped": NO_GPU}
    rows = []
    for arch, size in ARCHS_FULL if full else ARCHS_QUICK:
        batch = 256 if size <= 64 else (64 if size <= 224 else 16)
        n = {64: 8192, 224: 2048, 512: 512}[size] if full else {64: 4096, 224: 1024, 512: 256}[size]
        for fast in (False, True):
            rows.append(measure_arch(arch, size, fast, batch, n))
            torch.cuda.empty_cache()
    return {"gpu": torch.cuda.get_device_name(0), "rows": rows}


def _packed_worker(seconds: float) -> None:
    """One packed trial's inner loop (baseline_cnn, 64 px, fast path); prints images/s."""
    from hpa_tune.train.build import build_model
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.engine import build_optimizer, train_one_epoch
    from hpa_tune.train.fast_path import prepare_model, resolve_fast_path, trial_loaders
    from hpa_tune.train.losses import create_loss

    device = torch.device("cuda")
    cfg = TrialConfig(image_size=64, batch_size=128, fast_path="on")
    fp = resolve_fast_path(cfg, device, gpu_fraction=0.125)
    split = _split(4096, 64)
    train, _ = trial_loaders(cfg, split, split, ([0.1] * 4, [0.2] * 4), device, fp)
    model = prepare_model(build_model(cfg).to(device), fp)
    loss_fn = create_loss("bce", torch.ones(28)).to(device)
    optimizer = build_optimizer(model, cfg)
    train_one_epoch(model, train, loss_fn, optimizer, cfg, 0, len(train), True)
    images, start, epoch = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        train_one_epoch(model, train, loss_fn, optimizer, cfg, epoch, len(train), True)
        images, epoch = images + len(split), epoch + 1
    torch.cuda.synchronize()
    print(json.dumps({"images_per_s": images / (time.perf_counter() - start)}))


def measure_packed(seconds: float) -> dict[str, Any]:
    """Section 3b: aggregate images/s of 1, 2, 4 and 8 trials sharing one GPU (one process each)."""
    if not torch.cuda.is_available():
        return {"skipped": NO_GPU}
    rows = []
    code = f"from bench.gpu_bench import _packed_worker; _packed_worker({seconds})"
    for k in PACKED:
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            for _ in range(k)
        ]
        rates = [
            json.loads(p.communicate()[0].strip().splitlines()[-1])["images_per_s"] for p in procs
        ]
        rows.append({"trials": k, "aggregate_images_per_s": sum(rates), "per_trial": rates})
    return {"gpu": torch.cuda.get_device_name(0), "rows": rows}


def measure_gpu_search(out: Path, trials: int, epochs: int) -> dict[str, Any]:
    """Section 4: ``hpa-tune run`` of the densenet space at 224 px on a rendered HPA-like sample,
    one trial per GPU and two per GPU; wall time and trials/hour."""
    if not torch.cuda.is_available():
        return {"skipped": NO_GPU}
    from hpa_tune.data.builtin_sample.prepared import BuiltinSample, ensure_builtin_sample

    shards = ensure_builtin_sample(BuiltinSample(n_train=700, n_test=20, sizes=(224,)))
    rows = []
    for gpus in (1.0, 0.5):
        name = f"gpu-search-{gpus:g}"
        command = [
            sys.executable, "-m", "hpa_tune.cli", "run", "search_spaces/densenet_space.yaml",
            "--data", str(shards), "--storage", str(out), "--name", name,
            "--num-samples", str(trials), "--max-epochs", str(epochs),
            "--gpus-per-trial", f"{gpus:g}", "--cpus-per-trial", "2",
            "--set", "pretrained=none", "--set", "freeze=none", "--quiet", "--no-refit",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        wall = time.perf_counter() - start
        rows.append(
            {
                "gpus_per_trial": gpus,
                "trials": trials,
                "max_epochs": epochs,
                "wall_s": wall,
                "trials_per_hour": trials * 3600 / wall,
                "exit_code": done.returncode,
                "output_tail": (done.stdout + done.stderr)[-2000:],
            }
        )
    return {"gpu": torch.cuda.get_device_name(0), "command": " ".join(command), "rows": rows}


def markdown_throughput(result: dict[str, Any]) -> str:
    """Section 3a's table: both paths side by side, with the fast/plain ratio."""
    if "skipped" in result:
        return f"*{result['skipped']}*"
    by = {(r["arch"], r["size"], r["path"]): r for r in result["rows"]}
    lines = [
        f"GPU: {result['gpu']}",
        "",
        "| model | px | train img/s fp32 plain | train img/s fast | ratio | infer img/s fp32 plain "
        "| infer img/s fast | ratio | GPU busy plain / fast | peak GiB fast: measured / estimated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for arch, size in dict.fromkeys((r["arch"], r["size"]) for r in result["rows"]):
        p, f = by[arch, size, "plain_fp32"], by[arch, size, "fast"]
        busy = "/".join(
            "n/a" if r["gpu_busy_share"] is None else f"{r['gpu_busy_share']:.0%}" for r in (p, f)
        )
        lines.append(
            f"| {arch} | {size} | {p['train_images_per_s']:,.0f} | {f['train_images_per_s']:,.0f} | "
            f"{f['train_images_per_s'] / p['train_images_per_s']:.2f}x | "
            f"{p['infer_images_per_s']:,.0f} | {f['infer_images_per_s']:,.0f} | "
            f"{f['infer_images_per_s'] / p['infer_images_per_s']:.2f}x | {busy} | "
            f"{f['peak_allocated_gib']:.1f} / {f['estimated_peak_gib']:.1f} |"
        )
    return "\n".join(lines)


def markdown_packed(result: dict[str, Any]) -> str:
    """Section 3b's table."""
    if "skipped" in result:
        return f"*{result['skipped']}*"
    first = result["rows"][0]["aggregate_images_per_s"]
    lines = [
        f"GPU: {result['gpu']}",
        "",
        "| trials on one GPU | aggregate train img/s | vs one trial |",
        "|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['trials']} | {r['aggregate_images_per_s']:,.0f} | "
            f"{r['aggregate_images_per_s'] / first:.2f}x |"
        )
    return "\n".join(lines)


def markdown_search(result: dict[str, Any]) -> str:
    """Section 4's table."""
    if "skipped" in result:
        return f"*{result['skipped']}*"
    lines = [
        f"GPU: {result['gpu']}",
        "",
        "| gpus_per_trial | trials | max epochs | wall s | trials/hour | exit code |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['gpus_per_trial']:g} | {r['trials']} | {r['max_epochs']} | {r['wall_s']:.0f} | "
            f"{r['trials_per_hour']:.1f} | {r['exit_code']} |"
        )
    return "\n".join(lines)
