"""The baseline space's fixed defaults, chosen on val only: how long the refit trains, which loss.

The holdout is scored, never consulted: this bench reads nothing but val. Per data seed
(``bench/foreign_data.py``'s Kaggle-layout data, prepared at 64 px; reused from WORK), the space's
default point is trained alone (``bench/equal_compute.py``'s default space, ``--no-refit``):

- **refit length**: once for ``--epochs`` epochs. With a constant learning rate, a run of E epochs
  is the first E epochs of a longer one, so the best val macro F1 (at the global threshold, the
  space's metric) within the first 12 x F epochs is what a refit with ``refit_epochs_factor: F``
  of a 12-epoch search keeps.
- **loss**: once more with ``--set loss=bce`` (the study's whole-term weighting) for
  ``--loss-epochs`` epochs, against ``bce_pos`` over the same first epochs.
- **TTA** (with ``--tta-from DIR ...``): every refit under those directories scored both the model
  alone and with TTA, each at the threshold method val chose; their val figures (cross-validated
  within val, as the refit chooses its threshold method) say whether TTA should stay on.

    python bench/defaults_on_val.py --work /tmp/eqw --seeds 10 11 12 13 14 \\
        --tta-from /tmp/eqw/runs /tmp/eqg/runs --json bench/results/defaults_on_val.json --md bench/results/defaults_on_val.md
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._machine import write_seed_bench  # noqa: E402
from bench.equal_compute import default_space  # noqa: E402
from bench.vs_hand import _commit, add_seed_arguments, hpa_tune_run, seed_shards  # noqa: E402

METRIC = "val_macro_f1_global"
SEARCH_EPOCHS = 12  # baseline_space's max_epochs in the equal-compute and vs-hand benches


def val_curve(exp: Path) -> list[float]:
    """The one trial's val metric per epoch, in epoch order."""
    with (exp / "history.csv").open() as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["epoch"]))
    return [float(r[METRIC]) for r in rows]


def best_within(curve: list[float], epochs: int) -> float:
    """The best val figure of the first ``epochs`` epochs (what a refit of that length keeps)."""
    return max(curve[:epochs])


def level_at(curve: list[float], epochs: int, window: int = 6) -> float:
    """The mean val figure of the ``window`` epochs ending at ``epochs``: the level the run has
    reached there, free of the optimism of picking the best of more epochs."""
    return statistics.mean(curve[max(epochs - window, 0) : epochs])


def tta_on_val(metrics: dict[str, Any]) -> tuple[float, float]:
    """(alone, with TTA): a refit's val macro F1, cross-validated within val, of the single model
    at the threshold method val chose for it, without and with TTA."""
    p = metrics["predictors"]
    alone, tta = p["single"], p["single_tta"]
    return (
        alone["val_cv_macro_f1"][alone["threshold_method"]],
        tta["val_cv_macro_f1"][tta["threshold_method"]],
    )


def tta_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per refit, then the mean difference and how often TTA was higher."""
    out = ["| refit | alone | with TTA | TTA - alone |", "|---|---:|---:|---:|"]
    for r in rows:
        out.append(
            f"| {r['experiment']} | {r['alone']:.3f} | {r['tta']:.3f} | {r['tta'] - r['alone']:+.3f} |"
        )
    gains = [r["tta"] - r["alone"] for r in rows]
    out.append(
        f"| mean of {len(rows)} | {statistics.mean(r['alone'] for r in rows):.3f} | "
        f"{statistics.mean(r['tta'] for r in rows):.3f} | {statistics.mean(gains):+.3f} "
        f"(TTA higher on {sum(g > 0 for g in gains)}) |"
    )
    return "\n".join(out) + "\n"


def markdown(rows: list[dict[str, Any]], factors: list[int], loss_epochs: int) -> str:
    """Per seed: best val within each refit length, and bce against bce_pos; then the means."""
    head = " | ".join(f"x{f} ({f * SEARCH_EPOCHS} ep)" for f in factors)
    out = [
        f"| seed | {head} | best epoch | bce_pos, {loss_epochs} ep | bce, {loss_epochs} ep |",
        "|---:|" + "---:|" * (len(factors) + 3),
    ]
    for r in rows:
        cells = " | ".join(f"{r['refit'][str(f)]:.3f}" for f in factors)
        out.append(
            f"| {r['seed']} | {cells} | {r['best_epoch']} of {r['epochs']} | "
            f"{r['bce_pos']:.3f} | {r['bce']:.3f} |"
        )
    means = " | ".join(f"{statistics.mean(r['refit'][str(f)] for r in rows):.3f}" for f in factors)
    out.append(
        f"| mean | {means} | | {statistics.mean(r['bce_pos'] for r in rows):.3f} | "
        f"{statistics.mean(r['bce'] for r in rows):.3f} |"
    )
    out += [
        "",
        f"| seed (mean of the 6 epochs ending there) | {head} |",
        "|---:|" + "---:|" * len(factors),
    ]
    for r in rows:
        out.append(
            f"| {r['seed']} | " + " | ".join(f"{r['level'][str(f)]:.3f}" for f in factors) + " |"
        )
    levels = " | ".join(f"{statistics.mean(r['level'][str(f)] for r in rows):.3f}" for f in factors)
    out.append(f"| mean | {levels} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser, [10, 11, 12, 13, 14])
    parser.add_argument("--epochs", type=int, default=72)
    parser.add_argument("--loss-epochs", type=int, default=36)
    parser.add_argument(
        "--tta-from", type=Path, nargs="*", default=[], help="directories of finished experiments"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "val.log"
    commit = _commit()  # of the code that measures, whatever is committed while it runs
    space, _ = default_space(args.space, args.work / "val-default_space.yaml")
    factors = [f for f in range(1, 7) if f * SEARCH_EPOCHS <= args.epochs]
    rows = []
    for seed in args.seeds:
        seed_shards(args.work, seed, args.n, args.size, log, (32, 64))
        run = ["--no-refit"]
        base, _ = hpa_tune_run(
            args.work, seed, str(space), "val-base", 1, args.epochs, run, log, "best.json"
        )
        bce, _ = hpa_tune_run(
            args.work,
            seed,
            str(space),
            "val-bce",
            1,
            args.loss_epochs,
            [*run, "--set", "loss=bce"],
            log,
            "best.json",
        )
        curve = val_curve(base)
        rows.append(
            {
                "seed": seed,
                "epochs": len(curve),
                "best_epoch": curve.index(max(curve)) + 1,
                "refit": {str(f): best_within(curve, f * SEARCH_EPOCHS) for f in factors},
                "level": {str(f): level_at(curve, f * SEARCH_EPOCHS) for f in factors},
                "bce_pos": best_within(curve, args.loss_epochs),
                "bce": best_within(val_curve(bce), args.loss_epochs),
                "curve": curve,
            }
        )
        print(markdown(rows, factors, args.loss_epochs), flush=True)
    tta = []
    for runs in args.tta_from:
        for path in sorted(runs.glob("*/refit/metrics.json")):
            alone, with_tta = tta_on_val(json.loads(path.read_text()))
            tta.append({"experiment": path.parents[1].name, "alone": alone, "tta": with_tta})
    table = markdown(rows, factors, args.loss_epochs) + (f"\n{tta_markdown(tta)}" if tta else "")
    fields = {"metric": METRIC, "rows": rows, "tta": tta}
    write_seed_bench("bench/defaults_on_val.py", argv, commit, fields, table, args.json, args.md)


if __name__ == "__main__":
    main()
