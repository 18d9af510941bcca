"""Search efficiency: trial-epochs and wall time each strategy needs to reach the same quality.

A strategy is a scheduler (ASHA with the bench's grace period and reduction factor, or FIFO: every
trial runs its full budget) and a searcher: TPE (with given ``multivariate`` / ``group`` /
``constant_liar`` settings) inside ``hpa-tune run``'s ``TruthfulOptunaSearch`` (Optuna told every
epoch and PRUNED/COMPLETE truthfully) or inside Ray's stock ``OptunaSearch``, or random sampling.
Every strategy searches the same space on the same data with the same seeds. The driver records
each reported epoch as it arrives (a Tune callback), so the searches can be replayed in time order.

Per seed, the *target* is the lowest of the strategies' final best ``val_macro_f1`` — a quality
every strategy reached. For each strategy we count the trial-epochs (reported epochs, all trials
together) and the wall time until its running best first reaches the target, and compare with
full-budget random search on the same seed. A second ratio compares each strategy with full-budget
random search alone (target: the lower of the two final bests), which does not depend on which
other strategies ran.

A strategy may also train at a lower image size up to ASHA's first rung (``fidelity``: the
resolution fidelity of ``hpa-tune run``, half the full size, then the full size). Its compute is
then counted in full-size epochs, an epoch weighted by its pixels ((size / full size)^2: a 32 px
epoch of a 64 px search counts 0.25), and only full-size epochs count towards quality (the
fidelity ranks trials by those alone). Without a fidelity both are plain trial-epochs.
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
class TPESettings:
    """The TPE switches under comparison (``SamplerSpec``'s keys of the same names)."""

    multivariate: bool = True
    group: bool = True
    constant_liar: bool = True

    def label(self) -> str:
        on = [
            k.replace("_", " ")
            for k in ("multivariate", "group", "constant_liar")
            if getattr(self, k)
        ]
        return ", ".join(on) if on else "independent, no constant liar"


@dataclass(frozen=True)
class Strategy:
    """How a search picks configurations and stops trials."""

    name: str
    scheduler: str  # "asha" | "fifo"
    sampler: str  # "tpe" | "tpe_truthful" | "random"
    tpe: TPESettings = TPESettings()
    grace_period: int | None = None  # None: the bench's (plan.spec.scheduler)
    fidelity: bool = False  # half the image size up to ASHA's first rung, then the full size

    def describe(self, grace_period: int, reduction_factor: float) -> str:
        """A table row's name, with the settings the strategy ran with."""
        if self.scheduler == "fifo":
            head = "FIFO (every trial its full budget)"
        else:
            head = f"ASHA (grace {self.grace_period or grace_period}, rf {reduction_factor:g})"
        if self.fidelity:
            head += " with resolution rungs (half size to the first rung)"
        if self.sampler == "random":
            return f"{head} + random"
        states = (
            "truthful Optuna states" if self.sampler == "tpe_truthful" else "Ray's stock states"
        )
        return f"{head} + TPE ({self.tpe.label()}; {states})"


_PLAIN = TPESettings(multivariate=False, group=False, constant_liar=False)
STRATEGIES = {
    s.name: s
    for s in (
        Strategy("asha_tpe_truthful", "asha", "tpe_truthful"),
        Strategy("asha_tpe", "asha", "tpe"),
        Strategy(
            "asha_tpe_truthful_no_liar", "asha", "tpe_truthful", TPESettings(constant_liar=False)
        ),
        Strategy("asha_tpe_truthful_independent", "asha", "tpe_truthful", _PLAIN),
        Strategy("asha_tpe_truthful_grace2", "asha", "tpe_truthful", grace_period=2),
        Strategy("asha_tpe_truthful_rungs", "asha", "tpe_truthful", grace_period=2, fidelity=True),
        Strategy("asha_random", "asha", "random"),
        Strategy("random_full", "fifo", "random"),
    )
}
BASELINE = "random_full"


Event = tuple  # (seconds since the start, trial id, metric[, compute, full size])


def _compute(event: Event) -> float:
    """An epoch's compute in full-size epochs (1 for runs recorded without a fidelity)."""
    return float(event[3]) if len(event) > 3 else 1.0


def _full_size(event: Event) -> bool:
    """Whether an epoch trained at the full size (its score counts towards quality)."""
    return bool(event[4]) if len(event) > 4 else True


def first_reach(events: list[Event], target: float) -> tuple[float, float] | None:
    """(compute, seconds) until the running best of ``events`` first reaches ``target``.

    ``events``: (seconds since the search started, trial id, metric[, compute, full size]) per
    reported epoch; compute counts every epoch until then, in full-size epochs (trial-epochs
    without a fidelity); only full-size epochs can reach the target. None when none does.
    """
    spent = 0.0
    for event in sorted(events):
        spent += _compute(event)
        if _full_size(event) and event[2] >= target:
            return spent, event[0]
    return None


def best_full_size(events: list[Event]) -> float:
    """The best score of the full-size epochs of ``events`` (nan when there is none)."""
    return max((e[2] for e in events if _full_size(e)), default=float("nan"))


def trial_constants(strategy: Strategy, plan: Any) -> dict[str, Any]:
    """The constants every trial of ``strategy`` gets: the plan's, plus for a resolution
    fidelity the size schedule (half the full size up to ASHA's first rung)."""
    from hpa_tune.search.space import resolve_config
    from hpa_tune.train.size_schedule import size_schedule

    constants = dict(plan.record.constants)
    if not strategy.fidelity:
        return constants
    full = resolve_config(plan.spec, {}, constants).image_size
    s = plan.spec.scheduler
    grace = min(strategy.grace_period or s.grace_period, plan.record.max_epochs)
    schedule = size_schedule([full // 2, full], grace, s.reduction_factor, plan.record.max_epochs)
    return {**constants, "image_size": full, "size_schedule": [list(e) for e in schedule]}


def _searcher(strategy: Strategy, plan: Any) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from hpa_tune.search.space import define_by_run, tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: optuna.samplers.BaseSampler
    if strategy.sampler.startswith("tpe"):
        settings = plan.spec.sampler.model_copy(update=vars(strategy.tpe))
        n_points = len(plan.spec.points_to_evaluate)
        sampler = tpe_sampler(settings, plan.record.seed, plan.record.num_samples, n_points)
    else:
        sampler = optuna.samplers.RandomSampler(seed=plan.record.seed)
    common = {
        "space": define_by_run(plan.spec, trial_constants(strategy, plan)),
        "metric": plan.spec.metric,
        "mode": plan.spec.mode,
        "sampler": sampler,
        "points_to_evaluate": [dict(p) for p in plan.spec.points_to_evaluate] or None,
    }
    if strategy.sampler == "tpe_truthful":
        from hpa_tune.ray_layer.truthful_search import TruthfulOptunaSearch

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
        grace_period=min(strategy.grace_period or s.grace_period, plan.record.max_epochs),
        reduction_factor=s.reduction_factor,
    )


def _trial(config: dict[str, Any], spec: Any, data_uri: str) -> None:
    """As ``hpa-tune run``'s trainable: the trial maps its data through the node's shard cache."""
    from ray import tune

    from hpa_tune.search.space import resolve_config, split_trial_config
    from hpa_tune.train.trainable import train_trial
    from hpa_tune.train.trial_data import load_trial_data

    params, constants = split_trial_config(spec, config)
    torch.set_num_threads(1)
    cfg = resolve_config(spec, params, constants)
    data = load_trial_data(data_uri, cfg.training_sizes())
    train_trial(cfg, data, lambda metrics, _: tune.report(metrics), checkpoint=False)


def run_strategy(
    strategy: Strategy, plan: Any, storage: Path, max_concurrent: int
) -> dict[str, Any]:
    """One search of ``plan`` with ``strategy``; its per-epoch events in arrival order."""
    from ray import tune

    events: list[Event] = []
    start = time.perf_counter()
    full = int(trial_constants(strategy, plan).get("image_size", 0)) or None

    class _Record(tune.Callback):  # type: ignore[misc]
        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if METRIC not in result:
                return
            size = int(result.get("image_size") or full or 1)
            compute = (size / full) ** 2 if full else 1.0
            at_full = full is None or size == full
            seconds = time.perf_counter() - start
            events.append((seconds, trial.trial_id, float(result[METRIC]), compute, at_full))

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
            reuse_actors=True,  # as hpa-tune run: a new worker per trial costs seconds (5.1)
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
        "trial_epochs": sum(_compute(e) for e in events),  # in full-size epochs
        "epochs_run": len(events),
        "best": best_full_size(events),
        "events": events,
    }


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 0, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (nan when either is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)
    return cov / var**0.5 if var > 0 else float("nan")


def early_vs_final(events: list[Event], max_epochs: int) -> dict[int, float]:
    """How well epoch k's score ranks trials by their final best (Spearman, per epoch k).

    From a search where every trial ran all ``max_epochs`` (full-budget random search): what an
    ASHA rung at epoch k would have known. A trial's epochs are its events in time order.
    """
    curves: dict[str, list[float]] = {}
    for _, trial, value, *_ in sorted(events):
        curves.setdefault(trial, []).append(value)
    full = [c for c in curves.values() if len(c) >= max_epochs]
    finals = [max(c) for c in full]
    return {k: spearman([c[k - 1] for c in full], finals) for k in range(1, max_epochs)}


def _pairwise_ratio(base: dict[str, Any], run: dict[str, Any]) -> float:
    """Baseline's trial-epochs / ``run``'s, to the lower of the two final bests."""
    target = min(base["best"], run["best"])
    reach_base, reach_run = first_reach(base["events"], target), first_reach(run["events"], target)
    assert reach_base is not None and reach_run is not None  # at most each one's own best
    return reach_base[0] / reach_run[0]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: mean trial-epochs and seconds to each seed's common target, and the ratio of
    the baseline's trial-epochs to the strategy's (above 1: fewer epochs than the baseline), both
    to the common target (ratio of the sums over seeds) and to the target of the strategy and the
    baseline alone (mean of the per-seed ratios)."""
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["strategy"], r["seed"]): r for r in runs}
    present = {r["strategy"] for r in runs}
    names = [n for n in (BASELINE, *STRATEGIES) if n in present]
    names = list(dict.fromkeys(names)) + sorted(present - set(names))
    per_seed: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for seed in seeds:
        target = min(by[n, seed]["best"] for n in names)
        for n in names:
            reach = first_reach(by[n, seed]["events"], target)
            assert reach is not None  # the target is at most this strategy's own best
            pairwise = (
                _pairwise_ratio(by[BASELINE, seed], by[n, seed]) if BASELINE in names else 1.0
            )
            per_seed[n].append(
                {
                    "seed": seed,
                    "target": target,
                    "epochs": reach[0],
                    "seconds": reach[1],
                    "pairwise_ratio": pairwise,
                }
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
            "epochs_saved_vs_baseline_pairwise": statistics.mean(
                p["pairwise_ratio"] for p in per_seed[n]
            ),
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
    on_run: Callable[[list[dict[str, Any]]], None] = lambda runs: None,
) -> dict[str, Any]:
    """Every strategy on every seed (Ray must be initialised); the runs and their summary.

    ``on_run`` gets the runs so far after each one (to keep them if the bench is stopped)."""
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for name in strategies:
            run = run_strategy(STRATEGIES[name], make_plan(seed), storage, max_concurrent)
            log(
                f"  {name} seed {seed}: best {run['best']:.4f}, {run['trial_epochs']} trial-epochs, "
                f"{run['wall_s']:.0f} s"
            )
            runs.append(run)
            on_run(runs)
    return {"runs": runs, "summary": summarise(runs)}


def rung_predictiveness(runs: list[dict[str, Any]], max_epochs: int) -> dict[int, float]:
    """Mean over seeds of :func:`early_vs_final` for the full-budget baseline's searches."""
    per_seed = [early_vs_final(r["events"], max_epochs) for r in runs if r["strategy"] == BASELINE]
    if not per_seed:
        return {}
    return {k: statistics.mean(s[k] for s in per_seed) for k in per_seed[0]}


def markdown_rungs(correlations: dict[int, float]) -> str:
    """One row: Spearman of each epoch's score with the final best, full-budget trials."""
    head = "| epoch k | " + " | ".join(str(k) for k in correlations) + " |"
    rule = "|---|" + "---:|" * len(correlations)
    row = (
        "| Spearman(score at k, final best) | "
        + " | ".join(f"{v:.2f}" for v in correlations.values())
        + " |"
    )
    return "\n".join([head, rule, row])


def complete_seeds(runs: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
    """The seeds on which every strategy present ran, and their runs (a stopped bench's part)."""
    names = {r["strategy"] for r in runs}
    seeds = sorted(
        seed
        for seed in {r["seed"] for r in runs}
        if {r["strategy"] for r in runs if r["seed"] == seed} == names
    )
    return seeds, [r for r in runs if r["seed"] in seeds]


def markdown(result: dict[str, Any], grace_period: int, reduction_factor: float) -> str:
    """The section's table (means over seeds) and the per-seed epochs to the common target."""
    lines = [
        "| strategy | trial-epochs to target | wall s to target | total trial-epochs | total wall s "
        "| final best val macro F1 | random full / strategy, epochs to common target "
        "| random full / strategy, pairwise target | epochs to target per seed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in result["summary"].items():
        per_seed = " / ".join(str(p["epochs"]) for p in s["per_seed"])
        lines.append(
            f"| {STRATEGIES[name].describe(grace_period, reduction_factor)} | "
            f"{s['trial_epochs_to_target']:.1f} | {s['seconds_to_target']:.0f} | "
            f"{s['total_trial_epochs']:.1f} | {s['total_wall_s']:.0f} | {s['final_best']:.4f} | "
            f"**{s['epochs_saved_vs_baseline']:.2f}x** | "
            f"{s['epochs_saved_vs_baseline_pairwise']:.2f}x | {per_seed} |"
        )
    return "\n".join(lines)
