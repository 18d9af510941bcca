"""Progress of a running search, as Ray Tune callbacks: a live table on a terminal, plain lines
in a log.

``LiveProgress`` keeps a rich Live view (the overall bar and the most recent trials) up to date;
``PlainProgress`` prints one line per event — a trial started, an epoch at an ASHA rung (or every
few epochs), a trial stopped / completed / failed with its reason — and an overall line every
minute, for stdout that is a file or a pipe (``nohup``, a job scheduler, CI). What they show is
built by the pure functions of ``search_view``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live

from hpa_tune.ray_layer.trial_errors import error_summary
from hpa_tune.report.search_view import (
    PENDING,
    RUNNING,
    SearchState,
    TrialState,
    ended_line,
    epoch_is_logged,
    epoch_line,
    overall_text,
    render,
    started_line,
    stop_reason,
)
from hpa_tune.search.trial_table import ERROR, ended_status

__all__ = [
    "PENDING",
    "RUNNING",
    "LiveProgress",
    "PlainProgress",
    "SearchProgress",
    "SearchState",
    "TrialState",
    "render",
]


class SearchProgress(Callback):
    """Keeps a ``SearchState`` from Tune's callbacks; subclasses show it (``_shown``)."""

    def __init__(
        self, num_samples: int, max_epochs: int, param_names: list[str], sizes_vary: bool = False
    ):
        self.state = SearchState(num_samples, max_epochs, sizes_vary=sizes_vary)
        self.param_names = param_names

    def _size(self, t: TrialState, result: dict[str, Any]) -> None:
        if self.state.sizes_vary and result.get("image_size") is not None:
            t.image_size = int(result["image_size"])

    def _trial(self, trial: Any) -> TrialState:
        key = trial.trial_id
        if key not in self.state.trials:
            params = {p: trial.config.get(p) for p in self.param_names if p in trial.config}
            self.state.trials[key] = TrialState(key, params)
        return self.state.trials[key]

    def _shown(self, event: str, t: TrialState | None = None, **details: Any) -> None:
        """Show the state after ``event`` (``new``, ``start``, ``result``, ``end``, ``error``)."""

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Show trials Tune created but has not placed yet as waiting for resources, and those
        a resumed search had finished before (they count as done)."""
        new = [t for t in trials if t.trial_id not in self.state.trials]
        new = [t for t in new if t.status in ("PENDING", "TERMINATED", "ERROR")]
        for trial in new:
            t = self._trial(trial)  # created as PENDING
            if trial.status != "PENDING":
                self._restored(t, trial)
        if new:
            self._shown("new")

    def _restored(self, t: TrialState, trial: Any) -> None:
        result = getattr(trial, "last_result", None) or {}
        t.epoch = int(result.get("epoch", 0))
        t.val_macro_f1 = result.get("val_macro_f1")
        t.best_val_macro_f1 = result.get("best_val_macro_f1")
        self._size(t, result)
        t.status = (
            ERROR if trial.status == "ERROR" else ended_status(t.epoch, self.state.max_epochs)
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        t = self._trial(trial)
        t.status = RUNNING
        self._shown("start", t, trial=trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        t = self._trial(trial)
        t.epoch = int(result.get("epoch", t.epoch))
        t.val_macro_f1 = result.get("val_macro_f1")
        t.best_val_macro_f1 = result.get("best_val_macro_f1")
        self._size(t, result)
        self._shown("result", t, result=result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        t = self._trial(trial)
        t.status = ended_status(t.epoch, self.state.max_epochs)
        self._shown("end", t)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        t = self._trial(trial)
        t.status = ERROR
        self._shown("error", t, trial=trial)


class LiveProgress(SearchProgress):
    """Ray Tune callback that keeps a rich Live view of the search up to date."""

    def __init__(
        self, num_samples: int, max_epochs: int, param_names: list[str], sizes_vary: bool = False
    ):
        super().__init__(num_samples, max_epochs, param_names, sizes_vary)
        self.live: Live | None = None  # created on first use: the Tuner pickles its callbacks

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "live": None}

    def _refresh(self) -> None:
        if self.live is None:
            console = Console()
            # Not a terminal (--progress live into a file): wide enough that no column is cut.
            console = console if console.is_terminal else Console(width=1000)
            self.live = Live(console=console, refresh_per_second=2, transient=False)
            self.live.start()
        self.live.update(render(self.state, self.param_names))

    def _shown(self, event: str, t: TrialState | None = None, **details: Any) -> None:
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.live is not None:
            self.live.update(render(self.state, self.param_names))
            self.live.stop()
            if not self.live.console.is_terminal:
                self.live.console.line()  # the last row ends its line: nothing is glued to it
            self.live = None


class PlainProgress(SearchProgress):
    """Ray Tune callback printing one line per trial event and an overall line every minute.

    Args:
        num_samples, max_epochs, param_names: the search's trials, epochs and sampled params.
        rungs: the epochs at which ASHA compares trials (each gets a line).
        time_budget_s: the search's time budget (caps the ETA; names a stop it caused).
        every_epochs: an epoch line every this many epochs besides the rungs (0: a tenth of
            ``max_epochs``, at least 1).
        status_every_s: seconds between overall lines.
        sizes_vary: the space has resolution rungs (each epoch line names its image size).
    """

    def __init__(
        self,
        num_samples: int,
        max_epochs: int,
        param_names: list[str],
        rungs: list[int] | None = None,
        time_budget_s: float | None = None,
        every_epochs: int = 0,
        status_every_s: float = 60.0,
        sizes_vary: bool = False,
    ):
        super().__init__(num_samples, max_epochs, param_names, sizes_vary)
        self.rungs = rungs or []
        self.time_budget_s = time_budget_s
        self.every_epochs = every_epochs or max(1, max_epochs // 10)
        self.status_every_s = status_every_s
        self._last_status = time.monotonic()
        self._node_said: set[str] = set()

    def _print(self, line: str) -> None:
        print(line, flush=True)  # a log shows each event as it happens, not at exit

    def _elapsed(self) -> float:
        return time.monotonic() - self.state.started

    def _overall(self) -> None:
        self._last_status = time.monotonic()
        self._print(f"status: {overall_text(self.state, self._elapsed(), self.time_budget_s)}")

    def _shown(self, event: str, t: TrialState | None = None, **details: Any) -> None:
        if t is None:
            return
        max_epochs = self.state.max_epochs
        if event == "start":
            self._print(started_line(t, _node(details["trial"])))
        elif event == "result":
            result = details["result"]
            if epoch_is_logged(t.epoch, max_epochs, self.rungs, self.every_epochs):
                line = epoch_line(t, max_epochs, t.epoch in self.rungs, result)
                node = result.get("node_id")
                if node and t.trial_id not in self._node_said:  # where it runs, said once
                    self._node_said.add(t.trial_id)
                    line += f", node {str(node)[:12]}"
                self._print(line)
        elif event == "end":
            reason = stop_reason(t.status, t.epoch, self.rungs, self._elapsed(), self.time_budget_s)
            self._print(ended_line(t, max_epochs, reason))
        elif event == "error":
            why = _error(details["trial"])
            self._print(ended_line(t, max_epochs, why).replace(f" {ERROR} ", " failed ", 1))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_status >= self.status_every_s:
            self._overall()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._overall()


def _node(trial: Any) -> str | None:
    """The host a trial runs on, where Tune knows it already (else its first epoch line says)."""
    location = getattr(getattr(trial, "temporary_state", None), "location", None)
    return getattr(location, "hostname", None) or None


def _error(trial: Any) -> str:
    """One line on why a trial failed (Tune's error file, summarised), else ``failed``."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:  # on object storage, or not written yet
        text = ""
    return (error_summary(text) if text else None) or "the trial raised an error"
