"""What a low-resolution rung knows: resolution as a fidelity, measured as BENCHMARKS 5.2 did epochs.

For each seed, ``--n`` random configurations of ``search_spaces/all_space.yaml`` pinned to
``baseline_cnn`` (as 5.2 pins it, without the space's known-good first point) each train twice on
the built-in sample, ``--epochs`` epochs, without Ray:

- (a) *full*: 64 px every epoch;
- (b) *progressive*: the size schedule the fidelity ``image_size: [32, 64]`` gives with ASHA grace
  ``--grace`` and reduction factor 3 (``hpa_tune.train.size_schedule``): 32 px up to the first rung,
  64 px after, continuing with the same weights and optimiser.

Per epoch k of each variant: Spearman of the trials' val macro F1 at k with (a)'s final best (what
an ASHA rung at (size, k) would know of the trial's full-size quality), and the pixel-weighted
compute up to k (an epoch at size s costs (s/64)^2 of a 64 px epoch). Then: does progressive
resizing cost final quality (mean final full-size best of (b) against (a)), and does (b)'s final
best rank the trials as (a)'s does. Correlations are per seed, then averaged over seeds.

    python bench/rung_correlation.py --seeds 0 1 --n 10 --epochs 6 --grace 2 \\
        --json bench/results/rung_correlation.json --md bench/results/rung_correlation.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._machine import describe, machine_info, write_outputs  # noqa: E402
from bench.search_efficiency import METRIC, spearman  # noqa: E402

SPACE = "search_spaces/all_space.yaml"
SIZES = (32, 64)  # the built-in sample's prepared sizes; the last is the full size
REDUCTION_FACTOR = 3


def _commit() -> str:
    run = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return run.stdout.strip()


def pixel_compute(sizes: list[int], full_size: int) -> list[float]:
    """Cumulative compute after each epoch, in full-size epochs (an epoch at s costs (s/full)^2)."""
    out, total = [], 0.0
    for size in sizes:
        total += (size / full_size) ** 2
        out.append(total)
    return out


def full_size_best(curve: list[float], sizes: list[int], full_size: int) -> float:
    """A trial's best score over its full-size epochs (what the fidelity ranks trials by)."""
    return max(v for v, s in zip(curve, sizes, strict=True) if s == full_size)


def rung_correlations(curves: list[list[float]], finals: list[float]) -> list[float]:
    """Per epoch k (1-based, index k-1): Spearman of the trials' scores at k with ``finals``."""
    epochs = min(len(c) for c in curves)
    return [spearman([c[k] for c in curves], finals) for k in range(epochs)]


def summarise_seed(trials: list[dict[str, Any]], full_size: int) -> dict[str, Any]:
    """One seed's figures from its trials (each with ``full`` and ``progressive`` curves/sizes)."""
    full = [t["full"]["scores"] for t in trials]
    prog = [t["progressive"]["scores"] for t in trials]
    sizes = trials[0]["progressive"]["sizes"]
    final_full = [max(c) for c in full]
    final_prog = [full_size_best(c, sizes, full_size) for c in prog]
    return {
        "full_vs_full_final": rung_correlations(full, final_full),
        "progressive_vs_full_final": rung_correlations(prog, final_full),
        "progressive_vs_own_final": rung_correlations(prog, final_prog),
        "final_best_full": statistics.mean(final_full),
        "final_best_progressive": statistics.mean(final_prog),
        "final_spearman": spearman(final_prog, final_full),
        "progressive_wins": sum(p > f for p, f in zip(final_prog, final_full, strict=True)),
        "n": len(trials),
    }


def _mean_lists(lists: list[list[float]]) -> list[float]:
    return [statistics.mean(values) for values in zip(*lists, strict=True)]


