"""The GPU fast path of a trial: what it switches on, and the loaders it chooses.

With ``fast_path: auto`` (the default) a trial on CUDA gets channels-last tensors, bf16 autocast,
``cudnn.benchmark`` and fast-path loaders; on a CPU it keeps the plain path (``fast_path: on``
runs the fast path on a CPU too, which is how the tests exercise it). Data placement follows one
rule, ``arrays_on_device``: the split's uint8 train + val arrays live on the device when they fit
in ``device_data_share`` of the trial's part of device memory; otherwise batches go through pinned
host buffers, one batch ahead. Validation and prediction use batches ``EVAL_BATCH_FACTOR`` times
larger (eval mode: batch statistics are not used, so the size changes no result; the
batch-averaged F1 is still computed at the trial's own batch size).
``torch.compile`` is off unless ``compile: true``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from hpa_tune.data.device_loader import DeviceArrayLoader, PinnedPrefetchLoader
from hpa_tune.data.loader import BatchLoader, SplitArrays
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import PassResult, predict

EVAL_BATCH_FACTOR = 4
Loader = BatchLoader | DeviceArrayLoader | PinnedPrefetchLoader


@dataclass(frozen=True)
class FastPath:
    """Resolved execution settings of one trial.

    Attributes:
        enabled: the fast path is on (all of the below follow from it).
        amp: bf16 autocast. Always a bool: the plain path (``fast_path: off``, or ``auto`` on a
            CPU) trains and predicts in fp32, also on CUDA, never the engine's ``None`` default.
        channels_last: model and batches in NHWC memory format.
        compile: ``torch.compile`` the model.
        device_data_share: share of the trial's device memory the uint8 arrays may take.
        gpu_fraction: the trial's share of its GPU (``gpus_per_trial`` below 1 when packed).
    """

    enabled: bool
    amp: bool
    channels_last: bool
    compile: bool
    device_data_share: float
    gpu_fraction: float = 1.0


def resolve_fast_path(
    cfg: TrialConfig, device: torch.device, gpu_fraction: float = 1.0
) -> FastPath:
    """The fast-path settings of ``cfg`` on ``device`` (``auto`` means on with CUDA)."""
    enabled = cfg.fast_path == "on" or (cfg.fast_path == "auto" and device.type == "cuda")
    return FastPath(
        enabled=enabled,
        amp=enabled,
        channels_last=enabled,
        compile=enabled and cfg.compile,
        device_data_share=cfg.device_data_share,
        gpu_fraction=min(max(gpu_fraction, 0.0), 1.0) or 1.0,
    )


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """Apply the fast path to a model on its device (in place; the state dict keeps its keys)."""
    if not fast.enabled:
        return model
    torch.backends.cudnn.benchmark = True
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if fast.compile:
        model.compile()  # nn.Module.compile: in place, so checkpoints need no key renaming
    return model


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of ``device``: the GPU's, or the machine's for a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def arrays_on_device(array_bytes: int, device_bytes: int, fast: FastPath) -> bool:
    """Whether uint8 arrays of ``array_bytes`` live on the device: they fit in the trial's share."""
    budget = fast.device_data_share * fast.gpu_fraction * device_bytes
    return fast.enabled and array_bytes <= budget


def trial_loaders(
    cfg: TrialConfig,
    train: SplitArrays,
    val: SplitArrays,
    stats: tuple[list[float], list[float]],
    device: torch.device,
    fast: FastPath,
) -> tuple[Loader, Loader]:
    """Train (shuffled, augmented when configured; no last batch of one) and val loaders."""
    mean, std = stats
    common: dict[str, Any] = {
        "channels": cfg.channels,
        "mean": mean,
        "std": std,
        "seed": cfg.seed,
        "device": device,
    }
    train_kw = {**common, "shuffle": True, "augment": cfg.augment}
    if not fast.enabled:
        return BatchLoader(train, cfg.batch_size, drop_single_last=True, **train_kw), BatchLoader(
            val, cfg.batch_size, **common
        )
    resident = sum(DeviceArrayLoader.nbytes(s, cfg.channels) for s in (train, val))
    kind = (
        DeviceArrayLoader
        if arrays_on_device(resident, device_memory_bytes(device), fast)
        else PinnedPrefetchLoader
    )
    eval_batch = cfg.batch_size * EVAL_BATCH_FACTOR
    train_batches = kind(train, cfg.batch_size, drop_single_last=True, **train_kw)
    return train_batches, kind(val, eval_batch, **common)


def eval_loader(
    cfg: TrialConfig,
    split: SplitArrays,
    stats: tuple[list[float], list[float]],
    device: torch.device,
    fast: FastPath,
) -> Loader:
    """Batches for prediction (holdout, test): the fast path's pinned loader with larger batches."""
    mean, std = stats
    kw: dict[str, Any] = {"channels": cfg.channels, "mean": mean, "std": std, "device": device}
    if not fast.enabled:
        return BatchLoader(split, cfg.batch_size, **kw)
    return PinnedPrefetchLoader(split, cfg.batch_size * EVAL_BATCH_FACTOR, **kw)


def prediction_amp(model: nn.Module, cfg: TrialConfig) -> bool:
    """Whether a prediction pass of ``model`` (on its device) under ``cfg`` runs in bf16."""
    return resolve_fast_path(cfg, next(model.parameters()).device).amp


def prediction_batches(
    model: nn.Module,
    cfg: TrialConfig,
    split: SplitArrays,
    stats: tuple[list[float], list[float]],
) -> tuple[nn.Module, Loader]:
    """``model`` prepared for a prediction pass over ``split``, and that pass's batches: the fast
    path's (channels-last, pinned prefetch, larger batches) where ``cfg`` resolves to it; pass
    ``prediction_amp(model, cfg)`` to the pass.

    One pass does not pay back a compile, so ``compile`` is ignored here.
    """
    device = next(model.parameters()).device
    fast = replace(resolve_fast_path(cfg, device), compile=False)
    return prepare_model(model, fast), eval_loader(cfg, split, stats, device, fast)


def predict_split(
    model: nn.Module,
    cfg: TrialConfig,
    split: SplitArrays,
    stats: tuple[list[float], list[float]],
    loss_fn: nn.Module | None = None,
) -> PassResult:
    """Predictions of ``model`` over a whole split, on the fast path where ``cfg`` resolves to it
    (its batch-averaged F1 at the trial's batch size on either path)."""
    amp = prediction_amp(model, cfg)
    model, batches = prediction_batches(model, cfg, split, stats)
    return predict(model, batches, loss_fn, amp, batch_avg_size=cfg.batch_size)
