"""One trial's training, independent of Ray: ``run_epochs`` yields per-epoch outcomes and
``train_trial`` turns them into reports through a function it is given.

The Ray adapter (in ``runner``) passes a function that calls ``tune.report``; tests and
``refit`` pass plain Python functions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpa_tune.classes import CHANNEL_SETS, class_names
from hpa_tune.data.loader import BatchLoader, SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.errors import HpaTuneError, NotRetryableError
from hpa_tune.models import count_trainable_parameters, create_model
from hpa_tune.scoring.metrics import best_global_macro_f1
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import PassResult, build_optimizer, predict, train_one_epoch
from hpa_tune.train.fast_path import prepare_model, resolve_fast_path, trial_loaders
from hpa_tune.train.losses import class_weights, create_loss

ReportFn = Callable[[dict[str, Any], str | None], None]  # (metrics, checkpoint_dir or None)
MODEL_FILE, STATE_FILE, CONFIG_FILE = "model.pt", "training_state.pt", "config.json"


@dataclass(frozen=True)
class TrialData:
    """What a trial trains on: arrays per size and split (memory-mapped from this node's shard
    cache, see ``data.node_cache``), plus the train split's statistics."""

    arrays: dict[int, dict[str, SplitArrays]]
    channel_stats: dict[int, tuple[list[float], list[float]]]
    train_positives: np.ndarray
    n_train: int

    def split(self, size: int, name: str) -> SplitArrays:
        """Arrays of one split at one size (HpaTuneError when that size was not loaded)."""
        if size not in self.arrays:
            raise HpaTuneError(f"image_size {size} is not loaded; available: {sorted(self.arrays)}")
        return self.arrays[size][name]


def load_trial_data(
    data: str | Path, sizes: list[int], splits: tuple[str, ...] = (TRAIN, VAL)
) -> TrialData:
    """The given splits at the given sizes of a prepared set (local path, ``s3://``, ``gs://``),
    through this node's shard cache: decoded once per node, then mapped, never copied."""
    manifest = ShardManifest.load(data)
    missing = [s for s in sizes if s not in manifest.sizes]
    if missing:
        raise NotRetryableError(
            f"{data}: image size(s) {missing} not prepared; prepared: {manifest.sizes}"
        )
    arrays = {size: {name: cached_split(data, name, size) for name in splits} for size in sizes}
    return TrialData(
        arrays=arrays,
        channel_stats={size: manifest.stats_for(size) for size in sizes},
        train_positives=np.asarray(manifest.class_counts[TRAIN]),
        n_train=manifest.splits[TRAIN],
    )


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


def make_loader(
    cfg: TrialConfig, data: TrialData, split: str, train: bool, device: torch.device
) -> BatchLoader:
    """Batches of one split for this config (shuffled and augmented only for training)."""
    mean, std = data.channel_stats[cfg.image_size]
    return BatchLoader(
        data.split(cfg.image_size, split),
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


def default_device() -> torch.device:
    """CUDA when this process can see a GPU, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_epochs(
    cfg: TrialConfig,
    data: TrialData,
    *,
    restore_dir: str | None = None,
    device: torch.device | None = None,
    gpu_fraction: float = 1.0,
) -> Iterator[EpochOutcome]:
    """Train ``cfg`` for ``max_epochs`` (resuming after the epoch saved in ``restore_dir``).

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
        model.load_state_dict(torch.load(Path(restore_dir) / MODEL_FILE, map_location=device))
        state = torch.load(Path(restore_dir) / STATE_FILE, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, best = int(state["epoch"]) + 1, float(state["best_val_macro_f1"])
        torch.set_rng_state(state["torch_rng"].cpu())  # dropout masks continue as if never stopped
    if fast.enabled:
        train_batches, val_batches = trial_loaders(
            cfg,
            data.split(cfg.image_size, TRAIN),
            data.split(cfg.image_size, VAL),
            data.channel_stats[cfg.image_size],
            device,
            fast,
        )
    else:
        train_batches = make_loader(cfg, data, TRAIN, True, device)
        val_batches = make_loader(cfg, data, VAL, False, device)
    trainable = count_trainable_parameters(model)
    for epoch in range(first_epoch, cfg.max_epochs + 1):
        train_batches.set_epoch(epoch)
        train = train_one_epoch(
            model, train_batches, loss_fn, optimizer, cfg, epoch - 1, len(train_batches), fast.amp
        )
        val = predict(model, val_batches, loss_fn, fast.amp, batch_avg_size=cfg.batch_size)
        best = max(best, val.macro_f1)
        metrics = {**epoch_metrics(epoch, train, val, trainable), "best_val_macro_f1": best}
        yield EpochOutcome(epoch, metrics, train, val, model, optimizer)


def save_checkpoint(directory: Path, cfg: TrialConfig, outcome: EpochOutcome) -> None:
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
