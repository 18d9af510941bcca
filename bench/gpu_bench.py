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
    "`bench/gpu_run.sh` (see bench/README.md)"
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
    # The same steps on one batch already on the device: the time without the data path. Its
    # share of the real epoch's time is the share of a step the GPU (not the loader) decides.
    fixed = [next(iter(train))] * len(train)
    _sync(dev)
    start = time.perf_counter()
    train_one_epoch(model, fixed, loss_fn, optimizer, cfg, 2, len(fixed), amp)
    _sync(dev)
    compute_share = (time.perf_counter() - start) / train_s
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
        "compute_share_of_step": compute_share,
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

    shards = ensure_builtin_sample(BuiltinSample(n_train=700, n_test=28, sizes=(224,)))
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
        rows.append(_search_row(gpus, trials, epochs, wall, done))
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
        "| infer img/s fast | ratio | GPU busy (compute share of step) plain / fast "
        "| peak GiB fast: measured / estimated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for arch, size in dict.fromkeys((r["arch"], r["size"]) for r in result["rows"]):
        if (arch, size, "plain_fp32") not in by or (arch, size, "fast") not in by:
            continue  # a pair cut short by the time limit
        p, f = by[arch, size, "plain_fp32"], by[arch, size, "fast"]
        busy = " / ".join(
            ("n/a" if r["gpu_busy_share"] is None else f"{r['gpu_busy_share']:.0%}")
            + (f" ({r['compute_share_of_step']:.0%})" if "compute_share_of_step" in r else "")
            for r in (p, f)
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


# --- Sections run one by one by bench/gpu_run.sh (``python -m bench.gpu_bench SECTION``) ---------
# Each writes OUT/SECTION.json after every row, so a section stopped by its time limit keeps the
# rows it finished. ``--device cpu`` runs the same code at tiny sizes (a rehearsal on a CPU).

THROUGHPUT_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121", "densenet161", "densenet169")
# (image size, batch, images per epoch) on CUDA; the batches are ones the spaces sample.
# On a CPU, resnet18 and densenet121 only, at 32 px: a rehearsal of the code path, not a figure.
THROUGHPUT_SIZES = {"cuda": ((224, 64, 768), (512, 16, 192)), "cpu": ((32, 4, 8),)}


def _dump(out: Path, name: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


def _gpu_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


def section_throughput(out: Path, device: str) -> dict[str, Any]:
    """Plain fp32 vs fast path, every ResNet/DenseNet, 224 then 512 px (the anchors' size first)."""
    result: dict[str, Any] = {"gpu": _gpu_name(device), "rows": [], "errors": []}
    for size, batch, n in THROUGHPUT_SIZES[device]:
        for arch in THROUGHPUT_ARCHS if device == "cuda" else THROUGHPUT_ARCHS[::3]:
            for fast in (False, True):
                try:
                    row = measure_arch(arch, size, fast, batch, n, device)
                except Exception as error:  # an OOM or CUDA error of one row: keep the others
                    result["errors"].append(f"{arch} {size}px fast={fast}: {error!r}"[:500])
                    row = None
                if row:
                    result["rows"].append(row)
                    print(json.dumps(row), flush=True)
                _dump(out, "throughput", result)
                if device == "cuda":
                    torch.cuda.empty_cache()
    return result


def _trainer(arch: str, size: int, batch: int, n: int, device: str, fraction: float, **cfg: Any):
    """A fast-path trial's model, loaders and step function, as the trainable builds them."""
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.engine import build_optimizer, train_one_epoch
    from hpa_tune.train.fast_path import prepare_model, resolve_fast_path, trial_loaders
    from hpa_tune.train.losses import create_loss
    from hpa_tune.train.trainable import build_model

    dev = torch.device(device)
    config = TrialConfig(arch=arch, image_size=size, batch_size=batch, fast_path="on", **cfg)
    fp = resolve_fast_path(config, dev, gpu_fraction=fraction)
    split = _split(n, size)
    train, val = trial_loaders(config, split, split, ([0.1] * 4, [0.2] * 4), dev, fp)
    model = prepare_model(build_model(config).to(dev), fp)
    loss_fn = create_loss("bce", torch.ones(28)).to(dev)
    optimizer = build_optimizer(model, config)
    amp = bool(fp.amp)

    def epoch(index: int) -> float:
        start = time.perf_counter()
        train_one_epoch(model, train, loss_fn, optimizer, config, index, len(train), amp)
        _sync(dev)
        return time.perf_counter() - start

    resident = sum(t.numel() * t.element_size() for t in _resident_tensors(train, val))
    return config, epoch, resident, amp


def section_compile(out: Path, device: str) -> dict[str, Any]:
    """``torch.compile`` off vs on: first-epoch time (the compile) against steady-state epochs."""
    arch, size, batch, n, epochs = (
        ("resnet18", 224, 64, 1024, 3) if device == "cuda" else ("baseline_cnn", 32, 8, 32, 2)
    )
    result: dict[str, Any] = {"gpu": _gpu_name(device), "rows": [], "errors": []}
    if device == "cpu":  # the rehearsal traces with dynamo but skips inductor (minutes on a CPU)
        import functools

        torch.compile = functools.partial(torch.compile, backend="eager")  # type: ignore[assignment]
        result["backend"] = "eager (CPU rehearsal)"
    for compiled in (False, True):
        try:
            _, epoch, _, _ = _trainer(arch, size, batch, n, device, 1.0, compile=compiled)
            first = epoch(0)
            steady = min(epoch(i) for i in range(1, epochs))
        except Exception as error:  # no compiler/triton on the machine: say so, keep going
            result["errors"].append(f"compile={compiled}: {error!r}"[:500])
            continue
        steps = n // batch
        result["rows"].append(
            {
                "arch": arch,
                "size": size,
                "batch": batch,
                "compile": compiled,
                "first_epoch_s": first,
                "steady_epoch_s": steady,
                "steady_images_per_s": n / steady,
                "steps_per_epoch": steps,
            }
        )
        _dump(out, "compile", result)
    if len(result["rows"]) == 2:
        off, on = result["rows"]
        gain_per_step = (off["steady_epoch_s"] - on["steady_epoch_s"]) / off["steps_per_epoch"]
        cost = (on["first_epoch_s"] - on["steady_epoch_s"]) - (
            off["first_epoch_s"] - off["steady_epoch_s"]
        )
        result["compile_cost_s"] = cost
        result["steady_speedup"] = off["steady_epoch_s"] / on["steady_epoch_s"]
        result["break_even_steps"] = cost / gain_per_step if gain_per_step > 0 else None
    _dump(out, "compile", result)
    return result


# (arch, size, batch, images per trial) of the packed configurations, per device.
PACKING_CONFIGS = {
    "cuda": (("baseline_cnn", 64, 128, 4096), ("resnet18", 224, 64, 1024)),
    "cpu": (("baseline_cnn", 32, 8, 32),),
}


def _packing_worker(arch: str, size: int, batch: int, n: int, device: str, fraction: float):
    """One packed trial, kept warm between rounds: warms up and prints ``ready``; then for each
    line ``SECONDS`` on stdin trains that long and prints its images/s, its peak allocated and
    reserved memory in that round and its memory estimate (JSON); an empty line ends it."""
    from hpa_tune.train.gpu_memory import CUDA_CONTEXT_BYTES, estimate_trial_peak

    config, epoch, resident, amp = _trainer(arch, size, batch, n, device, fraction)
    epoch(0)
    estimate = estimate_trial_peak(config, resident, amp=amp).peak - CUDA_CONTEXT_BYTES
    cuda = device == "cuda"
    print("ready", flush=True)
    index = 1
    for line in sys.stdin:
        if not line.strip():
            break
        seconds = float(line)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            epoch(index)
            images, index = images + n, index + 1
        row = {
            "images_per_s": images / (time.perf_counter() - start),
            "peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_reserved": torch.cuda.max_memory_reserved() if cuda else None,
            "estimate_without_context": estimate,
        }
        print(json.dumps(row), flush=True)


class _Workers:
    """``k`` warm packed-trial processes (``_packing_worker``), started together."""

    def __init__(self, config: tuple[str, int, int, int], device: str, k: int) -> None:
        arch, size, batch, n = config
        code = (
            "from bench.gpu_bench import _packing_worker; "
            f"_packing_worker({arch!r}, {size}, {batch}, {n}, {device!r}, {1 / k})"
        )
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(k)
        ]
        for p in self.procs:
            if self._line(p) != "ready":
                raise RuntimeError(f"a packed worker failed to start (exit {p.wait()})")

    @staticmethod
    def _line(p: subprocess.Popen) -> str:
        assert p.stdout is not None
        return p.stdout.readline().strip()

    def round(self, k: int, seconds: float) -> list[dict[str, Any]]:
        """The first ``k`` workers train ``seconds`` at once; their JSON rows."""
        for p in self.procs[:k]:
            assert p.stdin is not None
            p.stdin.write(f"{seconds}\n")
            p.stdin.flush()
        lines = [self._line(p) for p in self.procs[:k]]
        if not all(lines):
            raise RuntimeError("a packed worker died")
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None and not p.stdin.closed:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _refused_packing(device: str) -> dict[str, Any]:
    """The smallest resnet50 224 px batch whose estimate the packing check refuses at
    ``gpus_per_trial`` 0.125, and the batch below it, each trained in a process capped at 1/8 of
    the GPU (``set_per_process_memory_fraction``): the refused one should run out of memory."""
    from hpa_tune.errors import HpaTuneError
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.gpu_memory import check_packing, estimate_trial_peak

    total = torch.cuda.get_device_properties(0).total_memory
    share, accepted, refused = 0.125, None, None
    for batch in (32, 64, 96, 128, 192, 256, 384, 512):
        cfg = TrialConfig(arch="resnet50", image_size=224, batch_size=batch, fast_path="on")
        data = 2 * 2 * batch * 4 * 224 * 224  # train + val arrays of 2 batches, uint8
        estimate = estimate_trial_peak(cfg, data, amp=True)
        try:
            check_packing([estimate], share, total)
            accepted = (batch, estimate.peak)
        except HpaTuneError:
            refused = (batch, estimate.peak)
            break
    result: dict[str, Any] = {"gpus_per_trial": share, "gpu_bytes": total, "runs": []}
    for verdict, pick in (("accepted", accepted), ("refused", refused)):
        if pick is None:
            continue
        code = (
            "import torch; torch.cuda.set_per_process_memory_fraction(0.125);"
            "from bench.gpu_bench import _trainer;"
            f"_trainer('resnet50', 224, {pick[0]}, {pick[0] * 2}, 'cuda', 0.125)[1](0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        result["runs"].append(
            {
                "estimate": verdict,
                "batch": pick[0],
                "estimated_peak_gib": pick[1] / 2**30,
                "fits": done.returncode == 0,
                "out_of_memory": "OutOfMemoryError" in done.stderr,
                "stderr_tail": done.stderr[-300:],
            }
        )
    return result


def section_packing(out: Path, device: str) -> dict[str, Any]:
    """1, 2, 4, 8 trials per GPU of a 64 px and a 224 px configuration: aggregate images/s against
    one trial, each trial's measured peak against its estimate; a packing the estimate refuses."""
    ks, seconds = ((1, 2, 4, 8), 3.0) if device == "cuda" else ((1, 2), 1.0)
    result: dict[str, Any] = {"gpu": _gpu_name(device), "rows": [], "errors": []}
    for config in PACKING_CONFIGS[device]:
        # Warm processes for the largest packing; round k times the first k of them (the others
        # idle, holding only their memory). Each sized its data as a trial of 1/max(ks) would.
        try:
            workers = _Workers(config, device, max(ks))
        except Exception as error:
            result["errors"].append(f"{config}: {error!r}"[:500])
            continue
        try:
            for k in ks:
                rows = workers.round(k, seconds)
                row = {
                    "arch": config[0],
                    "size": config[1],
                    "batch": config[2],
                    "trials": k,
                    "gpus_per_trial": 1 / k,
                    "aggregate_images_per_s": sum(w["images_per_s"] for w in rows),
                    "per_trial": rows,
                }
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                _dump(out, "packing", result)
        except Exception as error:
            result["errors"].append(f"{config}: {error!r}"[:500])
        finally:
            workers.close()
    if device == "cuda":
        try:
            result["refused"] = _refused_packing(device)
        except Exception as error:
            result["errors"].append(f"refused packing: {error!r}"[:500])
    _dump(out, "packing", result)
    return result


def _search_sample(device: str) -> Any:
    """The built-in sample the search runs on: rendered and prepared at 224 px on CUDA; on a CPU
    a small one at 32 px (rendering is the slow part there)."""
    from hpa_tune.data.builtin_sample.prepared import BuiltinSample

    if device == "cuda":
        return BuiltinSample(n_train=700, n_test=28, sizes=(224,))  # the test set holds every class
    return BuiltinSample(n_train=280, n_test=28, sizes=(32,), min_per_class=4)


def section_sample(out: Path, device: str) -> dict[str, Any]:
    """Render and prepare the search's sample (gpu_run.sh runs it beside the other sections)."""
    from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample

    start = time.perf_counter()
    shards = ensure_builtin_sample(_search_sample(device))
    return {"shards": str(shards), "seconds": time.perf_counter() - start}


def section_search(out: Path, device: str) -> dict[str, Any]:
    """``hpa-tune run`` of the resnet space at 224 px on the built-in sample rendered at 224 px,
    8 trials at ``--gpus-per-trial 0.25`` (4 per GPU), then its refit; the wall time per trial."""
    cuda = device == "cuda"
    size, trials, epochs, gpus = (224, 8, 2, "0.25") if cuda else (32, 2, 1, "0")
    sample = section_sample(out, device)
    shards, render_s = sample["shards"], sample["seconds"]
    command = [
        sys.executable, "-m", "hpa_tune.cli", "run", "search_spaces/resnet_space.yaml",
        "--data", str(shards), "--storage", os.environ.get("GPU_RUN_STORAGE", str(out / "runs")),
        "--name", "gpu-search", "--num-samples", str(trials), "--max-epochs", str(epochs), "--gpus-per-trial", gpus, "--cpus-per-trial", "2",
        "--set", "pretrained=none", "--set", "freeze=none", "--set", f"image_size={size}",
        "--progress", "plain",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - start
    (out / "search.log").write_text(done.stdout + done.stderr)
    result = {
        "gpu": _gpu_name(device),
        "command": " ".join(command),
        "sample_render_s": render_s,
        "rows": [_search_row(float(gpus), trials, epochs, wall, done)],
    }
    _dump(out, "search", result)
    return result


def markdown_compile(result: dict[str, Any]) -> str:
    """The compile section's table and its break-even point."""
    lines = [
        "| model | px | batch | compile | first epoch s | steady epoch s | steady img/s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in result.get("rows", []):
        lines.append(
            f"| {r['arch']} | {r['size']} | {r['batch']} | {'on' if r['compile'] else 'off'} | "
            f"{r['first_epoch_s']:.1f} | {r['steady_epoch_s']:.2f} | "
            f"{r['steady_images_per_s']:,.0f} |"
        )
    if "compile_cost_s" in result:
        even = result["break_even_steps"]
        lines += [
            "",
            f"compile costs {result['compile_cost_s']:.1f} s, steady speed-up "
            f"{result['steady_speedup']:.2f}x; pays back after "
            + ("never" if even is None else f"{even:,.0f} steps"),
        ]
    return "\n".join(lines)


def markdown_packing(result: dict[str, Any]) -> str:
    """The packing section's table: aggregate rate vs one trial, peak vs estimate per trial."""
    lines = [
        "| model | px | trials | gpus/trial | aggregate img/s | vs one | peak reserved GiB (max) "
        "| estimate GiB | estimate / peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one: dict[tuple[str, int], float] = {}
    for r in result.get("rows", []):
        key = (r["arch"], r["size"])
        one.setdefault(key, r["aggregate_images_per_s"])
        peaks = [w["peak_reserved"] for w in r["per_trial"] if w["peak_reserved"] is not None]
        estimate = r["per_trial"][0]["estimate_without_context"]
        peak = max(peaks) if peaks else None
        lines.append(
            f"| {r['arch']} | {r['size']} | {r['trials']} | {r['gpus_per_trial']:g} | "
            f"{r['aggregate_images_per_s']:,.0f} | {r['aggregate_images_per_s'] / one[key]:.2f}x | "
            + ("n/a" if peak is None else f"{peak / 2**30:.2f}")
            + f" | {estimate / 2**30:.2f} | "
            + ("n/a" if not peak else f"{estimate / peak:.2f}")
            + " |"
        )
    for run in result.get("refused", {}).get("runs", []):
        lines.append(
            f"\nresnet50 224 px batch {run['batch']} (estimate {run['estimated_peak_gib']:.1f} GiB, "
            f"{run['estimate']} at gpus_per_trial 0.125) in 1/8 of the GPU: "
            + ("fits" if run["fits"] else "out of memory" if run["out_of_memory"] else "failed")
        )
    return "\n".join(lines)


def report(out: Path, device: str) -> dict[str, Any]:
    """OUT/summary.md and OUT/gpu.json from the sections' JSON files (whatever of them exists),
    the steps' exit codes and seconds ($GPU_RUN_STEPS, tab-separated) and the machine's
    description ($GPU_RUN_ENV), which gpu_run.sh writes outside OUT."""
    parts: dict[str, Any] = {}
    for name in ("throughput", "compile", "packing", "search"):
        path = out / f"{name}.json"
        parts[name] = json.loads(path.read_text()) if path.exists() else {"skipped": "not run"}
    status = Path(os.environ.get("GPU_RUN_STEPS", out / "steps.tsv"))
    env = Path(os.environ.get("GPU_RUN_ENV", out / "env.txt"))
    steps = (
        [line.split("\t") for line in status.read_text().splitlines()] if status.exists() else []
    )
    render = {
        "throughput": markdown_throughput,
        "compile": markdown_compile,
        "packing": markdown_packing,
        "search": markdown_search,
    }
    text = [f"# GPU run ({device})", "", "| step | exit | seconds |", "|---|---:|---:|"]
    text += [f"| {name} | {rc} | {secs} |" for name, rc, secs in steps]
    for name, part in parts.items():
        text += ["", f"## {name}", ""]
        if "skipped" in part or not part.get("rows"):
            text.append(f"*{part.get('skipped', 'no rows')}*")
        else:
            text.append(render[name](part))
        text += [f"- error: {e}" for e in part.get("errors", [])]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    machine = env.read_text() if env.exists() else None
    _dump(out, "gpu", {"device": device, "steps": steps, "machine": machine, **parts})
    print((out / "summary.md").read_text())
    return {}


SECTIONS_CLI = {
    "throughput": section_throughput,
    "compile": section_compile,
    "packing": section_packing,
    "search": section_search,
    "sample": section_sample,
    "report": report,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.gpu_bench SECTION [--device cuda|cpu] [--out DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.gpu_bench")
    parser.add_argument("section", choices=sorted(SECTIONS_CLI))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("bench/out/gpu"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{args.section}: no CUDA device (use --device cpu to rehearse)", file=sys.stderr)
        return 2
    os.environ.setdefault("HPA_TUNE_OFFLINE", "1")
    result = SECTIONS_CLI[args.section](args.out, args.device)
    print(f"{args.section}: done ({args.out})")
    return (
        1 if result.get("errors") or any(r.get("exit_code") for r in result.get("rows", [])) else 0
    )


if __name__ == "__main__":
    raise SystemExit(main())


def _search_row(
    gpus: float, trials: int, epochs: int, wall: float, done: subprocess.CompletedProcess
) -> dict[str, Any]:
    """One row of a GPU search table: the budget, its wall time and how the command ended."""
    return {
        "gpus_per_trial": gpus,
        "trials": trials,
        "max_epochs": epochs,
        "wall_s": wall,
        "trials_per_hour": trials * 3600 / wall,
        "exit_code": done.returncode,
        "output_tail": (done.stdout + done.stderr)[-2000:],
    }
