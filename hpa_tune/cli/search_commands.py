"""``run`` (the search, then refit) and ``refit``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import yaml

from hpa_tune.cli._common import print_trials, progress_bar
from hpa_tune.errors import HpaTuneError


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from hpa_tune.config import config_keys

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HpaTuneError(f"--set {pair!r}: expected KEY=VALUE")
        if key not in config_keys():
            raise HpaTuneError(f"--set {key}: unknown key; valid keys: {', '.join(config_keys())}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", None) or err).split())
            raise HpaTuneError(
                f"--set {pair}: the value is not valid YAML ({problem}); quote it, "
                f"e.g. --set {key}='\"{value}\"' for a string"
            ) from None
    return out


@click.command()
@click.argument("space", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Prepared shards (default: built-in sample).",
)
@click.option("--storage", default="results", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", help="Experiment name (default: SPACE-TIMESTAMP).")
@click.option("--num-samples", type=click.IntRange(min=1), help="Number of trials.")
@click.option(
    "--max-epochs", type=click.IntRange(min=1), help="Epochs of a trial that is never pruned."
)
@click.option(
    "--time-budget-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop starting/continuing trials after this many seconds.",
)
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True))
@click.option("--gpus-per-trial", type=click.FloatRange(min=0))
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Trials running at once.")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    help="Retries of a trial whose process died, from its last checkpoint (space default: 2).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a fixed value (repeatable).",
)
@click.option("--no-refit", is_flag=True, help="Skip retraining the winner and tuning thresholds.")
@click.option("--quiet", is_flag=True, help="No live trial table; Ray's logs go to files only.")
def run(
    space: Path,
    data_dir: Path | None,
    storage: Path,
    name: str | None,
    num_samples: int | None,
    max_epochs: int | None,
    time_budget_s: float | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_concurrent: int | None,
    max_failures: int | None,
    seed: int,
    overrides: tuple[str, ...],
    no_refit: bool,
    quiet: bool,
) -> None:
    """Search SPACE with Ray Tune (Optuna TPE + ASHA on whole-set val macro F1), then refit the winner.

    \b
    Examples:
      hpa-tune run search_spaces/demo_space.yaml                 # built-in sample, CPU
      hpa-tune run search_spaces/densenet_space.yaml --data ~/hpa-shards --gpus-per-trial 1
      hpa-tune run search_spaces/resnet_space.yaml --data ~/hpa-shards --set image_size=64
    """
    from hpa_tune.experiment import check_new_experiment, check_storage
    from hpa_tune.runner import RunOptions, load_run_data, plan_run, run_search

    options = RunOptions(
        space_path=space,
        data_dir=data_dir,
        storage=storage,
        name=name,
        num_samples=num_samples,
        max_epochs=max_epochs,
        time_budget_s=time_budget_s,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_concurrent=max_concurrent,
        max_failures=max_failures,
        seed=seed,
        overrides=_parse_overrides(overrides),
        live=not quiet,
    )
    builtin = data_dir is None
    # Every value is checked before any work (rendering the sample, loading data, starting Ray).
    check_storage(storage)
    plan = plan_run(options, data_dir or Path("<built-in sample>"), builtin)
    check_new_experiment(plan.exp_dir)
    options = replace(options, name=plan.exp_dir.name)  # the same name once the data is known
    if builtin:
        from hpa_tune.data.builtin import cached_builtin_sample, ensure_builtin_sample

        click.echo(
            "no --data given: running on the built-in HPA-like sample with the space's CPU-sized demo budget"
        )
        data_dir = cached_builtin_sample()
        if data_dir is None:
            bar, update = progress_bar("preparing sample")
            with bar:
                data_dir = ensure_builtin_sample(progress=update, log=click.echo)
    assert data_dir is not None
    plan = plan_run(options, data_dir, builtin)
    rec = plan.record
    click.echo(
        f"search: {plan.spec.name}, {rec.num_samples} trials x up to {rec.max_epochs} epochs, "
        f"image sizes {rec.sizes}, data {rec.data_dir}"
    )
    data = load_run_data(plan)
    records = run_search(plan, data, live=options.live)
    _results_and_refit(plan, data, records, no_refit)


def _results_and_refit(plan: Any, data: Any, records: list[Any], no_refit: bool) -> None:
    from hpa_tune.runner import write_results

    frame, best = write_results(plan, records)
    print_trials(frame, plan.spec.metric)
    click.echo(
        f"best: trial {best.trial_id}, {best.metric} {best.value:.4f} at epoch {best.epoch}, "
        f"params {best.params}"
    )
    if not no_refit:
        _refit_and_print(plan.exp_dir, all_trials=plan.spec.score_all_trials, on_ray=True)
    click.echo(f"experiment: {plan.exp_dir}")


def _refit_and_print(exp_dir: Path, all_trials: bool = False, on_ray: bool = False) -> None:
    """Refit here, or ``on_ray`` as a Ray task with the trials' resources (a GPU worker on a cluster)."""
    from hpa_tune.evaluation import score_trials
    from hpa_tune.refit import refit as run_refit
    from hpa_tune.remote_refit import refit_on_ray

    bar, update = progress_bar("refit epochs")
    with bar:
        if on_ray:
            result = refit_on_ray(exp_dir, log=click.echo, progress=update, all_trials=all_trials)
        else:
            result = run_refit(exp_dir, log=click.echo, progress=update)
    m = result.metrics
    trivial = m["trivial_holdout_macro_f1"]
    click.echo(
        f"holdout macro F1 @0.5: {m['holdout_macro_f1@0.5']:.4f}; tuned thresholds: "
        f"{m['holdout_macro_f1_tuned']:.4f} (val, tuned: {m['val_macro_f1_tuned']:.4f}); "
        f"trivial: all-positive {trivial['all_positive']:.4f}, class-prior {trivial['class_prior']:.4f}"
    )
    click.echo(f"refit model, thresholds and metrics: {result.refit_dir}")
    if all_trials and not on_ray:  # on Ray, the refit task scored them
        score_trials(exp_dir, log=click.echo)


