"""What a search looks like to a person: trial states, the overall line, the table and log lines.

Pure (no Ray): the live view and the plain log lines of a running search (``progress``) and
``hpa-tune status`` (``experiment_status``) build their output here from the same states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

# A trial Tune created but could not place yet: it waits for a node with its resources, on a
# cluster with an autoscaler often one that is being added.
RUNNING, PENDING = "running", "waiting for resources"
PROGRESS_MODES = ("auto", "live", "plain", "none")  # --progress of run and resume


def progress_mode(requested: str, is_terminal: bool) -> str:
    """``live``, ``plain`` or ``none``: ``auto`` is live on a terminal and plain otherwise."""
    if requested == "auto":
        return "live" if is_terminal else "plain"
    return requested


@dataclass
class TrialState:
    """What the table shows of one trial."""

    trial_id: str
    params: dict[str, Any]
    status: str = PENDING
    epoch: int = 0
    val_macro_f1: float | None = None
    best_val_macro_f1: float | None = None
    image_size: int | None = None  # its last epoch's size, in a search whose sizes vary


@dataclass
class SearchState:
    """What the overall line shows; updated from Ray's callbacks or read from an experiment."""

    num_samples: int
    max_epochs: int
    trials: dict[str, TrialState] = field(default_factory=dict)
    started: float = field(default_factory=lambda: time.monotonic())
    sizes_vary: bool = False  # a space with ``fidelity:`` rungs: each trial's size is shown

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


def short(value: Any) -> str:
    """A parameter value in a table cell or a log line (floats to 3 significant digits)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h04m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_s(
    elapsed: float, finished: int, total: int, time_budget_s: float | None = None
) -> float | None:
    """Seconds until the search ends, from the trials finished so far (None before the first
    and once all have).

    Trials end at the rate they have ended so far; a time budget caps the estimate.
    """
    if finished <= 0 or finished >= total or elapsed <= 0:
        return None
    left = max(total - finished, 0) * elapsed / finished
    if time_budget_s is not None:
        left = min(left, max(time_budget_s - elapsed, 0.0))
    return left


def overall_text(
    state: SearchState, elapsed: float, time_budget_s: float | None = None, eta: bool = True
) -> str:
    """``trials 2/6 done, 1 running, elapsed 1m05s, best val macro F1 0.4311 (trial x), ETA 2m``."""
    best = state.best()
    best_text = f"{best.best_val_macro_f1:.4f} (trial {best.trial_id})" if best else "-"
    text = (
        f"trials {state.finished()}/{state.num_samples} done, {state.counts()}, "
        f"elapsed {duration(elapsed)}, best val macro F1 {best_text}"
    )
    left = eta_s(elapsed, state.finished(), state.num_samples, time_budget_s) if eta else None
    return text + (f", ETA {duration(left)}" if left is not None else "")


def trial_table(state: SearchState, param_names: list[str], max_rows: int | None = 20) -> Table:
    """The trials (the ``max_rows`` most recent): params, epoch (and the image size it trains at
    when the search's sizes vary), last and best score, status."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    px = ["px"] if state.sizes_vary else []
    for col in ["trial", *param_names, "epoch", *px, "val F1", "best", "status"]:
        table.add_column(col, overflow="fold")  # a narrow terminal wraps a cell, never cuts it
    trials = list(state.trials.values())
    for t in trials[-max_rows:] if max_rows else trials:
        size = [str(t.image_size or "-")] if state.sizes_vary else []
        table.add_row(
            t.trial_id,
            *[short(t.params.get(p, "-")) for p in param_names],
            f"{t.epoch}/{state.max_epochs}",
            *size,
            "-" if t.val_macro_f1 is None else f"{t.val_macro_f1:.4f}",
            "-" if t.best_val_macro_f1 is None else f"{t.best_val_macro_f1:.4f}",
            t.status,
        )
    return table


def render(state: SearchState, param_names: list[str], max_rows: int = 20) -> Group:
    """The live view: a bar of trials done with the totals, and a table of the most recent trials."""
    head = Table.grid(padding=(0, 1))
    elapsed = time.monotonic() - state.started
    head.add_row(
        ProgressBar(total=state.num_samples, completed=state.finished(), width=30),
        Text(overall_text(state, elapsed, eta=False)),
    )
    return Group(head, trial_table(state, param_names, max_rows))


# Plain lines, one per event, for logs (stdout not a terminal).


def params_text(params: dict[str, Any]) -> str:
    """``arch=resnet18 lr=0.00123``."""
    return " ".join(f"{k}={short(v)}" for k, v in params.items())


def started_line(trial: TrialState, node: str | None) -> str:
    where = f" on node {node}" if node else ""
    params = f": {params_text(trial.params)}" if trial.params else " (nothing sampled)"
    return f"trial {trial.trial_id} started{where}{params}"


def asha_rungs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which ASHA compares trials: grace_period * reduction_factor^k < max_epochs."""
    rungs, rung = [], float(grace_period)
    while rung < max_epochs and reduction_factor > 1:
        rungs.append(round(rung))
        rung *= reduction_factor
    return rungs


def epoch_is_logged(epoch: int, max_epochs: int, rungs: list[int], every: int) -> bool:
    """Whether a trial's epoch gets a log line: at a rung, at the last epoch, every ``every``."""
    return epoch in rungs or epoch >= max_epochs or (every > 0 and epoch % every == 0)


def epoch_line(trial: TrialState, max_epochs: int, at_rung: bool, result: dict[str, Any]) -> str:
    parts = [f"val macro F1 {trial.val_macro_f1:.4f}"] if trial.val_macro_f1 is not None else []
    if trial.best_val_macro_f1 is not None:
        parts.append(f"best {trial.best_val_macro_f1:.4f}")
    if isinstance(result.get("train_loss"), float):
        parts.append(f"train loss {result['train_loss']:.4f}")
    if isinstance(result.get("time_this_iter_s"), float):
        parts.append(f"{result['time_this_iter_s']:.1f}s/epoch")
    size = f" at {trial.image_size} px" if trial.image_size else ""
    rung = " (ASHA rung)" if at_rung else ""
    return (
        f"trial {trial.trial_id} epoch {trial.epoch}/{max_epochs}{size}{rung}: {', '.join(parts)}"
    )


def ended_line(trial: TrialState, max_epochs: int, reason: str) -> str:
    """``trial x pruned at epoch 2/10 (ASHA stopped it at its rung), best val macro F1 0.21``."""
    best = trial.best_val_macro_f1
    best_text = f", best val macro F1 {best:.4f}" if best is not None else ""
    return f"trial {trial.trial_id} {trial.status} at epoch {trial.epoch}/{max_epochs} ({reason}){best_text}"


def stop_reason(
    status: str, epoch: int, rungs: list[int], elapsed: float, time_budget_s: float | None
) -> str:
    """Why a trial that ended without an error ended where it did."""
    if status == "completed":
        return "reached max_epochs"
    if time_budget_s is not None and elapsed >= time_budget_s:
        return "the time budget ran out"
    if epoch in rungs:
        return "ASHA stopped it at its rung"
    return "stopped before max_epochs"
