"""The ``hpa-tune`` command line: prepare, run, refit, report, predict, tensorboard, models, check."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from hpa_tune.errors import HpaTuneError


class _Group(click.Group):
    """Prints user errors (bad files, rows, keys) as one line and exits 2, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpaTuneError as err:
            click.secho(f"error: {err}", fg="red", err=True)
            sys.exit(2)


def _progress(label: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpa-tune")
def main() -> None:
    """Hyperparameter search for HPA protein-localisation classifiers.

    \b
    Quick start (built-in HPA-like sample, CPU, a few minutes):
      hpa-tune run search_spaces/demo_space.yaml
    On the Kaggle data:
      hpa-tune prepare ~/kaggle/hpa --out ~/hpa-shards --sizes 64,224
      hpa-tune run search_spaces/densenet_space.yaml --data ~/hpa-shards
      hpa-tune predict results/densenet-*/refit --data ~/kaggle/hpa --out submission.csv
    Compare trials (curves, HParams table, refit PR curves) while it runs or after:
      hpa-tune tensorboard results/densenet_space-20261125-101500
    """


def _sizes(_: Any, __: Any, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers like 64,224, got {value!r}"
        ) from None
    if not sizes or any(s < 16 for s in sizes):
        raise click.BadParameter(f"expected sizes >= 16, got {value!r}")
    return sizes


@main.command()
@click.argument("raw_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory for shards.",
)
@click.option(
    "--sizes",
    default="64,224",
    callback=_sizes,
    show_default=True,
    help="Image sizes to prepare (px).",
)
@click.option("--val-fraction", default=0.15, show_default=True, type=float)
@click.option("--holdout-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=0, type=int, help="Decoding processes (default: one per CPU).")
@click.option(
    "--shard-mb", default=256, show_default=True, type=int, help="Size limit of one shard (MiB)."
)
@click.option("--strict", is_flag=True, help="Fail, listing them, if any sample is rejected.")
def prepare(
    raw_dir: Path,
    out_dir: Path,
    sizes: tuple[int, ...],
    val_fraction: float,
    holdout_fraction: float,
    seed: int,
    workers: int,
    shard_mb: int,
    strict: bool,
) -> None:
    """Turn a Kaggle-layout directory into Parquet shards, a manifest and stratified splits.

    \b
    RAW_DIR holds train.csv (Id,Target) and train/{Id}_{red,green,blue,yellow}.png
    (.tif/.jpg accepted), optionally sample_submission.csv and test/.
    Example: hpa-tune prepare ~/kaggle/hpa --out ~/hpa-shards --sizes 64,224
    """
    from hpa_tune.data.prepare import PrepareOptions
    from hpa_tune.data.prepare import prepare as run_prepare

    options = PrepareOptions(
        sizes=sizes,
        val_fraction=val_fraction,
        holdout_fraction=holdout_fraction,
        seed=seed,
        workers=workers,
        strict=strict,
        shard_bytes=shard_mb * 2**20,
    )
    bar, update = _progress("decoding")
    try:
        with bar:
            result = run_prepare(raw_dir, out_dir, options, progress=update)
    except ValueError as err:
        raise HpaTuneError(str(err)) from None
    m = result.manifest
    click.echo("splits: " + ", ".join(f"{k} {v}" for k, v in m.splits.items()))
    click.echo(
        f"rejected: {m.rejected}"
        + (f" ({m.extra['rejected_by_reason']})" if m.rejected else "")
        + f", see {out_dir / 'rejected.csv'}"
    )
    click.echo(f"resized (not {options.expected_size}x{options.expected_size}): {m.resized}")
    click.echo(f"wrote {len(m.shards)} shard(s) and manifest.json to {out_dir}")


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from hpa_tune.config import config_keys

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HpaTuneError(f"--set {pair!r}: expected KEY=VALUE")
        if key not in config_keys():
            raise HpaTuneError(f"--set {key}: unknown key; valid keys: {', '.join(config_keys())}")
        out[key] = yaml.safe_load(value)
    return out


@main.command()
@click.argument("space", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="Prepared shards (default: built-in sample).",
)
@click.option("--storage", default="results", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", help="Experiment name (default: SPACE-TIMESTAMP).")
@click.option("--num-samples", type=int, help="Number of trials.")
@click.option("--max-epochs", type=int, help="Epochs of a trial that is never pruned.")
@click.option(
    "--time-budget-s", type=float, help="Stop starting/continuing trials after this many seconds."
)
@click.option("--cpus-per-trial", type=float)
@click.option("--gpus-per-trial", type=float)
@click.option("--max-concurrent", type=int, help="Trials running at once.")
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
    from hpa_tune.runner import RunOptions, load_run_data, plan_run, run_search, write_results

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
        seed=seed,
        overrides=_parse_overrides(overrides),
        live=not quiet,
    )
    builtin = data_dir is None
    if builtin:
        from hpa_tune.data.builtin import cached_builtin_sample, ensure_builtin_sample

        click.echo(
            "no --data given: running on the built-in HPA-like sample with the space's CPU-sized demo budget"
        )
        data_dir = cached_builtin_sample()
        if data_dir is None:
            bar, update = _progress("preparing sample")
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
    frame, best = write_results(plan, records)
    _print_trials(frame, plan.spec.metric)
    click.echo(
        f"best: trial {best.trial_id}, {best.metric} {best.value:.4f} at epoch {best.epoch}, "
        f"params {best.params}"
    )
    if not no_refit:
        _refit_and_print(plan.exp_dir, data, all_trials=plan.spec.score_all_trials)
    click.echo(f"experiment: {plan.exp_dir}")


def _console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_trials(frame: Any, metric: str) -> None:
    from rich.table import Table

    table = Table(title="trials (best first)")
    param_cols = [c for c in frame.columns if c.startswith("param:")]
    headers = {
        "trial_id": "trial",
        "train_macro_f1": "train F1",
        "train_loss": "train loss",
        "val_macro_f1": "val F1",
        "val_loss": "val loss",
        f"best_{metric}": f"best {metric}",
    }
    cols = [
        "trial_id",
        *([] if "param:arch" in param_cols else ["arch"]),
        *param_cols,
        "epochs",
        "status",
        "train_macro_f1",
        "train_loss",
        "val_macro_f1",
        "val_loss",
        f"best_{metric}",
    ]
    for col in cols:
        table.add_column(headers.get(col, col.removeprefix("param:")))
    for _, row in frame.iterrows():
        table.add_row(*[_fmt(row.get(c)) for c in cols])
    _console().print(table)
    for _, row in frame[frame["status"] == "error"].iterrows():
        click.secho(f"trial {row['trial_id']} failed: {row['error']}", fg="red", err=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _refit_and_print(exp_dir: Path, data: Any = None, all_trials: bool = False) -> None:
    from hpa_tune.evaluation import score_trials
    from hpa_tune.refit import refit as run_refit

    bar, update = _progress("refit epochs")
    with bar:
        result = run_refit(exp_dir, data, log=click.echo, progress=update)
    m = result.metrics
    trivial = m["trivial_holdout_macro_f1"]
    click.echo(
        f"holdout macro F1 @0.5: {m['holdout_macro_f1@0.5']:.4f}; tuned thresholds: "
        f"{m['holdout_macro_f1_tuned']:.4f} (val, tuned: {m['val_macro_f1_tuned']:.4f}); "
        f"trivial: all-positive {trivial['all_positive']:.4f}, class-prior {trivial['class_prior']:.4f}"
    )
    click.echo(f"refit model, thresholds and metrics: {result.refit_dir}")
    if all_trials:
        score_trials(exp_dir, data, log=click.echo)


@main.command()
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option(
    "--all-trials", is_flag=True, help="Also score every trial's best checkpoint on the holdout."
)
def refit(experiment_dir: Path, all_trials: bool) -> None:
    """Retrain the winner of EXPERIMENT_DIR, tune per-class thresholds on val, score the holdout.

    Example: hpa-tune refit results/densenet_space-20261125-101500
    """
    _refit_and_print(experiment_dir, all_trials=all_trials)
    click.echo(f"experiment: {experiment_dir}")


@main.command()
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Output directory (default: EXPERIMENT_DIR/report).",
)
@click.option(
    "--table",
    "table_only",
    is_flag=True,
    help="Only the study table: print it (Markdown) and write study_table.md/.csv.",
)
def report(experiment_dir: Path, out_dir: Path | None, table_only: bool) -> None:
    """Report on EXPERIMENT_DIR: the study table, or a self-contained HTML page with its figures.

    \b
    The HTML page (report.html, images embedded) shows best-so-far val macro F1 against time and
    trial-epochs, each trial's curve with ASHA's rungs, hyperparameter importance (Optuna), the
    refit model's per-class F1 at 0.5 vs tuned thresholds, the trial table and the cost; the
    PNGs and CSVs behind it are written beside it.
    \b
    Examples:
      hpa-tune report results/demo_space-20261125-101500
      hpa-tune report results/study_table-20261125-101500 --table
      hpa-tune report results/densenet_space-20261125-101500 --out ~/reports/densenet
    """
    from hpa_tune.report import write_report, write_study_table

    if table_only:
        _, md_path, csv_path = write_study_table(experiment_dir, out_dir)
        click.echo(md_path.read_text())
        click.echo(f"wrote {md_path} and {csv_path}")
        return
    path = write_report(experiment_dir, out_dir)
    click.echo(f"report: {path}")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Prepared shards (test split) or a raw Kaggle directory (test/ + sample_submission.csv).",
)
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option(
    "--workers",
    default=0,
    type=int,
    help="Decoding processes for raw images (default: one per CPU).",
)
def predict(model_dir: Path, data_dir: Path, out_path: Path, workers: int) -> None:
    """Write a Kaggle submission (Id,Predicted) with a refit model.

    Example: hpa-tune predict results/demo-*/refit --data ~/kaggle/hpa --out submission.csv
    """
    from hpa_tune.predict import predict_submission

    sub = predict_submission(model_dir, data_dir, out_path, workers)
    if sub.unreadable:
        click.secho(
            f"warning: {len(sub.unreadable)} test image(s) unreadable, given the most frequent class: "
            + ", ".join(sub.unreadable[:10]),
            fg="yellow",
            err=True,
        )
    click.echo(f"wrote {sub.rows} rows to {sub.path}")


@main.command("tensorboard")
@click.argument("experiment_dir", type=click.Path(path_type=Path))
@click.option("--port", default=6006, show_default=True, type=int)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all)."
)
def tensorboard_cmd(experiment_dir: Path, port: int, host: str) -> None:
    """Serve EXPERIMENT_DIR/tensorboard (trial curves, HParams table, refit) until Ctrl-C.

    \b
    Example: hpa-tune tensorboard results/demo_space-20261125-101500 --port 6007
    Over SSH: ssh -L 6006:localhost:6006 HOST, then open http://localhost:6006/
    """
    import time

    from hpa_tune.tensorboard_log import launch_server

    url = launch_server(experiment_dir, host=host, port=port)
    click.echo(f"TensorBoard at {url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped")


