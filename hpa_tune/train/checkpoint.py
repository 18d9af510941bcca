"""The checkpoint format: a trial's epoch saved to a directory (``model.pt``, ``training_state.pt``,
``config.json``) and read back, to resume training or to reuse the model.

Trial checkpoints, the refit model and each ensemble member share it; the file names are in
``hpa_tune.experiment_files``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from hpa_tune.experiment_files import CONFIG_FILE, MODEL_FILE, STATE_FILE
from hpa_tune.train.build import build_model, default_device
from hpa_tune.train.config import TrialConfig


class CheckpointedEpoch(Protocol):
    """What a checkpoint saves of an epoch (``trainable.EpochOutcome`` is one)."""

    epoch: int
    metrics: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer


def save_checkpoint(directory: Path, cfg: TrialConfig, outcome: CheckpointedEpoch) -> None:
    """Model weights, optimiser state and config, enough to resume or to reuse the model."""
    torch.save(outcome.model.state_dict(), directory / MODEL_FILE)
    state = {
        "optimizer": outcome.optimizer.state_dict(),
        "epoch": outcome.epoch,
        "best_val_macro_f1": outcome.metrics["best_val_macro_f1"],
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))


def restore_training(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, float]:
    """Load a checkpoint's weights and optimiser state into ``model`` and ``optimizer``, and the
    random state; returns the epoch to continue at and the best val macro F1 so far."""
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location=device))
    state = torch.load(directory / STATE_FILE, map_location=device)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())  # dropout masks continue as if never stopped
    return int(state["epoch"]) + 1, float(state["best_val_macro_f1"])


def load_checkpoint_model(checkpoint_dir: Path) -> tuple[torch.nn.Module, TrialConfig]:
    """The model and config saved in a trial checkpoint (no pretrained download: weights are in it)."""
    cfg = TrialConfig(**json.loads((checkpoint_dir / CONFIG_FILE).read_text()))
    model = build_model(cfg.model_copy(update={"pretrained": "none"})).to(default_device())
    model.load_state_dict(torch.load(checkpoint_dir / MODEL_FILE, map_location=default_device()))
    return model, cfg
