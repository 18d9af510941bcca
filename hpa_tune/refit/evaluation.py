"""Scoring a trained model: thresholds fitted on val, macro F1 on the holdout at 0.5 and tuned.

Shared by ``refit`` (the retrained winner) and ``score_trials`` (every trial's best checkpoint).
The holdout is only ever scored here; nothing computed from it feeds back into a choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.splits import HOLDOUT, VAL
from hpa_tune.scoring.metrics import per_class_f1
from hpa_tune.scoring.thresholds import ClassThresholds
from hpa_tune.search.experiment import SUMMARY_FILE, TRIAL_SCORES_FILE, read_run
from hpa_tune.storage import filesystems as storage
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import PassResult
from hpa_tune.train.fast_path import predict_split
from hpa_tune.train.trainable import (
    CONFIG_FILE,
    MODEL_FILE,
    TrialData,
    build_loss,
    build_model,
    default_device,
    load_trial_data,
)


@dataclass(frozen=True)
class Evaluation:
    """Val and holdout predictions of one model, with thresholds fitted on val."""

    val: PassResult
    holdout: PassResult
    holdout_ids: np.ndarray
    thresholds: ClassThresholds

    def holdout_f1(self, tuned: bool) -> np.ndarray:
        """Per-class holdout F1 at 0.5 or at the val-fitted thresholds."""
        thr = self.thresholds.thresholds_ if tuned else 0.5
        return per_class_f1(self.holdout.targets, self.holdout.probs, thr)

    def val_f1_tuned(self) -> np.ndarray:
        """Per-class val F1 at the thresholds fitted on val (optimistic by construction)."""
        return per_class_f1(self.val.targets, self.val.probs, self.thresholds.thresholds_)

    def headline(self) -> dict[str, float]:
        """The macro scores every report shows."""
        return {
            "val_macro_f1@0.5": self.val.macro_f1,
            "val_macro_f1_tuned": float(self.val_f1_tuned().mean()),
            "holdout_macro_f1@0.5": float(self.holdout_f1(tuned=False).mean()),
            "holdout_macro_f1_tuned": float(self.holdout_f1(tuned=True).mean()),
            "holdout_macro_f1_batch_avg@0.5": self.holdout.macro_f1_batch_avg,
            "holdout_loss": self.holdout.loss,
        }


def evaluate(
    model: torch.nn.Module,
    cfg: TrialConfig,
    data: TrialData,
    holdout: SplitArrays,
    val: PassResult | None = None,
) -> Evaluation:
    """Predict val (unless given) and holdout, and fit per-class thresholds on val."""
    device = next(model.parameters()).device
    loss_fn = build_loss(cfg, data).to(device)
    stats = data.channel_stats[cfg.image_size]
    if val is None:
        val = predict_split(model, cfg, data.split(cfg.image_size, VAL), stats, loss_fn)
    return Evaluation(
        val=val,
        holdout=predict_split(model, cfg, holdout, stats, loss_fn),
        holdout_ids=holdout.ids,
        thresholds=ClassThresholds().fit(val.targets, val.probs),
    )


def load_checkpoint_model(checkpoint_dir: Path) -> tuple[torch.nn.Module, TrialConfig]:
    """The model and config saved in a trial checkpoint (no pretrained download: weights are in it)."""
    cfg = TrialConfig(**json.loads((checkpoint_dir / CONFIG_FILE).read_text()))
    model = build_model(cfg.model_copy(update={"pretrained": "none"})).to(default_device())
    model.load_state_dict(torch.load(checkpoint_dir / MODEL_FILE, map_location=default_device()))
    return model, cfg


def local_checkpoint(exp_dir: Path, recorded: str) -> Path:
    """A trial checkpoint recorded in ``summary.csv`` as a path in ``exp_dir``: the experiment
    may have been moved, or be a staging copy of a bucket (then the checkpoint is downloaded
    into it on first use)."""
    marker = f"/{exp_dir.name}/"
    if marker not in recorded or (not storage.is_remote(recorded) and Path(recorded).is_dir()):
        return Path(recorded)
    local = exp_dir / recorded.rsplit(marker, 1)[1]
    if storage.is_remote(recorded) and not (local / MODEL_FILE).is_file():
        storage.download_tree(recorded, local)
    return local


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
