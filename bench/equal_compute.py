"""Search + refit against the space's default configuration trained alone for the same compute.

What a user buys with ``hpa-tune run`` is compute turned into a model. The fair opponent is not
a hand CNN but the space's own known-good default (its first ``points_to_evaluate``) trained for
as many epochs as the search and the refit spent together. For each data seed:

1. ``bench/foreign_data.py`` renders Kaggle-layout data nobody tuned on; ``hpa-tune prepare``
   shards it (reused from WORK when present, as ``bench/vs_hand.py`` does).
2. **search arm**: ``hpa-tune run SPACE --num-samples N --max-epochs E``. Its compute is every
   trial-epoch in ``history.csv`` plus the epochs its refit retrained (0 for a member that reused
   a trial's checkpoint), each epoch weighted by (its image size / the full size)^2 when a space
   varies the resolution.
3. **default arm**: the same space with every parameter fixed at the default point, one trial of
   as many epochs as the search arm spent (rounded up), its refit reusing that trial's checkpoint
   (``refit_epochs_factor: 1``), so it spends the same compute on one configuration.
4. **warm arm** (with ``--warm-size S``): a cheap earlier study of the same space at S px
   (``--set image_size=S --no-refit``, ``--warm-samples`` trials), then ``hpa-tune run SPACE
   --warm-start EARLIER`` with ``--warm-search-samples`` trials and its refit. Its compute is both
   studies' pixel-weighted trial-epochs plus its refit's, so it is set against the search arm (a
   cold study) and the default arm at about the same compute.

Both arms choose everything on val and are scored once on the holdout
(``refit/metrics.json``'s ``holdout_macro_f1_tuned``). Use data seeds the space's defaults were
not chosen on (the shipped defaults were compared on seeds 0-4; this bench's default seeds are
10-14).

    python bench/equal_compute.py --work /tmp/eqc --seeds 10 11 12 13 14 \\
        --json bench/results/equal_compute.json --md bench/results/equal_compute.md
    python bench/equal_compute.py --work /tmp/eqw --label ws --sizes 32 64 --warm-size 32 ...
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._machine import write_seed_bench  # noqa: E402
from bench.vs_hand import _commit, add_seed_arguments, hpa_tune_run, product_run, seed_shards  # noqa: E402
from hpa_tune.search.default_point import default_only  # noqa: E402
from hpa_tune.search.space import load_space  # noqa: E402


def search_compute(exp: Path, full_size: int) -> float:
    """Trial-epochs the search and its refit (if it ran) spent, each weighted by
    (size / full_size)^2."""
    total = 0.0
    with (exp / "history.csv").open() as f:
        for row in csv.DictReader(f):
            size = float(row.get("image_size") or full_size)
            total += (size / full_size) ** 2
    ensemble = exp / "refit" / "ensemble.json"
    if not ensemble.is_file():  # a --no-refit study
        return total
    members = json.loads(ensemble.read_text())["members"]
    for member in members:
        if member.get("reused_trial_checkpoint"):
            continue
        cfg = json.loads((exp / "refit" / member["dir"] / "config.json").read_text())
        total += _config_compute(cfg, full_size)
    return total


def _config_compute(cfg: dict[str, Any], full_size: int) -> float:
    """Pixel-weighted epochs of one training run of ``cfg`` (its size schedule if it has one)."""
    schedule = cfg.get("size_schedule")
    if not schedule:
        return cfg["max_epochs"] * (cfg["image_size"] / full_size) ** 2
    total, start = 0.0, 0
    for last_epoch, size in schedule:
        end = min(int(last_epoch), cfg["max_epochs"])
        total += max(end - start, 0) * (size / full_size) ** 2
        start = end
    return total + max(cfg["max_epochs"] - start, 0) * (schedule[-1][1] / full_size) ** 2


def default_space(space_path: Path, out: Path) -> tuple[Path, int]:
    """The space reduced to its default point (``hpa-tune run --default-only``'s reduction,
    ``hpa_tune.search.default_point``), written to ``out``: one trial, refit on that trial's
    checkpoint, at the full size. Returns the written path and that size."""
    spec = default_only(load_space(space_path))
    spec = spec.model_copy(update={"description": f"{spec.description} (default point only)"})
    out.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return out, int(spec.fixed.get("image_size", 64))


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per-seed holdout macro F1 of both arms, their compute and the difference; then the means."""
    out = [
        "| seed | compute (epochs) | search + refit | default alone | search - default | winner |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s, d = r["search"], r["default"]
        out.append(
            f"| {r['seed']} | {r['compute']:.1f} | {s['holdout_macro_f1_tuned']:.4f} | "
            f"{d['holdout_macro_f1_tuned']:.4f} | {r['margin']:+.4f} | "
            f"{'default point' if r['winner_is_default'] else 'other trial'} |"
        )
    margins = [r["margin"] for r in rows]
    spread = statistics.stdev(margins) if len(margins) > 1 else math.nan
    out.append(
        f"| mean | {statistics.mean(r['compute'] for r in rows):.1f} | "
        f"{statistics.mean(r['search']['holdout_macro_f1_tuned'] for r in rows):.4f} | "
        f"{statistics.mean(r['default']['holdout_macro_f1_tuned'] for r in rows):.4f} | "
        f"{statistics.mean(margins):+.4f} (sd {spread:.4f}) | "
        f"search won {sum(m > 0 for m in margins)} / {len(rows)} |"
    )
    return "\n".join(out) + "\n"


def is_point(params: dict[str, Any] | None, point: dict[str, Any]) -> bool:
    """Whether a winner's params are ``point`` (the space's default) on every key it sets."""
    return all((params or {}).get(k) == v for k, v in point.items())


def warm_markdown(rows: list[dict[str, Any]]) -> str:
    """Per-seed holdout macro F1 of the cold study, the warm-started one and the default alone,
    with each arm's compute; then the means."""
    out = [
        "| seed | cold: compute | warm: compute (earlier study) | cold search + refit | "
        "warm search + refit | default alone | warm - cold | warm - default | warm winner |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        w = r["warm"]
        out.append(
            f"| {r['seed']} | {r['compute']:.1f} | {w['compute']:.1f} ({w['earlier_compute']:.1f}) | "
            f"{r['search']['holdout_macro_f1_tuned']:.4f} | {w['holdout_macro_f1_tuned']:.4f} | "
            f"{r['default']['holdout_macro_f1_tuned']:.4f} | {w['margin_cold']:+.4f} | "
            f"{w['margin_default']:+.4f} | "
            f"{'default point' if w['winner_is_default'] else 'other trial'} |"
        )

    def mean(f: Any) -> float:
        return statistics.mean(f(r) for r in rows)

    def sd(f: Any) -> float:
        return statistics.stdev(f(r) for r in rows) if len(rows) > 1 else math.nan

    cold, default = (lambda r: r["warm"]["margin_cold"]), (lambda r: r["warm"]["margin_default"])
    out.append(
        f"| mean | {mean(lambda r: r['compute']):.1f} | "
        f"{mean(lambda r: r['warm']['compute']):.1f} "
        f"({mean(lambda r: r['warm']['earlier_compute']):.1f}) | "
        f"{mean(lambda r: r['search']['holdout_macro_f1_tuned']):.4f} | "
        f"{mean(lambda r: r['warm']['holdout_macro_f1_tuned']):.4f} | "
        f"{mean(lambda r: r['default']['holdout_macro_f1_tuned']):.4f} | "
        f"{mean(cold):+.4f} (sd {sd(cold):.4f}; warm higher on "
        f"{sum(cold(r) > 0 for r in rows)} / {len(rows)}) | "
        f"{mean(default):+.4f} (sd {sd(default):.4f}; warm higher on "
        f"{sum(default(r) > 0 for r in rows)} / {len(rows)}) | |"
    )
    return "\n".join(out) + "\n"


def warm_arm(args: argparse.Namespace, seed: int, full_size: int, log: Path) -> dict[str, Any]:
    """The earlier cheap study at ``--warm-size`` px, then the study warm-started from it with its
    refit: the refit's figures, what was carried, and the compute of the earlier study and of
    both together."""
    early, _ = hpa_tune_run(
        args.work,
        seed,
        str(args.space),
        f"{args.label}-early",
        args.warm_samples,
        args.warm_epochs or args.max_epochs,
        ["--set", f"image_size={args.warm_size}", "--no-refit"],
        log,
        "best.json",
    )
    label = f"{args.label}-warm"
    warm = product_run(
        args.work,
        seed,
        str(args.space),
        label,
        args.warm_search_samples,
        args.max_epochs,
        ["--warm-start", str(early)],
        log,
    )
    exp = args.work / "runs" / f"{label}-seed{seed}"
    run = json.loads((exp / "run.json").read_text())
    earlier = search_compute(early, full_size)
    return warm | {
        "warm_start_trials": run.get("warm_start_trials"),
        "start_point_from": run.get("start_point_from"),
        "earlier_compute": earlier,
        "compute": earlier + search_compute(exp, full_size),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser, [10, 11, 12, 13, 14])
    parser.add_argument("--label", default="eq")
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64], help="shard sizes (a fidelity space's rungs)"
    )
    parser.add_argument(
        "--warm-size", type=int, help="add the warm arm: an earlier study at this image size"
    )
    parser.add_argument("--warm-samples", type=int, default=8, help="the earlier study's trials")
    parser.add_argument(
        "--warm-epochs", type=int, help="the earlier study's max epochs (default --max-epochs)"
    )
    parser.add_argument(
        "--warm-search-samples", type=int, default=5, help="the warm-started study's trials"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / f"{args.label}.log"
    commit = _commit()
    default_path, full_size = default_space(
        args.space, args.work / f"{args.label}-default_space.yaml"
    )
    point = yaml.safe_load(args.space.read_text())["points_to_evaluate"][0]
    rows = []
    for seed in args.seeds:
        seed_shards(args.work, seed, args.n, args.size, log, tuple(args.sizes))
        label = f"{args.label}-search"
        search = product_run(
            args.work, seed, str(args.space), label, args.num_samples, args.max_epochs, [], log
        )
        compute = search_compute(args.work / "runs" / f"{label}-seed{seed}", full_size)
        default = product_run(
            args.work,
            seed,
            str(default_path),
            f"{args.label}-default",
            1,
            math.ceil(compute),
            [],
            log,
        )
        row = {
            "seed": seed,
            "compute": compute,
            "search": search,
            "default": default,
            "margin": search["holdout_macro_f1_tuned"] - default["holdout_macro_f1_tuned"],
            "winner_is_default": is_point(search["winner_params"], point),
        }
        if args.warm_size:
            warm = warm_arm(args, seed, full_size, log)
            score = warm["holdout_macro_f1_tuned"]
            warm |= {
                "margin_cold": score - search["holdout_macro_f1_tuned"],
                "margin_default": score - default["holdout_macro_f1_tuned"],
                "winner_is_default": is_point(warm["winner_params"], point),
            }
            row["warm"] = warm
        rows.append(row)
        print(markdown(rows), flush=True)
        if args.warm_size:
            print(warm_markdown(rows), flush=True)
    table = markdown(rows) + (f"\n{warm_markdown(rows)}" if args.warm_size else "")
    write_seed_bench(
        "bench/equal_compute.py", argv, commit, {"rows": rows}, table, args.json, args.md
    )


if __name__ == "__main__":
    main()
