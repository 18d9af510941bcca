"""Search efficiency: trial-epochs and wall time each strategy needs to reach the same quality.

A strategy is a scheduler (ASHA as configured in the space, or FIFO: every trial runs its full
budget) and a searcher: TPE (as configured in the space) inside ``hpa-tune run``'s
``TruthfulOptunaSearch`` (Optuna told every epoch and PRUNED/COMPLETE truthfully) or inside Ray's
stock ``OptunaSearch``, or random sampling.
Every strategy searches the same space on the same data with the same seeds. The driver records
each reported epoch as it arrives (a Tune callback), so the searches can be replayed in time order.

Per seed, the *target* is the lowest of the strategies' final best ``val_macro_f1`` — a quality
every strategy reached. For each strategy we count the trial-epochs (reported epochs, all trials
together) and the wall time until its running best first reaches the target, and compare with
full-budget random search on the same seed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

METRIC = "val_macro_f1"


@dataclass(frozen=True)
class Strategy:
    """How a search picks configurations and stops trials."""

    name: str
    scheduler: str  # "asha" | "fifo"
    sampler: str  # "tpe" | "tpe_truthful" | "random"
    description: str


STRATEGIES = {
    s.name: s
    for s in (
        Strategy(
            "asha_tpe_truthful",
            "asha",
            "tpe_truthful",
            "ASHA + TPE, truthful Optuna states (hpa-tune run)",
        ),
        Strategy("asha_tpe", "asha", "tpe", "ASHA + TPE, Ray's stock OptunaSearch states"),
        Strategy("asha_random", "asha", "random", "ASHA + random sampling"),
        Strategy("random_full", "fifo", "random", "random search, every trial its full budget"),
    )
}
BASELINE = "random_full"


def first_reach(events: list[tuple[float, str, float]], target: float) -> tuple[int, float] | None:
    """(trial-epochs, seconds) until the running best of ``events`` first reaches ``target``.

    ``events``: (seconds since the search started, trial id, metric) per reported epoch.
    Returns None when the target is never reached.
    """
    for count, (seconds, _, value) in enumerate(sorted(events), start=1):
        if value >= target:
            return count, seconds
    return None


def _searcher(strategy: Strategy, plan: Any) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from hpa_tune.search_space import define_by_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = plan.spec.sampler
    sampler: optuna.samplers.BaseSampler
    if strategy.sampler.startswith("tpe"):
        sampler = optuna.samplers.TPESampler(
            seed=plan.record.seed, n_startup_trials=s.n_startup_trials, multivariate=s.multivariate
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=plan.record.seed)
    common = {
        "space": define_by_run(plan.spec, plan.record.constants),
        "metric": plan.spec.metric,
        "mode": plan.spec.mode,
        "sampler": sampler,
    }
    if strategy.sampler == "tpe_truthful":
        from hpa_tune.truthful_search import TruthfulOptunaSearch

        return TruthfulOptunaSearch(max_epochs=plan.record.max_epochs, **common)
    return OptunaSearch(**common)


def _scheduler(strategy: Strategy, plan: Any) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    if strategy.scheduler == "fifo":
        return None
    s = plan.spec.scheduler
    return ASHAScheduler(
        time_attr="epoch",
        max_t=plan.record.max_epochs,
        grace_period=min(s.grace_period, plan.record.max_epochs),
        reduction_factor=s.reduction_factor,
    )


def _trial(config: dict[str, Any], spec: Any, data_uri: str) -> None:
    """As ``hpa-tune run``'s trainable: the trial maps its data through the node's shard cache."""
    from ray import tune

    from hpa_tune.search_space import resolve_config, split_trial_config
    from hpa_tune.trainable import load_trial_data, train_trial

    params, constants = split_trial_config(spec, config)
    torch.set_num_threads(1)
    cfg = resolve_config(spec, params, constants)
    data = load_trial_data(data_uri, [cfg.image_size])
    train_trial(cfg, data, lambda metrics, _: tune.report(metrics), checkpoint=False)


def run_strategy(
    strategy: Strategy, plan: Any, storage: Path, max_concurrent: int
) -> dict[str, Any]:
    """One search of ``plan`` with ``strategy``; its per-epoch events in arrival order."""
    from ray import tune

    events: list[tuple[float, str, float]] = []
    start = time.perf_counter()

    class _Record(tune.Callback):  # type: ignore[misc]
        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if METRIC in result:
                events.append((time.perf_counter() - start, trial.trial_id, float(result[METRIC])))

    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(_trial, spec=plan.spec, data_uri=str(plan.record.data_dir)),
            {"cpu": 1},
        ),
        tune_config=tune.TuneConfig(
            metric=plan.spec.metric,
            mode=plan.spec.mode,
            search_alg=_searcher(strategy, plan),
            scheduler=_scheduler(strategy, plan),
            num_samples=plan.record.num_samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=f"{strategy.name}-seed{plan.record.seed}",
            storage_path=str(storage),
            callbacks=[_Record()],
            verbose=0,
        ),
    )
    tuner.fit()
    return {
        "strategy": strategy.name,
        "seed": plan.record.seed,
        "wall_s": time.perf_counter() - start,
        "trial_epochs": len(events),
        "best": max((v for _, _, v in events), default=float("nan")),
        "events": events,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: mean trial-epochs and seconds to each seed's common target, and the ratio of
    the baseline's trial-epochs to the strategy's (above 1: fewer epochs than the baseline)."""
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["strategy"], r["seed"]): r for r in runs}
    names = sorted({r["strategy"] for r in runs}, key=lambda n: n != BASELINE)
    per_seed: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for seed in seeds:
        target = min(by[n, seed]["best"] for n in names)
        for n in names:
            reach = first_reach(by[n, seed]["events"], target)
            assert reach is not None  # the target is at most this strategy's own best
            per_seed[n].append(
                {"seed": seed, "target": target, "epochs": reach[0], "seconds": reach[1]}
            )
    out: dict[str, Any] = {}
    for n in names:
        epochs = [p["epochs"] for p in per_seed[n]]
        base = [p["epochs"] for p in per_seed[BASELINE]] if BASELINE in per_seed else epochs
        out[n] = {
            "trial_epochs_to_target": statistics.mean(epochs),
            "seconds_to_target": statistics.mean(p["seconds"] for p in per_seed[n]),
            "total_trial_epochs": statistics.mean(by[n, s]["trial_epochs"] for s in seeds),
            "total_wall_s": statistics.mean(by[n, s]["wall_s"] for s in seeds),
            "final_best": statistics.mean(by[n, s]["best"] for s in seeds),
            "epochs_saved_vs_baseline": sum(base) / max(sum(epochs), 1),
            "per_seed": per_seed[n],
        }
    return out