@click.command()
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option("--no-refit", is_flag=True, help="Skip retraining the winner and tuning thresholds.")
def resume(experiment_dir: Path, no_refit: bool) -> None:
    """Continue the search in EXPERIMENT_DIR after its driver died or was stopped (Ctrl-C).

    Finished trials are kept, running ones restart from their last epoch's checkpoint, the
    Optuna study and ASHA's rungs carry on; then the results and the refit, as in run.

    Example: hpa-tune resume results/densenet_space-20261125-101500
    """
    from hpa_tune.resume import plan_resume, resume_search
    from hpa_tune.runner import load_run_data

    plan = plan_resume(experiment_dir)
    rec = plan.record
    click.echo(
        f"resuming: {plan.spec.name}, {rec.num_samples} trials x up to {rec.max_epochs} epochs, "
        f"experiment {plan.exp_dir}"
    )
    data = load_run_data(plan)
    records = resume_search(plan, data)
    _results_and_refit(plan, data, records, no_refit)


@click.command()
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option(
    "--all-trials", is_flag=True, help="Also score every trial's best checkpoint on the holdout."
)
def refit(experiment_dir: Path, all_trials: bool) -> None:
    """Retrain the winner of EXPERIMENT_DIR, tune per-class thresholds on val, score the holdout.

    Example: hpa-tune refit results/densenet_space-20261125-101500
    """
    # Joining a cluster (RAY_ADDRESS), the refit runs on a worker with the trials' resources.
    _refit_and_print(
        experiment_dir, all_trials=all_trials, on_ray=bool(os.environ.get("RAY_ADDRESS"))
    )
    click.echo(f"experiment: {experiment_dir}")