@main.command()
def models() -> None:
    """List registered models with native input size and freeze levels.

    \b
    Use a name as `arch` in a search space, a level as `freeze`:
      hpa-tune models
      hpa-tune run search_spaces/resnet_space.yaml --set arch=resnet34 --set freeze=layer4
    """
    from hpa_tune.models import list_models

    for info in list_models():
        click.echo(
            f"{info.name:14s} {info.native_size:4d}px  freeze: {', '.join(info.freeze_levels):40s} "
            f"{info.description}"
        )


@main.command()
@click.argument("space", type=click.Path(path_type=Path))
@click.option("-n", "samples", default=3, show_default=True, help="Sampled configurations to show.")
def check(space: Path, samples: int) -> None:
    """Validate a search space and show its parameters and a few sampled configurations.

    Nothing is trained. A broken space prints the file, the key and the problem, and exits 2.

    \b
    Examples:
      hpa-tune check search_spaces/all_space.yaml
      hpa-tune check my_space.yaml -n 10
    """
    from hpa_tune.search_space import load_space, preview_configs

    spec = load_space(space)
    click.echo(
        f"{space}: space {spec.name!r}, metric {spec.metric} ({spec.mode}), scheduler {spec.scheduler.type}, "
        f"budget {spec.budget.num_samples} trials x {spec.budget.max_epochs} epochs "
        f"(demo: {spec.demo.num_samples} x {spec.demo.max_epochs})"
    )
    for name, p in spec.params.items():
        dist = (
            p.choices
            if p.type == "categorical"
            else f"[{p.low}, {p.high}]" + (" log" if p.log else "")
        )
        cond = f"  when {p.when}" if p.when else ""
        target = f" -> {p.sets}" if p.sets else ""
        click.echo(f"  {name}{target}: {p.type} {dist}{cond}")
    click.echo(f"  fixed: {spec.fixed}")
    for params, _cfg in preview_configs(spec, dict(spec.fixed), n=24)[:samples]:
        click.echo(f"  sample: {params}")
    click.echo("ok")


if __name__ == "__main__":
    main()
