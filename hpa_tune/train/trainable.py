"""One trial's training loop, independent of Ray: ``run_epochs`` yields per-epoch outcomes and
``train_trial`` turns them into reports through a function it is given.

Its parts live beside it: the data it trains on (``trial_data``), the model and loss a
configuration builds (``build``) and the checkpoint format (``checkpoint``). The Ray adapter
(``ray_layer.worker``) passes a function that calls ``tune.report``; tests and
``refit`` pass plain Python functions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from hpa_tune.classes import class_names
from hpa_tune.data.loader import BatchLoader
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.models import count_trainable_parameters
from hpa_tune.scoring.metrics import best_global_macro_f1
from hpa_tune.train.build import build_loss, build_model, default_device
from hpa_tune.train.checkpoint import restore_training, save_checkpoint
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import PassResult, build_optimizer, predict, train_one_epoch
from hpa_tune.train.fast_path import FastPath, prepare_model, resolve_fast_path, trial_loaders
from hpa_tune.train.size_schedule import FULL_SIZE
from hpa_tune.train.trial_data import TrialData

ReportFn = Callable[[dict[str, Any], str | None], None]  # (metrics, checkpoint_dir or None)


def make_loader(
    cfg: TrialConfig,
    data: TrialData,
    split: str,
    train: bool,
    device: torch.device,
    size: int | None = None,
) -> BatchLoader:
    """Batches of one split for this config at ``size`` (default: its full ``image_size``),
    shuffled and augmented only for training."""
    size = size or cfg.image_size
    mean, std = data.channel_stats[size]
    return BatchLoader(
        data.split(size, split),
        cfg.batch_size,
        channels=cfg.channels,
        mean=mean,
        std=std,
        shuffle=train,
        augment=train and cfg.augment,
        seed=cfg.seed,
        device=device,
        drop_single_last=train,
    )


def _split_loaders(
    cfg: TrialConfig, data: TrialData, size: int, device: torch.device, fast: FastPath
) -> tuple[Any, Any]:
    """The (train, val) batches of ``cfg`` at image size ``size``."""
    if fast.enabled:
        return trial_loaders(
            cfg,
            data.split(size, TRAIN),
            data.split(size, VAL),
            data.channel_stats[size],
            device,
            fast,
        )
    return (
        make_loader(cfg, data, TRAIN, True, device, size),
        make_loader(cfg, data, VAL, False, device, size),
    )


@dataclass
class EpochOutcome:
    """What one epoch produced; ``model`` is live (copy its state if you keep it)."""

    epoch: int
    metrics: dict[str, Any]
    train: PassResult
    val: PassResult
    model: nn.Module
    optimizer: torch.optim.Optimizer


def epoch_metrics(epoch: int, train: PassResult, val: PassResult, trainable: int) -> dict[str, Any]:
    """The scalars reported after every epoch."""
    val_global, val_threshold = best_global_macro_f1(val.targets, val.probs)
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_macro_f1": train.macro_f1,
        "train_macro_f1_batch_avg": train.macro_f1_batch_avg,
        "val_loss": val.loss,
        "val_macro_f1": val.macro_f1,
        "val_macro_f1_batch_avg": val.macro_f1_batch_avg,
        "val_macro_f1_global": val_global,
        "val_global_threshold": val_threshold,
        "lr": train.last_lr,
        "images_per_s": train.images_per_s,
        "trainable_params": trainable,
        "val_class_f1": dict(zip(class_names(), map(float, val.per_class_f1), strict=True)),
    }


def run_epochs(
    cfg: TrialConfig,
    data: TrialData,
    *,
    restore_dir: str | None = None,
    device: torch.device | None = None,
    gpu_fraction: float = 1.0,
) -> Iterator[EpochOutcome]:
    """Train ``cfg`` for ``max_epochs`` (resuming after the epoch saved in ``restore_dir``).

    Each epoch trains and is scored at ``cfg.epoch_size(epoch)`` (the size schedule of a space
    with a resolution fidelity, else ``image_size``); at a change of size the same model and
    optimiser go on with the next size's data.

    ``gpu_fraction``: the trial's share of its GPU (packed trials), which bounds the device
    memory its data may take on the fast path (``hpa_tune.train.fast_path``).
    """
    device = device or default_device()
    fast = resolve_fast_path(cfg, device, gpu_fraction)
    torch.manual_seed(cfg.seed)
    model = prepare_model(build_model(cfg).to(device), fast)
    optimizer = build_optimizer(model, cfg)
    loss_fn = build_loss(cfg, data).to(device)
    first_epoch, best = 1, -np.inf
    if restore_dir:
        first_epoch, best = restore_training(Path(restore_dir), model, optimizer, device)
    trainable = count_trainable_parameters(model)
    size, train_batches, val_batches = 0, cast(Any, None), cast(Any, None)
    for epoch in range(first_epoch, cfg.max_epochs + 1):
        if cfg.epoch_size(epoch) != size:  # a new rung of the size schedule: same model, new data
            size = cfg.epoch_size(epoch)
            train_batches = val_batches = None  # the old size's (device) arrays go first
            train_batches, val_batches = _split_loaders(cfg, data, size, device, fast)
        train_batches.set_epoch(epoch)
        train = train_one_epoch(
            model, train_batches, loss_fn, optimizer, cfg, epoch - 1, len(train_batches), fast.amp
        )
        val = predict(model, val_batches, loss_fn, fast.amp, batch_avg_size=cfg.batch_size)
        best = max(best, val.macro_f1)
        metrics = {
            **epoch_metrics(epoch, train, val, trainable),
            "best_val_macro_f1": best,
            "image_size": size,
        }
        if cfg.size_schedule:
            metrics[FULL_SIZE] = size == cfg.image_size
        yield EpochOutcome(epoch, metrics, train, val, model, optimizer)


def train_trial(
    cfg: TrialConfig,
    data: TrialData,
    report: ReportFn,
    *,
    restore_dir: str | None = None,
    checkpoint: bool = True,
    device: torch.device | None = None,
    gpu_fraction: float = 1.0,
) -> None:
    """Train one configuration, calling ``report(metrics, checkpoint_dir)`` after every epoch.

    ``checkpoint_dir`` is a temporary directory that exists only during the call.
    """
    epochs = run_epochs(
        cfg, data, restore_dir=restore_dir, device=device, gpu_fraction=gpu_fraction
    )
    for outcome in epochs:
        if not checkpoint:
            report(outcome.metrics, None)
            continue
        with tempfile.TemporaryDirectory(prefix="hpa-ckpt-") as tmp:
            save_checkpoint(Path(tmp), cfg, outcome)
            report(outcome.metrics, tmp)
