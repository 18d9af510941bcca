"""The search's Optuna study, kept on disk: ``EXP/optuna.journal`` (Optuna's journal storage).

The study records what really happened to each trial (see ``trial_outcome``): Ray Tune's stock
``OptunaSearch`` tells Optuna that a trial ASHA stopped *completed* with its last score; our thin
subclass (``truthful_search``) tells it PRUNED instead. Anyone can open the study with
``optuna.load_study(study_name=..., storage=journal_storage(EXP))`` or optuna-dashboard.
No Ray here: the report reads the study through this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpa_tune.experiment_files import JOURNAL_FILE
from hpa_tune.search.trial_table import PRUNED, ended_status

NOT_STARTED_ATTR = "not_started"  # a trial the search ended before its first epoch's report


def journal_path(exp_dir: str | os.PathLike[str]) -> Path:
    """Where the study of an experiment directory is kept."""
    return Path(exp_dir) / JOURNAL_FILE


class _ExperimentJournal(JournalFileBackend):
    """``EXP/optuna.journal``, with ``EXP`` resolved again when unpickled: the searcher Ray
    Tune pickles with the search finds the journal in the directory of whichever process restores
    it (a ``staging.StagedPath`` resolves to that process's staging copy)."""

    def __init__(self, exp_dir: str | os.PathLike[str]) -> None:
        self._exp_dir = exp_dir
        path = journal_path(exp_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(str(path))

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_dir": self._exp_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["exp_dir"])  # type: ignore[misc]


def journal_storage(exp_dir: str | os.PathLike[str]) -> JournalStorage:
    """Optuna's journal storage over ``EXP/optuna.journal`` (created on first write)."""
    return JournalStorage(_ExperimentJournal(exp_dir))


def load_study(exp_dir: Path, study_name: str) -> optuna.Study | None:
    """The experiment's study, or None for an experiment without a journal (older runs)."""
    if not journal_path(exp_dir).is_file():
        return None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name, storage=journal_storage(exp_dir))
    except KeyError:  # a journal without this study
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)


def best_value(values: Mapping[int, float], mode: str) -> float | None:
    """The best finite per-epoch value (as ``pick_best`` chooses a winner), or None."""
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def trial_outcome(
    values: Mapping[int, float], max_epochs: int, mode: str, error: bool
) -> tuple[TrialState, float | None]:
    """What to tell Optuna about a trial that ended, from its per-epoch metric ``values``.

    An error is FAIL; a trial that reached ``max_epochs`` is COMPLETE with its best epoch's value;
    one that stopped earlier (ASHA, or the time budget) is PRUNED — the same rule as the
    ``status`` column of ``summary.csv`` (``summary.ended_status``). A PRUNED trial's value is
    left to Optuna (its last intermediate value).
    """
    if error:
        return TrialState.FAIL, None
    last_epoch = max(values, default=0)
    if ended_status(last_epoch, max_epochs) == PRUNED:
        return TrialState.PRUNED, None
    value = best_value(values, mode)
    if value is None:
        return TrialState.FAIL, None
    return TrialState.COMPLETE, value


def finish_running(study: optuna.Study, max_epochs: int, mode: str) -> int:
    """Tell every trial still RUNNING how far it got (``trial_outcome`` of its values).

    For a search that ended without Ray telling some trials: stopped by the time budget, or
    created and never started. A trial without any epoch's value is FAIL with the user
    attribute ``not_started`` (it has no result, and ``summary.csv`` has no row for it), not
    PRUNED. Returns how many were told.
    """
    told = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not frozen.intermediate_values:  # never reported an epoch: no result, not a pruning
            optuna.Trial(study, frozen._trial_id).set_user_attr(NOT_STARTED_ATTR, True)
            study.tell(frozen.number, None, state=TrialState.FAIL)
        else:
            state, value = trial_outcome(frozen.intermediate_values, max_epochs, mode, False)
            study.tell(frozen.number, value, state=state)
        told += 1
    return told
