"""``python -m bench``: the project's benchmark, one entry point.

    python -m bench --quick                 # minutes: overhead (+ GPU sections with CUDA)
    python -m bench --full                  # every section, more trials/seeds; hours on 2 cores
    python -m bench --sections search       # one named section, at the --quick/--full size
    python -m bench --quick --json out.json # every figure (key tune_overhead_s_per_trial, ...)

Sections: (1) Ray Tune overhead per trial, (2) search efficiency of ASHA+TPE / ASHA+random /
full-budget random on the built-in sample, (3) GPU throughput plain vs fast path and packed
trials, (4) a real Ray Tune search on a GPU. (3) and (4) are skipped, with a line saying so,
without CUDA. The tables (with machine, date, versions and the command) replace the part of
BENCHMARKS.md between its ``bench:begin``/``bench:end`` markers (``--no-markdown`` to leave it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import gpu_bench, search_efficiency, tune_overhead
from bench._machine import describe, machine_info
from bench.report_md import update_benchmarks

SECTIONS = ("overhead", "search", "gpu")
# --quick leaves out what takes over an hour on a 2-core machine (search efficiency: 7 strategies
# x 3 seeds of a 16-trial search); name it with --sections to run it at the quick size.
QUICK_SECTIONS = ("overhead", "gpu")
LONG_SECTIONS = {"search": "search efficiency, about 70 minutes on 2 cores"}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CPU-sized (default)")
    size.add_argument("--full", action="store_true", help="more trials, seeds and sizes")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--sections",
        help=f"comma-separated subset of {','.join(SECTIONS)} "
        f"(default: {','.join(QUICK_SECTIONS)} with --quick, all with --full)",
    )
    parser.add_argument("--seeds", type=int, help="search-efficiency seeds (quick 3, full 5)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the first search-efficiency seed (0)"
    )
    parser.add_argument(
        "--strategies",
        default=",".join(n for n, s in search_efficiency.STRATEGIES.items() if not s.fidelity),
        help=f"search strategies to compare, of {','.join(search_efficiency.STRATEGIES)} "
        "(default: all but the resolution-fidelity one, which needs --image-size 64: the "
        "built-in sample is prepared at 32 and 64 px)",
    )
    parser.add_argument("--trials", type=int, help="search-efficiency trials (quick 16, full 32)")
    parser.add_argument("--epochs", type=int, help="search-efficiency max epochs (9)")
    parser.add_argument(
        "--image-size", type=int, help="search-efficiency full image size (quick 32, full 64)"
    )
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="measure nothing: write BENCHMARKS.md from --json files (several: runs of the same "
        "search setup on other seeds, --first-seed, joined)",
    )
    return parser.parse_args(argv)


def _commit() -> str:
    """The checked-out commit (with ``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return head + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _init_ray() -> None:
    import ray

    # address="local": always a Ray of our own, never another process's cluster on this machine.
    ray.init(
        address="local",
        num_cpus=min(os.cpu_count() or 2, 16),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )


def _search_plan_factory(
    full: bool, trials: int | None, epochs: int | None, image_size: int | None = None
) -> Any:
    """Per seed, the plan every strategy searches: ``all_space.yaml`` (conditional sub-spaces:
    loss, optimiser, schedule) pinned to baseline_cnn, without its known-good first point (the
    comparison is of search strategies, not of a hand-picked default), ASHA grace 1 / rf 3."""
    from dataclasses import replace

    from hpa_tune.data.builtin_sample.prepared import ensure_builtin_sample
    from hpa_tune.search.planning import RunOptions, plan_run
    from hpa_tune.search.space import SchedulerSpec

    shards = ensure_builtin_sample()
    # CPU-sized: baseline_cnn at 32 px trains an epoch of the sample in ~2 s on one core.
    size = image_size or (64 if full else 32)
    overrides: dict[str, Any] = {"arch": "baseline_cnn", "image_size": size}
    space = Path("search_spaces/all_space.yaml")
    # max_epochs = grace * rf^2: rungs at 1 and 3, the survivors train to 9 epochs.
    samples, epochs = trials or (32 if full else 16), epochs or 9
    scheduler = SchedulerSpec(type="asha", grace_period=1, reduction_factor=3)

    def make_plan(seed: int) -> Any:
        options = RunOptions(
            space_path=space,
            num_samples=samples,
            max_epochs=epochs,
            seed=seed,
            overrides=overrides,
            progress="none",
        )
        plan = plan_run(options, shards, builtin_sample=True)
        spec = plan.spec.model_copy(update={"points_to_evaluate": [], "scheduler": scheduler})
        return replace(plan, spec=spec)

    setup = {
        "space": str(space),
        "overrides": overrides,
        "num_samples": samples,
        "max_epochs": epochs,
        "grace_period": scheduler.grace_period,
        "reduction_factor": scheduler.reduction_factor,
        "points_to_evaluate": "none",
    }
    return make_plan, setup


def _refused_strategies(names: list[str], image_size: int) -> str | None:
    """Why the search section cannot run ``names`` at ``image_size`` on the built-in sample."""
    from hpa_tune.data.builtin_sample.prepared import BuiltinSample

    unknown = [n for n in names if n not in search_efficiency.STRATEGIES]
    if unknown:
        return f"--strategies: unknown {unknown}; valid: {', '.join(search_efficiency.STRATEGIES)}"
    sizes = BuiltinSample().sizes
    for name in names:
        if search_efficiency.STRATEGIES[name].fidelity and image_size // 2 not in sizes:
            return (
                f"--strategies {name}: trains at {image_size // 2} px before its first rung, but "
                f"the built-in sample is prepared at {', '.join(map(str, sizes))} px; "
                f"use --image-size {2 * sizes[0]}"
            )
    return None


def _write_json(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))


