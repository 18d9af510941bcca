"""The files a report is built from, read once into frames (no computation happens here).

Required: ``run.json``, ``space.yaml``, ``summary.csv`` (and ``history.csv`` for the full
report). Optional, with a note in the page where absent: ``best.json``, ``refit/metrics.json``,
``trial_scores.csv`` and the data directory's manifest (train class frequencies).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN
from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import (
    BEST_FILE,
    HISTORY_FILE,
    REFIT_DIR,
    REFIT_METRICS_FILE,
    SUMMARY_FILE,
    TRIAL_SCORES_FILE,
)
from hpa_tune.search.experiment import RunRecord, read_best, read_run
from hpa_tune.search.space import SpaceSpec


@dataclass(frozen=True)
class ExperimentInputs:
    """Everything read from one experiment directory."""

    exp_dir: Path
    record: RunRecord
    spec: SpaceSpec
    summary: pd.DataFrame
    history: pd.DataFrame | None
    best_trial_id: str | None
    refit_metrics: dict[str, Any] | None
    trial_scores: pd.DataFrame | None
    train_samples: int | None  # size of the train split, from the data manifest


def _require(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise HpaTuneError(f"{path}: not found; {hint}")
    return path


def _read_trials_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"trial_id": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise HpaTuneError(f"{path}: not a readable CSV ({err})") from None


def _require_reported_epochs(path: Path, summary: pd.DataFrame) -> None:
    """Reports are about reported epochs: an experiment where every trial failed has none."""
    if "epochs" in summary.columns and (summary["epochs"].fillna(0) > 0).any():
        return
    errors = summary["error"].dropna().astype(str).tolist() if "error" in summary else []
    cause = f"; first error: {errors[0]}" if errors else ""
    raise HpaTuneError(
        f"{path}: no trial reported an epoch (every trial failed){cause}; nothing to report"
    )


def _train_samples(data_dir: str) -> int | None:
    """Train split size from the prepared data's manifest, if that directory is still there."""
    try:
        return ShardManifest.load(data_dir).splits.get(TRAIN)
    except (HpaTuneError, OSError):  # no manifest (data moved or deleted), another format, offline
        return None


def load_inputs(exp_dir: Path, need_history: bool = True) -> ExperimentInputs:
    """Read an experiment directory for reporting.

    Args:
        exp_dir: ``STORAGE/NAME`` as written by ``hpa-tune run``.
        need_history: require ``history.csv`` (the full report's curves need it; the table
            does not).

    Raises:
        HpaTuneError: a required file is missing or unreadable, naming its path.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise HpaTuneError(f"{exp_dir}: not a directory; expected an experiment STORAGE/NAME")
    record, spec = read_run(exp_dir)
    summary = _read_trials_csv(
        _require(exp_dir / SUMMARY_FILE, "the search has not written its results yet")
    )
    history_path = exp_dir / HISTORY_FILE
    _require_reported_epochs(exp_dir / SUMMARY_FILE, summary)
    history = None
    if need_history or history_path.is_file():
        hint = "it is written by hpa-tune run after the search (re-run the search to get one)"
        path = _require(history_path, hint)
        history = _read_trials_csv(path) if path.read_text().strip() else pd.DataFrame()
        if need_history and "epoch" not in history.columns:
            raise HpaTuneError(f"{path}: no epoch was reported by any trial; nothing to report")
    refit_path = exp_dir / REFIT_DIR / REFIT_METRICS_FILE
    scores_path = exp_dir / TRIAL_SCORES_FILE
    return ExperimentInputs(
        exp_dir=exp_dir,
        record=record,
        spec=spec,
        summary=summary,
        history=history,
        best_trial_id=read_best(exp_dir).trial_id if (exp_dir / BEST_FILE).is_file() else None,
        refit_metrics=json.loads(refit_path.read_text()) if refit_path.is_file() else None,
        trial_scores=_read_trials_csv(scores_path) if scores_path.is_file() else None,
        train_samples=_train_samples(record.data_dir),
    )
