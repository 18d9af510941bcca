"""Every trial's best checkpoint scored on the holdout (thresholds from val), written to
``trial_scores.csv``: what fills the study table's Test F1 columns for every trial, not only
the winner (``hpa-tune refit --all-trials``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.splits import HOLDOUT
from hpa_tune.experiment_files import MODEL_FILE, SUMMARY_FILE, TRIAL_SCORES_FILE
from hpa_tune.refit.evaluation import evaluate
from hpa_tune.search.experiment import local_checkpoint, read_run
from hpa_tune.train.checkpoint import load_checkpoint_model
from hpa_tune.train.trial_data import TrialData, load_trial_data


def score_trials(exp_dir: Path, data: TrialData | None = None, log: Any = print) -> pd.DataFrame:
    """Score every trial's best checkpoint on the holdout (thresholds from val); writes ``trial_scores.csv``.

    This is what fills the study table's Test F1 columns for every trial, not only the winner.
    Data (train/val and holdout) are read once per image size, not once per trial.
    """
    data_dir = read_run(exp_dir)[0].data_dir
    summary = pd.read_csv(exp_dir / SUMMARY_FILE)
    holdouts: dict[int, SplitArrays] = {}
    rows = []
    for _, trial in summary.iterrows():
        checkpoint = local_checkpoint(exp_dir, str(trial.get("checkpoint", "")))
        if not (checkpoint / MODEL_FILE).is_file():
            continue
        model, cfg = load_checkpoint_model(checkpoint)
        if data is None or cfg.image_size not in data.arrays:
            data = load_trial_data(data_dir, [cfg.image_size])
        if cfg.image_size not in holdouts:
            holdouts[cfg.image_size] = cached_split(data_dir, HOLDOUT, cfg.image_size)
        ev = evaluate(model, cfg, data, holdouts[cfg.image_size])
        rows.append({"trial_id": trial["trial_id"], "checkpoint": str(checkpoint), **ev.headline()})
        log(
            f"scored trial {trial['trial_id']}: holdout macro F1 @0.5 {rows[-1]['holdout_macro_f1@0.5']:.4f}, "
            f"tuned {rows[-1]['holdout_macro_f1_tuned']:.4f}"
        )
    scores = pd.DataFrame(rows)
    scores.to_csv(exp_dir / TRIAL_SCORES_FILE, index=False)
    return scores