def _from_json(paths: list[Path], markdown: Path) -> int:
    """BENCHMARKS.md from runs' ``--json`` (of a stopped run: the seeds every strategy ran; of
    several runs: their search-efficiency runs joined, which must share one setup)."""
    figures = json.loads(paths[0].read_text())
    search = figures.get("search_efficiency")
    for other_path in paths[1:]:
        other = json.loads(other_path.read_text())
        more = other.get("search_efficiency")
        if not search or not more or more["setup"] != search["setup"]:
            print(f"{other_path}: not a search of the setup of {paths[0]}", file=sys.stderr)
            return 2
        runs = search["runs"] + more["runs"]
        search = {**search, "runs": runs, "partial": True}
        figures["command"] = f"{figures['command']}; {other['command']}"
        figures["bench_wall_s"] = figures.get("bench_wall_s", 0) + other.get("bench_wall_s", 0)
    if search and search.get("partial"):
        seeds, runs = search_efficiency.complete_seeds(search["runs"])
        if not seeds:
            print(f"{paths[0]}: no seed on which every strategy ran", file=sys.stderr)
            return 2
        summary = search_efficiency.summarise(runs)
        figures["search_efficiency"] = {**search, "runs": runs, "seeds": seeds, "summary": summary}
    update_benchmarks(markdown, figures)
    print(f"tables: {markdown} (from {', '.join(map(str, paths))})")
    return 0


def _measure(
    args: argparse.Namespace,
    sections: list[str],
    full: bool,
    figures: dict[str, Any],
    storage: Path,
) -> int:
    """Run the asked sections with Ray Tune writing to ``storage``; write their figures."""
    started = time.perf_counter()
    if {"overhead", "search"} & set(sections):
        _init_ray()
    if "overhead" in sections:
        trials, sleep = (40, 1.0) if full else (20, 0.5)
        print(f"(1) Ray Tune overhead: {trials} trials sleeping {sleep:g} s each")
        runs = []
        for reuse in (True, False):  # True first: what hpa-tune run uses
            runs.append(tune_overhead.measure_tune_overhead(trials, sleep, storage, reuse))
            print(
                f"  reuse_actors={reuse}: {runs[-1]['tune_overhead_s_per_trial']:.2f} s/trial, "
                f"median gap {runs[-1]['median_gap_between_trials_s']:.2f} s"
            )
        figures["tune_overhead"] = runs
        figures["tune_overhead_s_per_trial"] = runs[0]["tune_overhead_s_per_trial"]
    if "search" in sections:
        strategies = [s for s in args.strategies.split(",") if s]
        refused = _refused_strategies(strategies, args.image_size or (64 if full else 32))
        if refused:
            print(refused, file=sys.stderr)
            return 2
        make_plan, setup = _search_plan_factory(full, args.trials, args.epochs, args.image_size)
        seeds = list(range(args.first_seed, args.first_seed + (args.seeds or (5 if full else 3))))
        print(f"(2) search efficiency: {strategies} x seeds {seeds}")

        def keep(runs: list[dict[str, Any]]) -> None:
            if args.json:
                search = {"runs": runs, "setup": setup, "seeds": seeds, "partial": True}
                _write_json(args.json, {**figures, "search_efficiency": search})

        result = search_efficiency.measure_search_efficiency(
            make_plan, seeds, strategies, storage, max_concurrent=2, on_run=keep
        )
        figures["search_efficiency"] = {**result, "setup": setup, "seeds": seeds}
    if "gpu" in sections:
        print("(3) GPU throughput, plain vs fast path; packed trials")
        figures["gpu_throughput"] = gpu_bench.measure_throughput(full)
        figures["gpu_packed"] = gpu_bench.measure_packed(60.0 if full else 20.0)
        print("(4) a Ray Tune search on a GPU")
        figures["gpu_search"] = gpu_bench.measure_gpu_search(storage, 8 if full else 4, 3)
        for key in ("gpu_throughput", "gpu_packed", "gpu_search"):
            if "skipped" in figures[key]:
                print(f"  {key}: {figures[key]['skipped']}")
    figures["bench_wall_s"] = time.perf_counter() - started
    if args.json:
        _write_json(args.json, figures)
        print(f"figures: {args.json}")
    if not args.no_markdown:
        update_benchmarks(args.markdown, figures)
        print(f"tables: {args.markdown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.from_json:
        return _from_json(args.from_json, args.markdown)
    full = bool(args.full)
    default = SECTIONS if full else QUICK_SECTIONS
    sections = [s for s in (args.sections or ",".join(default)).split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(
            f"--sections: unknown {sorted(unknown)}; valid: {', '.join(SECTIONS)}", file=sys.stderr
        )
        return 2
    os.environ.setdefault("HPA_TUNE_OFFLINE", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    info = machine_info()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(describe(info))
    figures: dict[str, Any] = {
        "machine": info,
        "command": command,
        "commit": _commit(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 1),
        "mode": "full" if full else "quick",
        "sections": sections,
    }
    for name in sorted(set(SECTIONS) - set(sections)):
        why = LONG_SECTIONS.get(name, "not asked for")
        print(f"skipped section {name} ({why}): run it with --full or --sections {name}")
    # Ray Tune writes the bench's trials here; removed at the end (figures go to --json).
    with tempfile.TemporaryDirectory(prefix="hpa-bench-", ignore_cleanup_errors=True) as tmp:
        return _measure(args, sections, full, figures, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
