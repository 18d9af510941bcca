"""Search + refit against a CNN tuned by hand, on Kaggle-layout data nobody here tuned on.

For each data seed: ``bench/foreign_data.py`` writes 600 samples at 512 px, ``hpa-tune prepare
--sizes 64`` shards them, ``bench/hand_cnn.py`` trains the hand CNN once, and ``hpa-tune run
SPACE --num-samples 6 --max-epochs 12`` searches and refits; the refit's
``holdout_macro_f1_tuned`` is set against the hand CNN's holdout macro F1 with thresholds picked
on val (one global, or one per class, on a 0.05 grid). Generated data, shards and hand results
are kept in WORK and reused, so a second variant of the product re-runs only the search.

    python bench/vs_hand.py --work /tmp/vsh --seeds 0 1 2 --label main \\
        --json bench/results/vs_hand.json --md bench/results/vs_hand.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._machine import write_seed_bench  # noqa: E402


def _sh(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - start


def _commit() -> str:
    run = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return run.stdout.strip()


def add_seed_arguments(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    """The options every per-seed bench shares: its work directory (runs are reused from it),
    the data seeds, the foreign data's size (samples, pixels) and the space searched."""
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--space", type=Path, default=Path("search_spaces/baseline_space.yaml"))


def seed_shards(
    work: Path, seed: int, n: int, size: int, log: Path, sizes: tuple[int, ...] = (64,)
) -> Path:
    """Generate + prepare one data seed's Kaggle-layout data (shards at ``sizes``), reusing
    WORK's copy."""
    raw, shards = work / f"raw{seed}", work / f"shards{seed}"
    py = sys.executable
    if not (shards / "manifest.json").is_file():
        _sh(
            [
                py,
                str(HERE / "foreign_data.py"),
                str(raw),
                "--n",
                str(n),
                "--seed",
                str(seed),
                "--size",
                str(size),
                "--workers",
                "2",
            ],
            log,
        )
        _sh(
            [
                str(Path(py).parent / "hpa-tune"),
                "prepare",
                str(raw),
                "--out",
                str(shards),
                "--sizes",
                ",".join(map(str, sizes)),
            ],
            log,
        )
    return shards


def seed_data(work: Path, seed: int, n: int, size: int, epochs: int, log: Path) -> dict[str, Any]:
    """Generate + prepare + hand CNN for one data seed, reusing what WORK already holds."""
    shards, hand = seed_shards(work, seed, n, size, log), work / f"hand{seed}.json"
    py = sys.executable
    if not hand.is_file():
        _sh(
            [
                py,
                str(HERE / "hand_cnn.py"),
                str(shards),
                "--epochs",
                str(epochs),
                "--json",
                str(hand),
            ],
            log,
        )
    return json.loads(hand.read_text())


def hpa_tune_run(
    work: Path,
    seed: int,
    space: str,
    label: str,
    trials: int,
    epochs: int,
    extra: list[str],
    log: Path,
    done: str,
) -> tuple[Path, float]:
    """``hpa-tune run`` on one seed's shards into ``WORK/runs/LABEL-seedSEED``, skipped when
    that experiment already holds ``done`` (a finished earlier run). Returns (experiment, wall s)."""
    name = f"{label}-seed{seed}"
    exp = work / "runs" / name
    cmd = [
        str(Path(sys.executable).parent / "hpa-tune"),
        "run",
        space,
        "--data",
        str(work / f"shards{seed}"),
        "--num-samples",
        str(trials),
        "--max-epochs",
        str(epochs),
        "--storage",
        str(work / "runs"),
        "--name",
        name,
        "--quiet",
        *extra,
    ]
    wall = 0.0 if (exp / done).is_file() else _sh(cmd, log)
    return exp, wall


def product_run(
    work: Path,
    seed: int,
    space: str,
    label: str,
    trials: int,
    epochs: int,
    extra: list[str],
    log: Path,
) -> dict[str, Any]:
    """``hpa-tune run`` on one seed's shards; the refit's headline and what the search chose."""
    exp, wall = hpa_tune_run(
        work, seed, space, label, trials, epochs, extra, log, "refit/metrics.json"
    )
    metrics = json.loads((exp / "refit" / "metrics.json").read_text())
    best = json.loads((exp / "best.json").read_text())
    return {
        "holdout_macro_f1_tuned": metrics["holdout_macro_f1_tuned"],
        "holdout_macro_f1@0.5": metrics["holdout_macro_f1@0.5"],
        "val_macro_f1_tuned": metrics.get("val_macro_f1_tuned"),
        "predictor": metrics["predictor"],
        "threshold_method": metrics["threshold_method"],
        "search_metric": best.get("metric"),
        "search_best_val": best.get("value"),
        "winner_params": best.get("params"),
        "wall_s": round(wall, 1),
    }


def markdown(rows: list[dict[str, Any]], label: str) -> str:
    """A per-seed table and the means."""
    out = [
        f"| seed | hand: global thr | hand: per-class thr | {label}: search best val | "
        f"{label}: refit holdout (method) | product - best hand |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        h, p = r["hand"], r["product"]
        best_hand = max(h["holdout_macro_f1_global"], h["holdout_macro_f1_per_class"])
        out.append(
            f"| {r['seed']} | {h['holdout_macro_f1_global']:.4f} | "
            f"{h['holdout_macro_f1_per_class']:.4f} | {p['search_metric']} {p['search_best_val']:.4f} | "
            f"{p['holdout_macro_f1_tuned']:.4f} ({p['predictor']}, {p['threshold_method']}) | "
            f"{p['holdout_macro_f1_tuned'] - best_hand:+.4f} |"
        )
    n = len(rows)

    def mean(f: Any) -> float:
        return sum(f(r) for r in rows) / n

    out.append(
        f"| mean | {mean(lambda r: r['hand']['holdout_macro_f1_global']):.4f} | "
        f"{mean(lambda r: r['hand']['holdout_macro_f1_per_class']):.4f} | | "
        f"{mean(lambda r: r['product']['holdout_macro_f1_tuned']):.4f} | "
        f"{mean(lambda r: r['margin']):+.4f} |"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser, [0, 1, 2])
    parser.add_argument("--label", default="product")
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--set", action="append", default=[], help="passed to hpa-tune run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / f"{args.label}.log"
    commit = _commit()  # at the start: the code the runs use
    extra = [x for kv in args.set for x in ("--set", kv)]
    rows = []
    for seed in args.seeds:
        hand = seed_data(args.work, seed, args.n, args.size, args.max_epochs, log)
        product = product_run(
            args.work,
            seed,
            str(args.space),
            args.label,
            args.num_samples,
            args.max_epochs,
            extra,
            log,
        )
        best_hand = max(hand["holdout_macro_f1_global"], hand["holdout_macro_f1_per_class"])
        rows.append(
            {
                "seed": seed,
                "hand": hand,
                "product": product,
                "margin": product["holdout_macro_f1_tuned"] - best_hand,
            }
        )
        print(markdown(rows, args.label), flush=True)
    fields = {
        "label": args.label,
        "rows": rows,
        "mean_margin": sum(r["margin"] for r in rows) / len(rows),
        "seeds_won": sum(r["margin"] > 0 for r in rows),
    }
    table = markdown(rows, args.label)
    write_seed_bench("bench/vs_hand.py", argv, commit, fields, table, args.json, args.md)


if __name__ == "__main__":
    main()
