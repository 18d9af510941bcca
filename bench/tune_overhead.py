"""Ray Tune's own cost per trial: a search of trivial trials against the sum of their run times.

Each trial sleeps a fixed time and reports once; the search uses what ``hpa-tune run`` uses
(OptunaSearch with TPE, ASHA, one checkpoint-less function trainable, one trial at a time), so
everything Tune adds around a trial is in the wall time: scheduling, starting the trial's actor,
the searcher's suggest/complete, result processing, experiment-state snapshots. Ray's start-up is
not (``ray.init`` happens before the clock starts).

    overhead per trial = (search wall time - sum of the trials' own run times) / trials

Both settings of Tune's ``reuse_actors`` are measured in the same run: without it every trial
starts a new Ray worker process (Python, Ray and the trainable's imports); with it (what
``hpa-tune run`` uses) a finished trial's actor runs the next one. Beside the overall figure, the
median gap between one trial's end and the next one's start (steady state) and the time to the
first trial's start (a one-off per search: the first worker process) are given.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any


def _sleeping_trial(config: dict[str, Any]) -> None:
    from ray import tune

    start, wall_start = time.perf_counter(), time.time()
    time.sleep(config["sleep_s"])
    own = time.perf_counter() - start
    tune.report({"score": config["x"], "own_s": own, "t0": wall_start, "t1": wall_start + own})


def measure_tune_overhead(
    trials: int, sleep_s: float, storage: Path, reuse_actors: bool = True
) -> dict[str, Any]:
    """Run the search (Ray must be initialised) and return its wall time and overhead per trial."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        metric="score",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    )
    tuner = tune.Tuner(
        tune.with_resources(_sleeping_trial, {"cpu": 1}),
        param_space={"sleep_s": sleep_s},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            search_alg=searcher,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=1, grace_period=1),
            num_samples=trials,
            max_concurrent_trials=1,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=f"overhead-reuse{int(reuse_actors)}", storage_path=str(storage), verbose=0
        ),
    )
    start, wall_start = time.perf_counter(), time.time()
    results = tuner.fit()
    wall = time.perf_counter() - start
    own = [float(r.metrics["own_s"]) for r in results]  # type: ignore[attr-defined]
    spans = sorted((float(r.metrics["t0"]), float(r.metrics["t1"])) for r in results)  # type: ignore[attr-defined]
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return {
        "reuse_actors": reuse_actors,
        "trials": trials,
        "sleep_s": sleep_s,
        "wall_s": wall,
        "trials_own_s": sum(own),
        "tune_overhead_s_per_trial": (wall - sum(own)) / trials,
        "median_gap_between_trials_s": statistics.median(gaps) if gaps else 0.0,
        "first_trial_start_s": spans[0][0] - wall_start,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """The section's table, one row per ``reuse_actors`` setting."""
    lines = [
        "| reuse_actors | trials | sleep per trial (s) | search wall (s) | trials' own time (s) "
        "| **overhead per trial (s)** | median gap between trials (s) | first trial starts after (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['reuse_actors']} | {r['trials']} | {r['sleep_s']:g} | {r['wall_s']:.1f} | "
            f"{r['trials_own_s']:.1f} | **{r['tune_overhead_s_per_trial']:.2f}** | "
            f"{r['median_gap_between_trials_s']:.2f} | {r['first_trial_start_s']:.1f} |"
        )
    return "\n".join(lines)
