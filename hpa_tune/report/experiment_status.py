"""``hpa-tune status``: where a search stands, read from its experiment's files.

A running search is read from its Optuna journal (``optuna.journal``: the driver writes each
trial's params, every epoch's metric and how the trial ended as it happens; for a bucket
experiment the copy uploaded before each of Tune's snapshots); a finished one from
``summary.csv`` and ``best.json``. Files are read through ``storage`` (local, ``s3://``,
``gs://``) and never written. The states become a ``search_view.SearchState`` by the pure
functions here, so the table and the overall line are the ones ``run`` shows.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import (
    BEST_FILE,
    REFIT_DIR,
    REFIT_METRICS_FILE,
    RUN_FILE,
    SPACE_FILE,
    SUMMARY_FILE,
)
from hpa_tune.report.search_view import RUNNING, SearchState, TrialState, params_text
from hpa_tune.search.experiment import RunRecord
from hpa_tune.search.space import parse_space
from hpa_tune.search.trial_table import COMPLETED, ERROR, PRUNED
from hpa_tune.storage import filesystems as storage
from hpa_tune.train.size_schedule import SizeSchedule, size_at_epoch

# Optuna's trial states as the trial table names them (a WAITING trial was asked, not started).
_STATUS = {"RUNNING": RUNNING, "COMPLETE": COMPLETED, "PRUNED": PRUNED, "FAIL": ERROR}


@dataclass(frozen=True)
class ExperimentStatus:
    """What ``hpa-tune status`` prints about one experiment."""

    location: str
    state: SearchState
    param_names: list[str]
    finished: bool  # summary.csv written: the search ended (the refit may still run)
    elapsed_s: float
    time_budget_s: float | None
    best: str  # a line on the best trial ("" before any epoch ended)
    refit: str  # a line on the refit's holdout score ("" without one)


def _finite(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def state_from_summary(
    frame: pd.DataFrame, num_samples: int, max_epochs: int, metric: str
) -> SearchState:
    """The trials of a finished search, from its ``summary.csv`` (best first)."""
    state = SearchState(max(num_samples, len(frame)), max_epochs)
    params = [c for c in frame.columns if c.startswith("param:")]
    for _, row in frame.iterrows():
        trial_id = str(row["trial_id"])
        state.trials[trial_id] = TrialState(
            trial_id,
            {c.removeprefix("param:"): row[c] for c in params if _finite_or_text(row[c])},
            str(row.get("status", "")),
            int(row.get("epochs") or 0),
            _finite(row.get(metric)),
            _finite(row.get(f"best_{metric}")),
        )
    return state


def _finite_or_text(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def state_from_study(
    trials: list[Any], num_samples: int, max_epochs: int, mode: str
) -> SearchState:
    """The trials of a search, from its Optuna study's trials (``FrozenTrial``s), in order.

    A trial's id is the Ray trial id the searcher recorded (``user_attrs["trial_id"]``), its
    epoch the last one with a metric, its best the best of them under ``mode``. Trials carried
    from earlier studies (``--warm-start``) are not this search's and are left out.
    """
    from hpa_tune.search.warm_start import FROM_EXPERIMENT_ATTR

    state = SearchState(num_samples, max_epochs)
    for trial in sorted(trials, key=lambda t: t.number):
        if FROM_EXPERIMENT_ATTR in trial.user_attrs:
            continue  # carried from an earlier study (--warm-start): not a trial of this search
        values = {int(k): v for k, v in trial.intermediate_values.items() if _finite(v) is not None}
        last = max(values, default=0)
        best = (max if mode == "max" else min)(values.values()) if values else None
        trial_id = str(trial.user_attrs.get("trial_id", trial.number))
        state.trials[trial_id] = TrialState(
            trial_id,
            dict(trial.params),
            _STATUS.get(trial.state.name, trial.state.name.lower()),
            last,
            values.get(last),
            best,
        )
    return state


def show_sizes(state: SearchState, schedule: SizeSchedule | None, full_size: int) -> None:
    """Mark the trials of a search with resolution rungs (``schedule``: the run's
    ``size_schedule``) with the image size of their last epoch; nothing without a schedule."""
    if not schedule:
        return
    state.sizes_vary = True
    for t in state.trials.values():
        t.image_size = size_at_epoch(schedule, t.epoch, full_size) if t.epoch > 0 else None


def elapsed_of_study(trials: list[Any], now: datetime, finished: bool) -> float:
    """Seconds from the first trial's start to ``now`` (to the last trial's end when finished)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts:
        return 0.0
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    end = max(ends) if finished and ends else now
    return max((end - min(starts)).total_seconds(), 0.0)


