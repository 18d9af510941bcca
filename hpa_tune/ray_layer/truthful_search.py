"""``TruthfulOptunaSearch``: Ray Tune's ``OptunaSearch`` telling Optuna what happened to a trial.

Ray's stock searcher (ray 2.x) has three blind spots this thin subclass fixes:

- ``on_trial_result`` is skipped for the result on which the scheduler stops a trial, so the last
  epoch never reaches the study: here every epoch's metric is reported as an intermediate value
  at ``step=epoch`` (the epoch, not Ray's ``training_iteration``, so a trial restored from a
  checkpoint reports the same steps; an epoch trained again keeps its latest score, as
  ``history.csv`` does);
- ``on_trial_complete`` tells COMPLETE with the last score for a trial ASHA stopped: here such a
  trial is PRUNED, one that reached ``max_epochs`` is COMPLETE with its best epoch's value, an
  errored one FAIL (``study.trial_outcome``);
- after ``Tuner.restore`` the journal may be ahead of Ray's last snapshot of the searcher: a trial
  already told is not told twice, and a trial asked after the snapshot (left RUNNING in the
  journal, unknown to Ray) is handed to the next trial Ray asks for, with the parameters it was
  given, so the study ends with exactly the trials Ray ran.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from hpa_tune.search.study import trial_outcome

log = logging.getLogger(__name__)


class TruthfulOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that reports every epoch and tells PRUNED / COMPLETE / FAIL truthfully.

    Args:
        max_epochs: epochs of a trial that is never stopped early.
        epoch_attr: the result key holding the epoch number.
        **kwargs: passed to ``OptunaSearch`` (space, metric, mode, sampler, storage, study_name).
    """

    def __init__(self, *, max_epochs: int, epoch_attr: str = "epoch", **kwargs: Any) -> None:
        self._max_epochs = max_epochs
        self._epoch_attr = epoch_attr
        super().__init__(**kwargs)

    @property
    def _study(self) -> optuna.Study:
        assert self._ot_study is not None, "the study is created with the search space"
        return self._ot_study

    def _frozen(self, ot_trial: optuna.Trial) -> FrozenTrial:
        """The trial as the storage has it now (the journal may hold more than our snapshot)."""
        trial = self._study.get_trials(deepcopy=False)[ot_trial.number]
        assert trial.number == ot_trial.number
        return trial

    def _orphan(self) -> optuna.Trial | None:
        """A trial RUNNING in the study that no Ray trial owns (asked after Ray's last snapshot)."""
        owned = {t.number for t in self._ot_trials.values()}
        for frozen in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in owned:
                return optuna.Trial(self._study, frozen._trial_id)
        return None

    def align(self, ray_trials: Collection[str]) -> None:
        """Map exactly ``ray_trials`` (the trials Ray restored) to their Optuna trials.

        A trial this searcher's snapshot knows but Ray does not (asked after Ray's snapshot of
        its trials) is dropped: its Optuna trial, left RUNNING, goes to the next trial Ray asks
        for. A trial Ray knows but the snapshot does not gets back the Optuna trial the study
        names it in (``user_attrs["trial_id"]``; the journal is uploaded before Ray's files).
        """
        known = set(ray_trials)
        for trial_id in [t for t in self._ot_trials if t not in known]:
            del self._ot_trials[trial_id]
        missing = known - set(self._ot_trials)
        if not missing or self._ot_study is None:
            return
        for frozen in self._study.get_trials(deepcopy=False):
            trial_id = frozen.user_attrs.get("trial_id")
            if trial_id in missing:
                self._ot_trials[trial_id] = optuna.Trial(self._study, frozen._trial_id)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._ot_study is not None:
            orphan = self._orphan()
            if orphan is not None:
                log.info("trial %s takes over Optuna trial %d", trial_id, orphan.number)
                self._ot_trials[trial_id] = orphan
        config = super().suggest(trial_id)
        # Which Ray trial an Optuna trial is: summary.csv's trial_id, in the study too.
        self._ot_trials[trial_id].set_user_attr("trial_id", trial_id)
        return config

    def _report(self, ot_trial: optuna.Trial, result: dict[str, Any]) -> None:
        value, epoch = result.get(self.metric), result.get(self._epoch_attr)
        if value is None or epoch is None:
            return
        frozen = self._frozen(ot_trial)
        if frozen.state.is_finished() or not math.isfinite(float(value)):
            return  # told before a resume; Optuna rejects non-finite intermediate values
        value, step = float(value), int(epoch)
        if step not in frozen.intermediate_values:
            ot_trial.report(value, step)
        elif frozen.intermediate_values[step] != value:
            # An epoch trained again after a restore from an earlier checkpoint: its new score is
            # the one the trial's model and history.csv have (Trial.report refuses a repeat).
            self._study._storage.set_trial_intermediate_value(ot_trial._trial_id, step, value)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._report(self._ot_trials[trial_id], result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        if self._frozen(ot_trial).state.is_finished():
            return  # told before the driver died; Ray's snapshot did not know yet
        if result and not error:
            self._report(ot_trial, result)
        values = self._frozen(ot_trial).intermediate_values
        state, value = trial_outcome(values, self._max_epochs, self.mode, error)
        self._study.tell(ot_trial, value, state=state)
