"""Scoring a trained model: thresholds fitted on val, macro F1 on the holdout at 0.5 and tuned.

Shared by ``refit`` (the retrained winner) and ``trial_scores`` (every trial's best checkpoint).
Reading checkpoints is the checkpoint format's job (``train.checkpoint``), finding them in an
experiment the experiment's (``search.experiment.local_checkpoint``).
The holdout is only ever scored here; nothing computed from it feeds back into a choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.splits import VAL
from hpa_tune.scoring.metrics import per_class_f1
from hpa_tune.scoring.thresholds import ClassThresholds
from hpa_tune.train.build import build_loss
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import PassResult
from hpa_tune.train.fast_path import predict_split
from hpa_tune.train.trial_data import TrialData


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
