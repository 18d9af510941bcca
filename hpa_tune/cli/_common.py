"""What the commands share: one-line user errors, progress bars, the console, table cells."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hpa_tune.errors import HpaTuneError


class OneLineErrors(click.Group):
    """Prints user errors (bad files, rows, keys) as one line and exits 2, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from hpa_tune.ray_layer.faults import SearchInterrupted

        try:
            return super().invoke(ctx)
        except SearchInterrupted as stopped:  # Ctrl-C: not an error, the way back is printed
            click.secho(str(stopped), fg="yellow", err=True)
            sys.exit(130)
        except HpaTuneError as err:
            click.secho(f"error: {' '.join(str(err).split())}", fg="red", err=True)
            sys.exit(2)
        except click.UsageError as err:
            # A bad option value (e.g. --num-samples 0) is a user error like any other: one line.
            command = err.ctx.command_path if err.ctx else ctx.command_path
            click.secho(
                f"error: {' '.join(err.format_message().split())} (see {command} --help)",
                fg="red",
                err=True,
            )
            sys.exit(2)


def progress_bar(label: str) -> tuple[Any, Callable[[int, int], None]]:
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


def console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_trials(frame: Any, metric: str) -> None:
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
        table.add_row(*[fmt_cell(row.get(c)) for c in cols])
    console().print(table)
    for _, row in frame[frame["status"] == "error"].iterrows():
        where = Path(str(row["checkpoint"])) / "error.txt"
        trace = f" (traceback: {where})" if where.is_file() else ""
        click.secho(f"trial {row['trial_id']} failed: {row['error']}{trace}", fg="red", err=True)


def fmt_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
