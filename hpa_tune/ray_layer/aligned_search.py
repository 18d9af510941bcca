"""``AlignedSearchGenerator``: after ``Tuner.restore`` the searcher agrees with Ray's trials.

Ray Tune snapshots an experiment as several files — its trials in ``experiment_state-*.json``;
the search generator's trial counter and the concurrency limiter's live trials in
``search_gen_state-*.json``; the searcher in ``searcher-state-*.pkl`` — and uploads them
together in no fixed order. A driver killed during that upload leaves a bucket whose searcher
files are one snapshot newer (or older) than its trials. Restored as they are, the counter says
a trial was created that Ray never ran, so the search ends a trial short; the limiter holds a
slot for it forever; a restored trial the limiter never saw is never told to the study.

Ray reads the trials from the newest ``experiment_state-*.json``; this generator then sets the
rest from that same file: the counter to the number of trials, the limiter's live trials to
those that will run again, and the searcher's map of Ray trial -> Optuna trial to those trials
(``TruthfulOptunaSearch.align``; an Optuna trial of a trial Ray never knew is taken over by the
next trial Ray asks for).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from hpa_tune.ray_layer.truthful_search import TruthfulOptunaSearch

log = logging.getLogger(__name__)

FINISHED = ("TERMINATED", "ERROR")  # Ray's statuses of trials a restore does not run again


def snapshot_trials(dirpath: str | Path) -> dict[str, str] | None:
    """Ray trial id -> status in the newest ``experiment_state-*.json`` of ``dirpath`` (the one
    ``Tuner.restore`` restores trials from); None when there is none."""
    newest = _find_newest_experiment_checkpoint(str(dirpath))
    if newest is None:
        return None
    state = json.loads(Path(newest).read_text())
    trials = (json.loads(trial) for trial, _metadata in state["trial_data"])
    return {t["trial_id"]: t["status"] for t in trials}


class AlignedSearchGenerator(SearchGenerator):
    """Ray's ``SearchGenerator`` whose restored state is made to match the restored trials."""

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        trials = snapshot_trials(dirpath)
        if trials is None:
            return
        if self._counter != len(trials):
            log.info("searcher snapshot had %d trials, Ray's %d", self._counter, len(trials))
        self._counter = len(trials)
        searcher = self.searcher
        while isinstance(searcher, ConcurrencyLimiter):
            searcher.live_trials = {t for t, status in trials.items() if status not in FINISHED}
            searcher.num_unfinished_live_trials = len(searcher.live_trials)
            searcher.cached_results = {}
            searcher = searcher.searcher
        if isinstance(searcher, TruthfulOptunaSearch):
            searcher.align(trials)