def best_line(best: dict[str, Any]) -> str:
    """``best: trial x, val_macro_f1 0.4311 at epoch 8, params ...`` from ``best.json``."""
    return (
        f"best: trial {best['trial_id']}, {best['metric']} {best['value']:.4f} at epoch "
        f"{best['epoch']}, params {params_text(best['params'])}"
    )


def best_so_far_line(state: SearchState) -> str:
    """The best trial while the search runs (``""`` before any epoch ended)."""
    best = state.best()
    if best is None or best.best_val_macro_f1 is None:
        return ""
    return (
        f"best so far: trial {best.trial_id}, {best.best_val_macro_f1:.4f} "
        f"(status {best.status}), params {params_text(best.params)}"
    )


def refit_line(metrics: dict[str, Any]) -> str:
    """The refit's predictor and holdout score, from ``refit/metrics.json``."""
    score = metrics.get("holdout_macro_f1_tuned")
    if score is None:
        return ""
    return f"refit: {metrics.get('predictor', 'model')}, holdout macro F1 {float(score):.4f}"


def _read(location: str, name: str) -> bytes | None:
    try:
        return storage.read_bytes(storage.join(location, name))
    except FileNotFoundError:
        return None


def _study_trials(location: str, study_name: str) -> list[Any]:
    """The study's trials, from a private copy of its journal (the driver keeps writing it)."""
    from hpa_tune.experiment_files import JOURNAL_FILE
    from hpa_tune.search.study import load_study

    data = _read(location, JOURNAL_FILE)
    if data is None:
        return []
    with tempfile.TemporaryDirectory(prefix="hpa-tune-status-") as tmp:
        (Path(tmp) / JOURNAL_FILE).write_bytes(data)
        study = load_study(Path(tmp), study_name)
        return study.get_trials(deepcopy=False) if study is not None else []


def read_status(location: str) -> ExperimentStatus:
    """Where the experiment at ``location`` (a directory, ``s3://...``, ``gs://...``) stands.

    Raises:
        HpaTuneError: ``location`` holds no ``run.json`` (not an experiment, or not started yet).
    """
    location = storage.location_arg(location)
    run = _read(location, RUN_FILE)
    space = _read(location, SPACE_FILE)
    if run is None or space is None:
        raise HpaTuneError(
            f"{storage.join(location, RUN_FILE)}: not found; is {location} an experiment "
            "directory (written by hpa-tune run once its search starts)?"
        )
    record = RunRecord(**json.loads(run))
    spec = parse_space(yaml.safe_load(space), storage.join(location, SPACE_FILE))
    summary = _read(location, SUMMARY_FILE)
    trials = _study_trials(location, record.study_name)
    finished = summary is not None
    if summary is not None:
        frame = pd.read_csv(io.BytesIO(summary), dtype={"trial_id": str})
        state = state_from_summary(frame, record.num_samples, record.max_epochs, spec.metric)
    else:
        state = state_from_study(trials, record.num_samples, record.max_epochs, spec.mode)
    show_sizes(state, record.constants.get("size_schedule"), record.constants.get("image_size", 0))
    best = _read(location, BEST_FILE)
    refit = _read(location, f"{REFIT_DIR}/{REFIT_METRICS_FILE}")
    return ExperimentStatus(
        location=location,
        state=state,
        param_names=list(spec.params),
        finished=finished,
        elapsed_s=elapsed_of_study(trials, datetime.now(), finished),
        time_budget_s=record.time_budget_s,
        best=best_line(json.loads(best)) if best else best_so_far_line(state),
        refit=refit_line(json.loads(refit)) if refit else "",
    )


def headline(status: ExperimentStatus) -> str:
    """The first line: the experiment and whether its search has ended."""
    if status.finished:
        return f"{status.location}: search finished"
    return (
        f"{status.location}: search running (no {SUMMARY_FILE} yet; if its driver stopped, "
        f"continue it with `hpa-tune resume {status.location}`)"
    )
