"""Ray Tune callback that writes every trial's TensorBoard run as the search goes.

Runs in the driver, beside the runner (so it may import Ray); what it writes, and where, is
decided by ``tensorboard_log``. Each epoch is on disk as soon as Tune hands the result over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from hpa_tune.report.tensorboard_events import TrialLog, tensorboard_dir, write_experiment_config
from hpa_tune.search.space import SpaceSpec, split_trial_config
from hpa_tune.search.trial_table import ERROR, ended_status


class TensorBoardTrials(Callback):
    """Writes ``EXP/tensorboard/``: the HParams experiment, then one run per trial.

    A trial that stops before ``max_epochs`` without an error was pruned by the scheduler.
    """

    def __init__(self, exp_dir: str | os.PathLike[str], spec: SpaceSpec, max_epochs: int):
        self.exp_dir = exp_dir  # resolved at use: a StagedPath follows a resumed driver's copy
        self.spec = spec
        self.max_epochs = max_epochs
        self.trials: dict[str, TrialLog] = {}  # open writers; the Tuner pickles its callbacks

    @property
    def log_dir(self) -> Path:
        """``EXP/tensorboard``."""
        return tensorboard_dir(Path(self.exp_dir))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "trials": {}}

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        write_experiment_config(self.log_dir, self.spec)

    def _log(self, trial: Any) -> TrialLog:
        key = str(trial.trial_id)
        log = self.trials.get(key)
        if log is None:
            log = self.trials[key] = TrialLog(self.log_dir, key)
            params, _ = split_trial_config(self.spec, dict(trial.config or {}))
            log.start(params, self.spec)
        return log

    def _end(self, log: TrialLog, status: str | None = None) -> None:
        """End with ``status``, or by ``summary.ended_status`` (completed at max_epochs, else pruned)."""
        log.end(status or ended_status(log.last_epoch, self.max_epochs))
        del self.trials[log.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._log(trial).epoch(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(self._log(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(self._log(trial), ERROR)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Trials still open here were cut off (time budget, interrupt): as summary.csv does,
        # they count as pruned, or completed if they had reached max_epochs.
        for log in list(self.trials.values()):
            self._end(log)
