"""What the commands share: one-line user errors, progress bars, the console, table cells."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hpa_tune.errors import HpaTuneError


class OneLineErrors(click.Group):
    """Prints user errors (bad files, rows, keys) as one line and exits 2, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from hpa_tune.ray_layer.faults import SearchInterrupted, stop_signal

        try:
            return super().invoke(ctx)
        except SearchInterrupted as stopped:  # Ctrl-C: not an error, the way back is printed
            sys.stdout.flush()
            click.secho(str(stopped), fg="yellow", err=True)
            sys.exit(stopped.exit_code)
        except (
            KeyboardInterrupt
        ):  # Ctrl-C or SIGTERM outside the search (faults.install_stop_handlers)
            name = "SIGTERM" if stop_signal() == signal.SIGTERM else "Ctrl-C"
            click.secho(f"interrupted ({name}); stopping", fg="yellow", err=True)
            sys.exit(128 + (stop_signal() or signal.SIGINT))
        except HpaTuneError as err:
            sys.stdout.flush()  # what was printed comes first, and ends its line
            click.secho(f"error: {' '.join(str(err).split())}", fg="red", err=True)
            sys.exit(2)
        except click.UsageError as err:
            # A bad option value (e.g. --num-samples 0) is a user error like any other: one line.
            command = err.ctx.command_path if err.ctx else ctx.command_path
            sys.stdout.flush()
            click.secho(
                f"error: {' '.join(err.format_message().split())} (see {command} --help)",
                fg="red",
                err=True,
            )
            sys.exit(2)


class _Bar:
    """A rich progress bar shown from its first update on (none for work that never reports,
    e.g. a refit that reuses checkpoints), and never when ``shown`` is False."""

    def __init__(self, label: str, shown: bool):
        self.label, self.shown = label, shown
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, keep: bool = True) -> None:
        """Stop the bar; ``keep=False`` erases it (an error then stands alone on its line)."""
        if self._bar is not None:
            self._bar.live.transient = not keep
            self._bar.stop()
            self._bar = None

    def update(self, done: int, total: int) -> None:
        if not self.shown:
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            columns = (TextColumn(self.label), BarColumn(), MofNCompleteColumn())
            self._bar = Progress(*columns, TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(self.label, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=done, total=total)


def progress_bar(label: str, shown: bool = True) -> tuple[Any, Callable[[int, int], None]]:
    """A context manager and its ``update(done, total)``: a bar on the terminal from the first
    update on; nothing when not ``shown`` (plain or no progress: the log lines say it)."""
    bar = _Bar(label, shown)
    return bar, bar.update


def console() -> Any:
    """The console for tables: the terminal's width, or in a log as wide as the table needs
    (no column cut to ``batch_s…``)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=_LOG_WIDTH)


_LOG_WIDTH = 1000  # wider than any table: rich then sizes each column to its content


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
        # A narrow terminal wraps a cell rather than cutting it (``batch_s…``).
        table.add_column(headers.get(col, col.removeprefix("param:")), overflow="fold")
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
