"""Looking at results and inputs: ``status``, ``report``, ``tensorboard``, ``models``, ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hpa_tune.cli._common import console


@click.command()
@click.argument("experiment_dir")
@click.option("--watch", is_flag=True, help="Refresh until the search has finished (Ctrl-C stops).")
@click.option(
    "--interval",
    type=click.FloatRange(min=1),
    default=10,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
def status(experiment_dir: str, watch: bool, interval: float) -> None:
    """The trial table, the overall line and the best trial of a running or finished search.

    \b
    Read from EXPERIMENT_DIR's files (the Optuna journal while it runs, summary.csv and
    best.json once it ended), from any shell or machine that can read it; nothing is written.
    \b
    Examples:
      hpa-tune status results/demo_space-20261125-101500
      hpa-tune status results/demo_space-20261125-101500 --watch
      hpa-tune status s3://bucket/runs/densenet_space-20261125-101500
    """
    import time

    from hpa_tune.report.experiment_status import read_status

    out = console()
    while True:
        current = read_status(experiment_dir)
        if watch and out.is_terminal:
            out.clear()
        _print_status(out, current)
        if not watch or current.finished:
            return
        time.sleep(interval)
        if not out.is_terminal:
            out.line()  # snapshots in a log are separated by a blank line


def _print_status(out: Any, current: Any) -> None:
    from hpa_tune.report.experiment_status import headline
    from hpa_tune.report.search_view import overall_text, trial_table

    s = current.state
    out.print(headline(current), soft_wrap=True)
    overall = overall_text(s, current.elapsed_s, current.time_budget_s, eta=not current.finished)
    out.print(overall, soft_wrap=True)
    out.print(trial_table(s, current.param_names, max_rows=None))
    for line in (current.best, current.refit):
        if line:
            out.print(line, soft_wrap=True, markup=False)


@click.command()
@click.argument("experiment_dir")
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
def report(experiment_dir: str, out_dir: Path | None, table_only: bool) -> None:
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
      hpa-tune report s3://bucket/runs/densenet_space-20261125-101500   # written back there
    """
    from hpa_tune.report import write_report, write_study_table
    from hpa_tune.storage import filesystems as storage
    from hpa_tune.storage.staging import local_experiment

    remote = storage.is_remote(experiment_dir)
    # Without --out the report is written into the experiment, so it goes back to the bucket.
    with local_experiment(experiment_dir, upload=out_dir is None) as exp_dir:
        if table_only:
            _, md_path, csv_path = write_study_table(exp_dir, out_dir)
            click.echo(md_path.read_text())
            click.echo(
                f"wrote {_shown(md_path, exp_dir, experiment_dir)} and "
                f"{_shown(csv_path, exp_dir, experiment_dir)}"
            )
            return
        path = write_report(exp_dir, out_dir)
    click.echo(f"report: {_shown(path, exp_dir, experiment_dir) if remote else path}")


def _shown(path: Path, exp_dir: Path, location: str) -> str:
    """``path`` as the user should look for it: in the bucket when written into a staged copy."""
    from hpa_tune.storage import filesystems as storage

    if storage.is_remote(location) and path.is_relative_to(exp_dir):
        return storage.join(location, path.relative_to(exp_dir).as_posix())
    return str(path)


@click.command("tensorboard")
@click.argument("experiment_dir")
@click.option("--port", default=6006, show_default=True, type=int)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all)."
)
def tensorboard_cmd(experiment_dir: str, port: int, host: str) -> None:
    """Serve EXPERIMENT_DIR/tensorboard (trial curves, HParams table, refit) until Ctrl-C.

    \b
    On object storage (s3://..., gs://...) the event files are first copied to a local staging
    directory (TensorBoard's own S3 support would need tensorflow-io); restart to see new events.
    Example: hpa-tune tensorboard results/demo_space-20261125-101500 --port 6007
    Over SSH: ssh -L 6006:localhost:6006 HOST, then open http://localhost:6006/
    """
    import time

    from hpa_tune.experiment_files import TENSORBOARD_DIR
    from hpa_tune.report.tensorboard_events import launch_server
    from hpa_tune.storage.staging import local_experiment

    with local_experiment(
        experiment_dir, upload=False, only=(f"{TENSORBOARD_DIR}/",), keep=True
    ) as exp_dir:
        url = launch_server(exp_dir, host=host, port=port)
    click.echo(f"TensorBoard at {url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopped")


@click.command()
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


@click.command()
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
    from hpa_tune.search.space import fidelity_constants, load_space, preview_configs

    spec = load_space(space)
    fidelity = fidelity_constants(spec, spec.budget.max_epochs)
    previews = preview_configs(spec, {**spec.fixed, **fidelity}, n=24)  # fails before printing
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
    if fidelity:
        steps = ", ".join(f"{size} px to epoch {last}" for last, size in fidelity["size_schedule"])
        click.echo(f"  fidelity (budget): {steps}")
    for params, _cfg in previews[:samples]:
        click.echo(f"  sample: {params}")
    click.echo("ok")
