"""``run`` (the search, then refit) and ``refit``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import yaml

from hpa_tune.cli._common import print_trials, progress_bar
from hpa_tune.errors import HpaTuneError
from hpa_tune.report.search_view import PROGRESS_MODES


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from hpa_tune.train.config import config_keys

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


def progress_options(command: Any) -> Any:
    """``--progress auto|live|plain|none`` and ``--quiet`` (the same as ``--progress none``)."""
    command = click.option(
        "--quiet", is_flag=True, help="Same as --progress none; Ray's logs go to files only."
    )(command)
    return click.option(
        "--progress",
        type=click.Choice(PROGRESS_MODES),
        default="auto",
        show_default=True,
        help="How trials are shown while they run: live (an updating table), plain (one line "
        "per trial event and a status line a minute, for logs), none; auto is live on a "
        "terminal, plain otherwise.",
    )(command)


def _progress(requested: str, quiet: bool) -> str:
    from hpa_tune.report.search_view import progress_mode

    return "none" if quiet else progress_mode(requested, sys.stdout.isatty())


@click.command()
@click.argument("space", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    help="Prepared shards: a directory, s3://... or gs://... (default: built-in sample).",
)
@click.option(
    "--storage",
    default="results",
    show_default=True,
    help="Where experiments go: a directory, s3://... or gs://...",
)
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
@click.option(
    "--warm-start",
    "warm_start",
    multiple=True,
    metavar="EXP",
    help="Start from earlier experiments (a directory, s3://... or gs://...; repeatable): their "
    "finished trials join the new study for the parameters the spaces share (a trial with a "
    "value outside the new space is skipped, a parameter the new space lacks dropped, each "
    "with a note) and the first trial is their winner. Same metric and mode only.",
)
@click.option(
    "--default-only",
    is_flag=True,
    help="No search: train the space's default point (its first points_to_evaluate) alone, one "
    "trial of --max-epochs at the full image size, its refit reusing that trial's checkpoint. "
    "At small budgets this beat every search we measured (BENCHMARKS.md 7.2).",
)
@progress_options
def run(
    space: Path,
    data_dir: str | None,
    storage: str,
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
    warm_start: tuple[str, ...],
    default_only: bool,
    progress: str,
    quiet: bool,
) -> None:
    """Search SPACE with Ray Tune (Optuna TPE + ASHA on whole-set val macro F1), then refit the winner.

    \b
    Examples:
      hpa-tune run search_spaces/demo_space.yaml                 # built-in sample, CPU
      hpa-tune run search_spaces/densenet_space.yaml --data ~/hpa-shards --gpus-per-trial 1
      hpa-tune run search_spaces/resnet_space.yaml --data ~/hpa-shards --set image_size=64
      hpa-tune run search_spaces/densenet_space.yaml --data s3://bucket/hpa-shards --storage s3://bucket/runs
      hpa-tune run search_spaces/densenet_space.yaml --data ~/hpa-shards --set image_size=224 \\
          --warm-start results/densenet_space-64px    # continue a cheap 64 px study
      hpa-tune run search_spaces/baseline_space.yaml --data ~/hpa-shards --default-only \\
          --max-epochs 90                               # the default alone, for the whole budget
    """
    from hpa_tune.search.space import load_space

    # A missing or broken space file is reported before torch and Ray are imported (~10 s, 1 GB).
    load_space(space)
    if default_only and (warm_start or (num_samples or 1) > 1):
        raise HpaTuneError(
            "--default-only trains one trial of the default point; it takes no --warm-start and "
            f"no --num-samples above 1 (got {num_samples or 1} and {len(warm_start)} earlier studies)"
        )
    from hpa_tune.ray_layer.runner import run_search
    from hpa_tune.search.experiment import check_new_experiment, check_storage
    from hpa_tune.search.planning import RunOptions, check_run_data, plan_run, warm_started
    from hpa_tune.storage.driver_claim import driver_claim
    from hpa_tune.storage.staging import check_new_remote, local_experiment

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
        progress=_progress(progress, quiet),
        default_only=default_only,
    )
    builtin = data_dir is None
    # Every value is checked before any work (rendering the sample, loading data, starting Ray).
    check_storage(storage)
    plan = plan_run(options, data_dir or Path("<built-in sample>"), builtin)
    warm = _warm_start(warm_start, plan) if warm_start else None
    # One driver per experiment, held until the command ends (the refit included): a second
    # run with this --name, started a moment later, stops here naming this one.
    click.get_current_context().with_resource(driver_claim(plan.location, "run"))
    check_new_experiment(plan.exp_dir)
    check_new_remote(plan.location)
    options = replace(options, name=plan.exp_dir.name)  # the same name once the data is known
    if builtin:
        from hpa_tune.data.builtin_sample.prepared import (
            cached_builtin_sample,
            ensure_builtin_sample,
        )

        click.echo(
            "no --data given: running on the built-in HPA-like sample with the space's CPU-sized demo budget"
        )
        sample = cached_builtin_sample()
        if sample is None:
            bar, update = progress_bar("preparing sample", options.progress == "live")
            with bar:
                sample = ensure_builtin_sample(progress=update, log=click.echo)
        data_dir = str(sample)
    assert data_dir is not None
    plan = plan_run(options, data_dir, builtin)
    plan = warm_started(plan, warm) if warm is not None else plan
    rec = plan.record
    check_run_data(rec)  # an image size not prepared, an unusable shard cache: before any output
    trials = (
        "the default point alone (--default-only), 1 trial"
        if default_only
        else f"{rec.num_samples} trials"
    )
    click.echo(
        f"search: {plan.spec.name}, {trials} x up to {rec.max_epochs} epochs, "
        f"image sizes {rec.sizes}, data {rec.data_dir}"
    )
    # On object storage our files are written to a staging copy and uploaded when the search
    # ends; the refit (a Ray task, perhaps on another node) then reads them from there.
    with local_experiment(plan.location, download=False):
        records = run_search(plan, progress=options.progress)
        _results(plan, records)
    if not no_refit:
        _refit_and_print(
            plan.location,
            all_trials=plan.spec.score_all_trials,
            on_ray=True,
            bar=options.progress == "live",
        )
    click.echo(f"experiment: {plan.location}")


def _warm_start(locations: tuple[str, ...], plan: Any) -> Any:
    """The earlier studies' trials and winner for ``plan`` (``search.warm_start``), notes printed."""
    from hpa_tune.search.earlier_studies import load_warm_start

    return load_warm_start(locations, plan.spec, plan.record.constants, log=click.echo)


