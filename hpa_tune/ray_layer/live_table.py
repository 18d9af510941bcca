"""Live progress of a search: a compact, updating trial table and an overall line.

A Ray Tune callback (so it lives beside the runner, where trials are scheduled); the table
itself is built by a pure function of the trial states, which tests can call directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpa_tune.search.trial_table import ERROR, ended_status

# A trial Tune created but could not place yet: it waits for a node with its resources, on a
# cluster with an autoscaler often one that is being added.
RUNNING, PENDING = "running", "waiting for resources"


@dataclass
class TrialState:
    """What the table shows of one trial."""

    trial_id: str
    params: dict[str, Any]
    status: str = PENDING
    epoch: int = 0
    val_macro_f1: float | None = None
    best_val_macro_f1: float | None = None


@dataclass
class SearchState:
    """What the overall line shows; updated from Ray's callbacks."""

    num_samples: int
    max_epochs: int
    trials: dict[str, TrialState] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def best(self) -> TrialState | None:
        scored = [t for t in self.trials.values() if t.best_val_macro_f1 is not None]
        return max(scored, key=lambda t: t.best_val_macro_f1 or 0.0) if scored else None

    def finished(self) -> int:
        return sum(t.status not in (RUNNING, PENDING) for t in self.trials.values())

    def counts(self) -> str:
        """``N running`` and, when there are any, ``M waiting for resources``."""
        running = sum(t.status == RUNNING for t in self.trials.values())
        waiting = sum(t.status == PENDING for t in self.trials.values())
        return f"{running} running" + (f", {waiting} {PENDING}" if waiting else "")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render(state: SearchState, param_names: list[str], max_rows: int = 20) -> Group:
    """The live view: a bar of trials done with the totals, and a table of the most recent trials."""
    best = state.best()
    elapsed = time.monotonic() - state.started
    best_text = f"{best.best_val_macro_f1:.4f} (trial {best.trial_id})" if best else "-"
    head = Table.grid(padding=(0, 1))
    head.add_row(
        ProgressBar(total=state.num_samples, completed=state.finished(), width=30),
        Text(
            f"trials {state.finished()}/{state.num_samples} done, {state.counts()}, "
            f"elapsed {elapsed:.0f}s, best val macro F1 {best_text}"
        ),
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ["trial", *param_names, "epoch", "val F1", "best", "status"]:
        table.add_column(col)
    for t in list(state.trials.values())[-max_rows:]:
        table.add_row(
            t.trial_id,
            *[_short(t.params.get(p, "-")) for p in param_names],
            f"{t.epoch}/{state.max_epochs}",
            "-" if t.val_macro_f1 is None else f"{t.val_macro_f1:.4f}",
            "-" if t.best_val_macro_f1 is None else f"{t.best_val_macro_f1:.4f}",
            t.status,
        )
    return Group(head, table)


class LiveProgress(Callback):
    """Ray Tune callback that keeps a rich Live view of the search up to date."""

    def __init__(self, num_samples: int, max_epochs: int, param_names: list[str]):
        self.state = SearchState(num_samples, max_epochs)
        self.param_names = param_names
        self.live: Live | None = None  # created on first use: the Tuner pickles its callbacks

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "live": None}

    def _trial(self, trial: Any) -> TrialState:
        key = trial.trial_id
        if key not in self.state.trials:
            params = {p: trial.config.get(p) for p in self.param_names if p in trial.config}
            self.state.trials[key] = TrialState(key, params)
        return self.state.trials[key]

    def _refresh(self) -> None:
        if self.live is None:
            console = Console()
            console = console if console.is_terminal else Console(width=160)
            self.live = Live(console=console, refresh_per_second=2, transient=False)
            self.live.start()
        self.live.update(render(self.state, self.param_names))

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Show trials Tune created but has not placed yet as waiting for resources."""
        new = [t for t in trials if t.status == "PENDING" and t.trial_id not in self.state.trials]
        for trial in new:
            self._trial(trial)  # created as PENDING
        if new:
            self._refresh()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial).status = RUNNING
        self._refresh()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        t = self._trial(trial)
        t.epoch = int(result.get("epoch", t.epoch))
        t.val_macro_f1 = result.get("val_macro_f1")
        t.best_val_macro_f1 = result.get("best_val_macro_f1")
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        t = self._trial(trial)
        t.status = ended_status(t.epoch, self.state.max_epochs)
        self._refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._trial(trial).status = ERROR
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.update(render(self.state, self.param_names))
            self.live.stop()
            self.live = None
