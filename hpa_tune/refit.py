"""``hpa-tune refit``: retrain the winner, tune per-class thresholds on val, score the holdout.

Checkpoint selection and thresholds use the val split only; the holdout split is touched once,
at the end, to score the final model — it never influences a choice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hpa_tune.classes import class_names
from hpa_tune.config import TrialConfig
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.splits import HOLDOUT, TRAIN, VAL
from hpa_tune.engine import PassResult
from hpa_tune.evaluation import Evaluation, evaluate
from hpa_tune.experiment import REFIT_DIR, REFIT_METRICS_FILE, read_best, read_run
from hpa_tune.metrics import macro_f1
from hpa_tune.search_space import replay
from hpa_tune.tensorboard_log import log_refit, tensorboard_dir
from hpa_tune.trainable import CONFIG_FILE, MODEL_FILE, TrialData, load_trial_data, run_epochs

Progress = Callable[[int, int], None]

METRICS_FILE = REFIT_METRICS_FILE
THRESHOLDS_FILE, INFO_FILE, HISTORY_FILE, PREDICTIONS_FILE = (
    "thresholds.json",
    "model_info.json",
    "history.csv",
    "predictions.npz",
)


@dataclass(frozen=True)
class RefitResult:
    """Where the refit model went and its headline scores."""

    refit_dir: Path
    metrics: dict[str, Any]


def trivial_baselines(
    train_labels: np.ndarray, holdout_labels: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Holdout macro F1 of predictors that ignore the images.

    ``all_positive`` predicts every class for every sample; ``class_prior`` predicts each class
    at random with its train frequency (mean over 20 seeded draws).
    """
    all_positive = macro_f1(holdout_labels, np.ones_like(holdout_labels, dtype=float))
    prior = train_labels.mean(axis=0)
    rng = np.random.default_rng(seed)
    draws = [
        macro_f1(holdout_labels, (rng.random(holdout_labels.shape) < prior).astype(float))
        for _ in range(20)
    ]
    return {"all_positive": all_positive, "class_prior": float(np.mean(draws))}


def _fit_best_epoch(
    cfg: TrialConfig, data: TrialData, log: Any, progress: Progress | None = None
) -> tuple[torch.nn.Module, PassResult, int, list[dict]]:
    """Train for max_epochs and keep the epoch with the best whole-set val macro F1."""
    best_state, best_val, best_epoch, history = None, None, 0, []
    model = None
    for outcome in run_epochs(cfg, data):
        m = outcome.metrics
        history.append({k: v for k, v in m.items() if k != "val_class_f1"})
        log(
            f"refit epoch {m['epoch']}/{cfg.max_epochs}: train loss {m['train_loss']:.4f}, "
            f"val macro F1 {m['val_macro_f1']:.4f}"
        )
        if progress:
            progress(outcome.epoch, cfg.max_epochs)
        if best_val is None or outcome.val.macro_f1 > best_val.macro_f1:
            best_state = copy.deepcopy(outcome.model.state_dict())
            best_val, best_epoch = outcome.val, outcome.epoch
        model = outcome.model
    assert model is not None and best_state is not None and best_val is not None
    model.load_state_dict(best_state)
    return model, best_val, best_epoch, history


def refit(
    exp_dir: Path,
    data: TrialData | None = None,
    log: Any = print,
    progress: Progress | None = None,
    node_id: str | None = None,
) -> RefitResult:
    """Replay the winner of ``exp_dir``, retrain it, tune thresholds on val and score the holdout.

    Args:
        exp_dir: an experiment directory with ``run.json``, ``space.yaml`` and ``best.json``.
        data: the train/val data if already in memory (``hpa-tune run`` passes its own).
        log: where progress lines go.
        progress: called as ``progress(epochs_done, max_epochs)`` after each epoch (a bar).
        node_id: the Ray node this runs on (``remote_refit``), kept in ``model_info.json``.

    Returns:
        The refit directory and its metrics (also written to ``refit/metrics.json``).
    """
    exp_dir = Path(exp_dir)
    record, spec = read_run(exp_dir)
    best = read_best(exp_dir)
    cfg = replay(spec, best.params, record.constants)
    data_dir = record.data_dir
    if data is None or cfg.image_size not in data.arrays:
        data = load_trial_data(data_dir, [cfg.image_size])
    log(
        f"refit: retraining trial {best.trial_id} ({cfg.arch}) for {cfg.max_epochs} epochs on the train split"
    )
    model, val, best_epoch, history = _fit_best_epoch(cfg, data, log, progress)
    ev = evaluate(model, cfg, data, cached_split(data_dir, HOLDOUT, cfg.image_size), val=val)

    names = class_names()
    f1_05, f1_tuned, val_tuned = (
        ev.holdout_f1(tuned=False),
        ev.holdout_f1(tuned=True),
        ev.val_f1_tuned(),
    )
    train_labels = data.split(cfg.image_size, TRAIN).labels
    metrics: dict[str, Any] = {
        "trial_id": best.trial_id,
        "arch": cfg.arch,
        "epochs": cfg.max_epochs,
        "best_epoch": best_epoch,
        **ev.headline(),
        "holdout_samples": len(ev.holdout_ids),
        "trivial_holdout_macro_f1": trivial_baselines(train_labels, ev.holdout.targets, cfg.seed),
        "per_class": [
            {
                "index": k,
                "name": names[k],
                "threshold": float(ev.thresholds.thresholds_[k]),
                "holdout_f1@0.5": float(f1_05[k]),
                "holdout_f1": float(f1_tuned[k]),
                "val_f1_tuned": float(val_tuned[k]),
                "train_positives": int(data.train_positives[k]),
                "holdout_positives": int(ev.holdout.targets[:, k].sum()),
            }
            for k in range(len(names))
        ],
    }
    out = exp_dir / REFIT_DIR
    mean, std = data.channel_stats[cfg.image_size]
    info = {
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        "mean": mean,
        "std": std,
        "class_names": list(names),
        "train_positives": [int(c) for c in data.train_positives],
        "node_id": node_id,
    }
    _write_refit(out, cfg, model, ev, metrics, history, info)
    val_split = data.split(cfg.image_size, VAL)  # the order ev.val was predicted in
    log_refit(
        tensorboard_dir(exp_dir),
        history,
        ev.val.probs,
        ev.val.targets,
        ev.thresholds.thresholds_,
        val_split.images,
        val_split.ids,
    )
    return RefitResult(out, metrics)


def _write_refit(
    out: Path,
    cfg: TrialConfig,
    model: torch.nn.Module,
    ev: Evaluation,
    metrics: dict[str, Any],
    history: list[dict],
    info: dict[str, Any],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODEL_FILE)
    (out / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2) + "\n")
    thresholds = {
        "thresholds": ev.thresholds.to_list(),
        "classes": list(class_names()),
        "tuned_on": VAL,
    }
    (out / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    pd.DataFrame(history).to_csv(out / HISTORY_FILE, index=False)
    np.savez_compressed(
        out / PREDICTIONS_FILE,
        val_probs=ev.val.probs,
        val_targets=ev.val.targets,
        holdout_probs=ev.holdout.probs,
        holdout_targets=ev.holdout.targets,
        holdout_ids=np.asarray(ev.holdout_ids, dtype=str),
    )