def summarise(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of every per-seed figure (lists element-wise)."""
    seeds = list(per_seed.values())
    out: dict[str, Any] = {}
    for key, value in seeds[0].items():
        if isinstance(value, list):
            out[key] = _mean_lists([s[key] for s in seeds])
        else:
            out[key] = statistics.mean(s[key] for s in seeds)
    return out


def _configs(seed: int, n: int, epochs: int) -> list[tuple[dict[str, Any], Any]]:
    """``n`` random configurations of the pinned space (``preview_configs``, the run's sampler)."""
    from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample
    from hpa_tune.search.planning import RunOptions, plan_run
    from hpa_tune.search.space import preview_configs

    options = RunOptions(
        space_path=Path(SPACE),
        max_epochs=epochs,
        seed=seed,
        overrides={"arch": "baseline_cnn", "image_size": SIZES[-1]},
        progress="none",
    )
    plan = plan_run(options, ensure_builtin_sample(), builtin_sample=True)
    spec = plan.spec.model_copy(update={"points_to_evaluate": []})
    return preview_configs(spec, plan.record.constants, n=n, seed=seed)


def _train(cfg: Any, data: Any) -> dict[str, Any]:
    """Every epoch's score, size and wall seconds of one training of ``cfg``."""
    from hpa_tune.train.trainable import run_epochs

    scores, sizes, seconds = [], [], []
    start = time.perf_counter()
    for outcome in run_epochs(cfg, data):
        scores.append(float(outcome.metrics[METRIC]))
        sizes.append(int(outcome.metrics["image_size"]))
        seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
    return {"scores": scores, "sizes": sizes, "seconds": seconds}


def run_seed(seed: int, n: int, epochs: int, grace: int, data: Any, log: Any) -> list[dict]:
    """Both variants of each of the seed's ``n`` configurations."""
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.size_schedule import size_schedule

    schedule = size_schedule(list(SIZES), grace, REDUCTION_FACTOR, epochs)
    trials = []
    for i, (params, cfg) in enumerate(_configs(seed, n, epochs)):
        progressive = TrialConfig(**{**cfg.model_dump(), "size_schedule": schedule})
        trial = {
            "params": params,
            "full": _train(cfg, data),
            "progressive": _train(progressive, data),
        }
        trials.append(trial)
        log(
            f"  seed {seed} config {i + 1}/{n}: full {trial['full']['scores']} "
            f"progressive {trial['progressive']['scores']}"
        )
    return trials


def _row(name: str, values: list[float], fmt: str = "{:.2f}") -> str:
    return f"| {name} | " + " | ".join(fmt.format(v) for v in values) + " |"


def markdown(result: dict[str, Any]) -> str:
    """The rung table (means over seeds) and the final-quality table (per seed and mean)."""
    s, setup = result["summary"], result["setup"]
    epochs, full = setup["epochs"], SIZES[-1]
    prog_sizes = setup["progressive_sizes"]
    ks = list(range(1, epochs + 1))
    lines = [
        f"Spearman with the trial's final best of (a) (64 px every epoch), mean over seeds "
        f"{setup['seeds']}, {setup['n']} configurations per seed; compute in 64 px epochs.",
        "",
        "| epoch k | " + " | ".join(map(str, ks)) + " |",
        "|---|" + "---:|" * epochs,
        _row("(a) size", [full] * epochs, "{}"),
        _row("(a) Spearman(score at k, (a) final best)", s["full_vs_full_final"]),
        _row("(a) compute to k", pixel_compute([full] * epochs, full), "{:.2f}"),
        _row("(b) size", prog_sizes, "{}"),
        _row("(b) Spearman(score at k, (a) final best)", s["progressive_vs_full_final"]),
        _row("(b) Spearman(score at k, (b) final full-size best)", s["progressive_vs_own_final"]),
        _row("(b) compute to k", pixel_compute(prog_sizes, full), "{:.2f}"),
        "",
        "| seed | mean final best (a) | mean final 64 px best (b) | (b) − (a) "
        "| configs where (b) > (a) | Spearman((b) final, (a) final) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [*result["per_seed"].items(), ("mean", s)]
    for seed, r in rows:
        diff = r["final_best_progressive"] - r["final_best_full"]
        wins = r["progressive_wins"]
        lines.append(
            f"| {seed} | {r['final_best_full']:.4f} | {r['final_best_progressive']:.4f} | "
            f"{diff:+.4f} | {wins:g} / {r['n']:g} | {r['final_spearman']:.2f} |"
        )
    sec = result["seconds_per_epoch"]
    lines += [
        "",
        "Mean wall seconds per epoch (train + val, one thread, loaded machine): "
        + ", ".join(f"{size} px {v:.1f} s" for size, v in sec.items())
        + ".",
    ]
    return "\n".join(lines)


def seconds_per_epoch(per_seed_trials: dict[int, list[dict[str, Any]]]) -> dict[int, float]:
    """Mean wall seconds of an epoch at each size, over every training."""
    by_size: dict[int, list[float]] = {}
    for trials in per_seed_trials.values():
        for t in trials:
            for variant in ("full", "progressive"):
                for size, sec in zip(t[variant]["sizes"], t[variant]["seconds"], strict=True):
                    by_size.setdefault(size, []).append(sec)
    return {size: statistics.mean(v) for size, v in sorted(by_size.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n", type=int, default=10, help="configurations per seed")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--grace", type=int, default=2, help="ASHA grace period (rf 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)

    import torch

    from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample
    from hpa_tune.train.size_schedule import size_at_epoch, size_schedule
    from hpa_tune.train.trial_data import load_trial_data

    torch.set_num_threads(args.threads)
    commit = _commit()  # at the start: the code the runs use
    start = time.perf_counter()
    data = load_trial_data(ensure_builtin_sample(), list(SIZES))
    schedule = size_schedule(list(SIZES), args.grace, REDUCTION_FACTOR, args.epochs)
    setup = {
        "space": SPACE,
        "overrides": {"arch": "baseline_cnn", "image_size": SIZES[-1]},
        "points_to_evaluate": "none",
        "seeds": args.seeds,
        "n": args.n,
        "epochs": args.epochs,
        "grace_period": args.grace,
        "reduction_factor": REDUCTION_FACTOR,
        "size_schedule": [list(e) for e in schedule],
        "progressive_sizes": [
            size_at_epoch(schedule, k, SIZES[-1]) for k in range(1, args.epochs + 1)
        ],
        "metric": METRIC,
        "threads": args.threads,
    }
    command = "python bench/rung_correlation.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    trials: dict[int, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        trials[seed] = run_seed(seed, args.n, args.epochs, args.grace, data, print)
    per_seed = {seed: summarise_seed(t, SIZES[-1]) for seed, t in trials.items()}
    info = machine_info()
    result = {
        "machine": info,
        "commit": commit,
        "command": command,
        "wall_s": time.perf_counter() - start,
        "setup": setup,
        "summary": summarise(per_seed),
        "per_seed": per_seed,
        "seconds_per_epoch": seconds_per_epoch(trials),
        "trials": trials,
    }
    table = markdown(result)
    write_outputs(
        args.json,
        args.md,
        result,
        f"{describe(info)}\n\ncommit {commit}: `{command}` ({result['wall_s']:.0f} s)\n\n{table}\n",
    )


if __name__ == "__main__":
    main()
