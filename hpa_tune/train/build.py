"""What a trial configuration builds: its model (architecture, channels, pretrained weights,
frozen depth), its loss (with the train split's class weights) and the device it runs on."""

from __future__ import annotations

import torch
from torch import nn

from hpa_tune.classes import CHANNEL_SETS
from hpa_tune.models import create_model
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.losses import class_weights, create_loss
from hpa_tune.train.trial_data import TrialData


def build_model(cfg: TrialConfig) -> nn.Module:
    """The configured model (architecture, channels, pretrained weights, frozen depth)."""
    return create_model(
        cfg.arch,
        in_chans=len(CHANNEL_SETS[cfg.channels]),
        pretrained=None if cfg.pretrained == "none" else cfg.pretrained,
        freeze=cfg.freeze,
        image_size=cfg.image_size,
        **cfg.model_kwargs(),
    )


def build_loss(cfg: TrialConfig, data: TrialData) -> nn.Module:
    """The configured loss with per-class weights from the train split's counts."""
    weights = class_weights(data.train_positives, data.n_train, cfg.loss_weighting)
    return create_loss(cfg.loss, weights, **cfg.loss_params())


def default_device() -> torch.device:
    """CUDA when this process can see a GPU, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
