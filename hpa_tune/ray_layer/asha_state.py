"""``PersistentASHA``: Ray's ASHA scheduler keeping its rungs in ``EXP/asha_state.json``.

``Tuner.restore`` brings back trials and the searcher but not the scheduler's state (Ray issue
30838, open): a resumed ASHA would start with empty rungs, judging the next trials against
nothing. This thin subclass writes its rung records, each trial's bracket and the trials it has
ended to a JSON file after every decision, and reloads them the first time it is called after a
resume. A trial it had already stopped (or seen finish) but that Ray's last snapshot still listed
as running is stopped again at once instead of being trained further.

The (de)serialisation is a pair of pure functions over plain data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler


def rungs_state(
    rungs: list[list[tuple[float, dict[str, float]]]],
    trial_bracket: dict[str, int],
    ended: set[str],
    num_stopped: int,
) -> dict[str, Any]:
    """Plain-JSON state: per bracket its rungs ``{milestone, recorded}``, trials' brackets, ended."""
    return {
        "brackets": [
            [{"milestone": m, "recorded": dict(recorded)} for m, recorded in bracket]
            for bracket in rungs
        ],
        "trial_bracket": dict(trial_bracket),
        "ended": sorted(ended),
        "num_stopped": num_stopped,
    }


def restore_rungs(rungs: list[list[tuple[float, dict[str, float]]]], state: dict[str, Any]) -> None:
    """Fill the (empty) ``rungs`` in place with the records of ``state``.

    Raises:
        ValueError: the state was written by a scheduler with other brackets or milestones.
    """
    saved = state["brackets"]
    layout = [[m for m, _ in bracket] for bracket in rungs]
    if layout != [[r["milestone"] for r in bracket] for bracket in saved]:
        raise ValueError(f"ASHA state has other rungs than this scheduler's {layout}")
    for bracket, saved_bracket in zip(rungs, saved, strict=True):
        for (_, recorded), saved_rung in zip(bracket, saved_bracket, strict=True):
            recorded.update({k: float(v) for k, v in saved_rung["recorded"].items()})


class PersistentASHA(AsyncHyperBandScheduler):
    """ASHA whose rungs survive a driver restart (see the module docstring).

    Args:
        state_path: the JSON file (``EXP/asha_state.json``); a path-like is resolved at each
            use (``staging.StagedPath``: the staging copy of the process that restored it).
        **kwargs: passed to ``AsyncHyperBandScheduler``.
    """

    def __init__(self, *, state_path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._state_path = state_path
        self._ended: set[str] = set()
        self._saved_bracket: dict[str, int] = {}
        self._loaded = False

    def _rungs(self) -> list[list[tuple[float, dict[str, float]]]]:
        return [b._rungs for b in self._brackets]

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Path(self._state_path)
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        restore_rungs(self._rungs(), state)
        self._saved_bracket = {k: int(v) for k, v in state["trial_bracket"].items()}
        self._ended = set(state["ended"])
        self._num_stopped = int(state["num_stopped"])

    def _save(self) -> None:
        brackets = {id(b): i for i, b in enumerate(self._brackets)}
        trial_bracket = {**self._saved_bracket}
        trial_bracket.update({t: brackets[id(b)] for t, b in self._trial_info.items()})
        state = rungs_state(self._rungs(), trial_bracket, self._ended, self._num_stopped)
        path = Path(self._state_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, path)  # never a half-written file for a resume to read

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)
        if trial.trial_id in self._saved_bracket:
            self._trial_info[trial.trial_id] = self._brackets[self._saved_bracket[trial.trial_id]]
        self._save()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self._load_once()
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self._ended.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._load_once()
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
        self._ended.add(trial.trial_id)
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._trial_info.pop(trial.trial_id, None)
        self._save()

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        self._load_once()
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING and trial.trial_id in self._ended:
                tune_controller.stop_trial(trial)  # ended before the driver died
        return super().choose_trial_to_run(tune_controller)
