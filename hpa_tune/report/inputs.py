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

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment import (
    BEST_FILE,
    HISTORY_FILE,
    REFIT_DIR,
    SUMMARY_FILE,
    RunRecord,
    read_run,
)
from hpa_tune.search_space import SpaceSpec

# Written by ``hpa_tune.evaluation.score_trials``; named here too so reading a report never
# imports torch.
TRIAL_SCORES_FILE = "trial_scores.csv"
REFIT_METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"


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


def _train_samples(data_dir: str) -> int | None:
    """Train split size from the prepared data's manifest, if that directory is still there."""
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    splits = json.loads(path.read_text()).get("splits", {})
    return int(splits["train"]) if "train" in splits else None


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
    history = None
    history_path = exp_dir / HISTORY_FILE
    if need_history:
        hint = "it is written by hpa-tune run after the search (re-run the search to get one)"
        history = _read_trials_csv(_require(history_path, hint))
    elif history_path.is_file():
        history = _read_trials_csv(history_path)
    best_path, refit_path = exp_dir / BEST_FILE, exp_dir / REFIT_DIR / REFIT_METRICS_FILE
    scores_path = exp_dir / TRIAL_SCORES_FILE
    return ExperimentInputs(
        exp_dir=exp_dir,
        record=record,
        spec=spec,
        summary=summary,
        history=history,
        best_trial_id=str(json.loads(best_path.read_text())["trial_id"])
        if best_path.is_file()
        else None,
        refit_metrics=json.loads(refit_path.read_text()) if refit_path.is_file() else None,
        trial_scores=_read_trials_csv(scores_path) if scores_path.is_file() else None,
        train_samples=_train_samples(record.data_dir),
    )
