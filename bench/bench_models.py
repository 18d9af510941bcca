"""Training and inference images/s of every registered model, at its native size and at 64 px.

A training step is the recipe of ``engine.train_one_epoch`` without its F1 bookkeeping: forward
(optionally under bf16 autocast), weighted-BCE loss on float logits, ``zero_grad``, backward,
Adam step (``build_optimizer`` with the default ``TrialConfig``). Inference is a forward pass
under ``torch.inference_mode`` in eval mode. Inputs are random 4-channel (RGBY) images and random
0/1 targets for 28 classes, already on the device: data loading is not part of these figures.

Each measurement runs ``--warmup`` untimed steps, then timed steps until at least
``--min-steps`` steps and ``--min-seconds`` seconds (or ``--max-steps`` steps); images/s is the
batch size over the fastest step time (other processes on a shared machine only ever add time),
with the median step's figure beside it as a measure of that noise. On CUDA
every step ends with ``torch.cuda.synchronize()`` (a real training step syncs on ``loss.item()``
too). Every figure is also given relative to ``baseline_cnn`` at 64 px measured in the same run.

Run: ``python bench/bench_models.py [--device cpu|cuda] [--batch 16] [--bf16] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _machine import describe, machine_info

from hpa_tune.classes import NUM_CLASSES
from hpa_tune.models import create_model, list_models
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import build_optimizer
from hpa_tune.train.losses import create_loss

REFERENCE = ("baseline_cnn", 64)
SMALL_SIZE = 64


@dataclass(frozen=True)
class Timing:
    """Step-time policy of one measurement."""

    warmup: int
    min_steps: int
    min_seconds: float
    max_steps: int


@dataclass(frozen=True)
class ModelThroughput:
    """Images/s of one model at one size (fastest and median step), with the timed steps."""

    model: str
    size: int
    params_m: float
    train_ips: float
    train_ips_median: float
    infer_ips: float
    infer_ips_median: float
    train_steps: int
    infer_steps: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(step: Callable[[], None], device: torch.device, timing: Timing) -> list[float]:
    """Wall-clock seconds of each timed call of ``step``, after the warm-up calls."""
    for _ in range(timing.warmup):
        step()
    _sync(device)
    times: list[float] = []
    while len(times) < timing.max_steps and (
        len(times) < timing.min_steps or sum(times) < timing.min_seconds
    ):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure(
    name: str, size: int, batch: int, device: torch.device, bf16: bool, timing: Timing
) -> ModelThroughput:
    """Training and inference throughput of model ``name`` on ``size`` px random images."""
    model = create_model(name, in_chans=4, num_classes=NUM_CLASSES, image_size=size).to(device)
    optimizer = build_optimizer(model, TrialConfig(arch=name))
    loss_fn = create_loss("bce").to(device)
    x = torch.randn(batch, 4, size, size, device=device)
    y = (torch.rand(batch, NUM_CLASSES, device=device) < 0.1).float()

    def autocast() -> AbstractContextManager[object]:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def train_step() -> None:
        with autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), autocast():
            model(x)

    model.train()
    train = step_seconds(train_step, device, timing)
    model.eval()
    infer = step_seconds(infer_step, device, timing)
    return ModelThroughput(
        model=name,
        size=size,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        train_ips=batch / min(train),
        train_ips_median=batch / statistics.median(train),
        infer_ips=batch / min(infer),
        infer_ips_median=batch / statistics.median(infer),
        train_steps=len(train),
        infer_steps=len(infer),
    )


def markdown_table(results: list[ModelThroughput]) -> str:
    """Images/s (fastest step, median in brackets) and ratios to baseline_cnn at 64 px."""
    ref = next(r for r in results if (r.model, r.size) == REFERENCE)
    lines = [
        "| model | size | params (M) | train img/s (median) | train vs baseline@64 "
        "| inference img/s (median) | inference vs baseline@64 | timed steps (train/inf) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.size} | {r.params_m:.1f} "
            f"| {r.train_ips:,.1f} ({r.train_ips_median:,.1f}) | {r.train_ips / ref.train_ips:.3f} "
            f"| {r.infer_ips:,.1f} ({r.infer_ips_median:,.1f}) | {r.infer_ips / ref.infer_ips:.3f} "
            f"| {r.train_steps}/{r.infer_steps} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass")
    parser.add_argument("--models", nargs="+", help="default: every model in list_models()")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    timing = Timing(args.warmup, args.min_steps, args.min_seconds, args.max_steps)
    names = args.models or [info.name for info in list_models()]
    jobs = [REFERENCE] + [
        (info.name, size)
        for info in list_models()
        if info.name in names
        for size in sorted({info.native_size, SMALL_SIZE})
        if (info.name, size) != REFERENCE
    ]
    start = time.perf_counter()
    results = []
    for name, size in jobs:
        results.append(measure(name, size, args.batch, device, args.bf16, timing))
        print(f"  {name} @ {size}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    info = machine_info()
    threads = torch.get_num_threads()
    print(f"{describe(info)}\n")
    print(
        f"device {device}, {threads} torch CPU threads, batch {args.batch}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}; images/s = batch / fastest (median) step; "
        f"total {time.perf_counter() - start:.0f} s\n"
    )
    print(markdown_table(results))
    if args.json:
        report = {
            "machine": info,
            "device": str(device),
            "threads": threads,
            "batch": args.batch,
            "bf16": args.bf16,
            "timing": asdict(timing),
            "statistic": "batch / fastest step seconds (and / median step seconds)",
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