def _claim_experiment(experiment_dir: str, command: str) -> None:
    """Hold ``experiment_dir`` for this command until it ends (``driver_claim``); a path that
    holds nothing gets no claim (the command then says what is missing).

    Raises:
        ExperimentBusy: another live driver (a run, resume or refit) holds it.
    """
    from hpa_tune.search.experiment import experiment_started
    from hpa_tune.storage.driver_claim import driver_claim

    if experiment_started(experiment_dir):
        click.get_current_context().with_resource(driver_claim(experiment_dir, command))


def _results(plan: Any, records: list[Any]) -> None:
    from hpa_tune.search.results import budget_note, write_results

    note = budget_note(records)
    if note:  # said first: it is also why the search may have no winner
        budget = plan.record.time_budget_s
        click.echo(
            f"time budget{f' of {budget:g} s' if budget else ''} ran out: {note} "
            "(the search ended before their first epoch; not in summary.csv)"
        )
    frame, best = write_results(plan, records)
    print_trials(frame, plan.spec.metric)
    click.echo(
        f"best: trial {best.trial_id}, {best.metric} {best.value:.4f} at epoch {best.epoch}, "
        f"params {best.params}"
    )


def _refit_and_print(
    location: str | Path,
    all_trials: bool = False,
    on_ray: bool | None = None,
    top_k: int | None = None,
    tta: bool | None = None,
    bar: bool = True,
) -> None:
    """Refit the experiment at ``location`` (here, or as a Ray task: ``refit_experiment``
    decides when ``on_ray`` is None) and print its result; ``bar``: a progress bar of its
    epochs (else its log lines alone)."""
    from hpa_tune.ray_layer.refit_experiment import refit_experiment

    epochs, update = progress_bar("refit epochs", bar)
    with epochs:
        result = refit_experiment(
            location,
            on_ray=on_ray,
            all_trials=all_trials,
            top_k=top_k,
            tta=tta,
            log=click.echo,
            progress=update,
        )
    _print_refit(result, location)