def measure_search_efficiency(
    make_plan: Callable[[int], Any],
    seeds: list[int],
    strategies: list[str],
    storage: Path,
    max_concurrent: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every strategy on every seed (Ray must be initialised); the runs and their summary."""
    runs = []
    for seed in seeds:
        for name in strategies:
            run = run_strategy(STRATEGIES[name], make_plan(seed), storage, max_concurrent)
            log(
                f"  {name} seed {seed}: best {run['best']:.4f}, {run['trial_epochs']} trial-epochs, "
                f"{run['wall_s']:.0f} s"
            )
            runs.append(run)
    return {"runs": runs, "summary": summarise(runs)}


def markdown(result: dict[str, Any]) -> str:
    """The section's table (means over seeds)."""
    lines = [
        "| strategy | trial-epochs to target | wall s to target | total trial-epochs | total wall s "
        "| final best val macro F1 | baseline epochs / strategy epochs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["summary"].items():
        lines.append(
            f"| {STRATEGIES[name].description} | {s['trial_epochs_to_target']:.1f} | "
            f"{s['seconds_to_target']:.0f} | {s['total_trial_epochs']:.1f} | {s['total_wall_s']:.0f} | "
            f"{s['final_best']:.4f} | **{s['epochs_saved_vs_baseline']:.2f}x** |"
        )
    return "\n".join(lines)