def _print_refit(result: Any, location: str | Path) -> None:
    from hpa_tune.scoring.predictor_scores import predictor_table
    from hpa_tune.storage import filesystems as storage

    m = result.metrics
    trivial = m["trivial_holdout_macro_f1"]
    for line in predictor_table(m["predictors"], m["predictor"]):
        click.echo(line)
    click.echo(
        f"final predictor: {m['predictor']} (trials {', '.join(m['members'])}), thresholds "
        f"{m['threshold_method']} (chosen by cross-validation on val); holdout macro F1 "
        f"{m['holdout_macro_f1_tuned']:.4f} (@0.5: {m['holdout_macro_f1@0.5']:.4f}); "
        f"trivial: all-positive {trivial['all_positive']:.4f}, class-prior {trivial['class_prior']:.4f}"
    )
    # A bucket experiment's refit was written to a staging copy and uploaded: name the bucket.
    remote = storage.is_remote(location)
    refit_dir = storage.join(location, result.refit_dir.name) if remote else result.refit_dir
    click.echo(f"refit model, thresholds and metrics: {refit_dir}")


@click.command()
@click.argument("experiment_dir")
@click.option("--no-refit", is_flag=True, help="Skip retraining the winner and tuning thresholds.")
@click.option(
    "--refit",
    "new_refit",
    is_flag=True,
    help="On a finished experiment: train a new refit (replaces refit/; hpa-tune refit also "
    "takes --top-k and --tta).",
)
@progress_options
def resume(
    experiment_dir: str, no_refit: bool, new_refit: bool, progress: str, quiet: bool
) -> None:
    """Continue the search in EXPERIMENT_DIR after its driver died or was stopped (Ctrl-C).

    Finished trials are kept, running ones restart from their last epoch's checkpoint, the
    Optuna study and ASHA's rungs carry on; then the results and the refit, as in run.
    A finished experiment (its summary.csv written) is left as it is: resume says so, and
    --refit asks for a new refit. EXPERIMENT_DIR may be on object storage (s3://..., gs://...).

    Example: hpa-tune resume results/densenet_space-20261125-101500
    """
    from hpa_tune.ray_layer.resume import finished_search, plan_resume, resume_search
    from hpa_tune.storage import filesystems as storage
    from hpa_tune.storage.staging import local_experiment

    if no_refit and new_refit:
        raise HpaTuneError("--refit and --no-refit: choose one")
    finished = finished_search(experiment_dir)
    if finished is not None:
        click.echo(finished)
        if new_refit:
            _claim_experiment(experiment_dir, "refit")
            _refit_and_print(experiment_dir, on_ray=True)
        click.echo(f"experiment: {experiment_dir}")
        return
    _claim_experiment(experiment_dir, "resume")
    with local_experiment(experiment_dir) as exp_dir:
        remote = storage.location_arg(experiment_dir) if storage.is_remote(experiment_dir) else ""
        plan = plan_resume(exp_dir, location=remote)
        rec = plan.record
        click.echo(
            f"resuming: {plan.spec.name}, {rec.num_samples} trials x up to {rec.max_epochs} "
            f"epochs, experiment {experiment_dir}"
        )
        mode = _progress(progress, quiet)
        records = resume_search(plan, progress=mode)
        _results(plan, records)
    if not no_refit:
        _refit_and_print(
            plan.location, all_trials=plan.spec.score_all_trials, on_ray=True, bar=mode == "live"
        )
    click.echo(f"experiment: {plan.location}")


@click.command()
@click.argument("experiment_dir")
@click.option(
    "--all-trials", is_flag=True, help="Also score every trial's best checkpoint on the holdout."
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    help="Ensemble of the K best distinct configurations (default 1: the winner alone).",
)
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Average each image's 8 flips/rotations (default on).",
)
def refit(experiment_dir: str, all_trials: bool, top_k: int | None, tta: bool | None) -> None:
    """Retrain (or reuse) the K best configurations of EXPERIMENT_DIR, average them (TTA: over
    the 8 flips/rotations), choose thresholds on val, and score the holdout.

    \b
    EXPERIMENT_DIR may be on object storage (s3://..., gs://...): it is synced to a local staging
    copy, and the refit directory and TensorBoard events are uploaded back.
    Example: hpa-tune refit results/densenet_space-20261125-101500
    """
    # The refit writes refit/ (and trial_scores.csv): not while a search or another refit does.
    _claim_experiment(experiment_dir, "refit")
    # Joining a cluster (RAY_ADDRESS), the refit runs on a worker with the trials' resources.
    _refit_and_print(experiment_dir, all_trials=all_trials, top_k=top_k, tta=tta)
    click.echo(f"experiment: {experiment_dir}")
