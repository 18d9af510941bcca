"""Training and prediction loops (no Ray here): one epoch, one pass of predictions.

Reads like a recipe: build the optimiser, set the learning rate for the step, forward, loss,
backward, step — and collect probabilities so F1 is computed over the whole epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hpa_tune.scoring.metrics import F1Accumulator
from hpa_tune.train.config import TrialConfig


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the trial cannot continue."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"non-finite train loss at epoch {epoch}")
        self.epoch = epoch

    def __reduce__(self) -> tuple[type, tuple[int]]:  # pickled across Ray processes
        return type(self), (self.epoch,)


def build_optimizer(model: nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """The configured optimiser over the model's trainable parameters (L2 via weight_decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{cfg.arch} with freeze={cfg.freeze!r} has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(progress: float, cfg: TrialConfig) -> float:
    """Learning rate at ``progress`` epochs into training (fractional, from 0 to max_epochs).

    Linear warm-up over ``warmup_epochs``, then the schedule: ``constant``; ``step`` (times
    ``lr_step_gamma`` every ``lr_step_epochs``); ``cosine`` (to 0 at max_epochs); ``onecycle``
    (up from lr/25 to lr over ``warmup_epochs``, or the first 30% when that is 0, then cosine
    down to lr/1e4).
    """
    base, total = cfg.lr, float(cfg.max_epochs)
    if cfg.lr_schedule == "onecycle":
        peak_at = min(float(cfg.warmup_epochs), total) if cfg.warmup_epochs else 0.3 * total
        if progress < peak_at:
            return base / 25 + (base - base / 25) * progress / peak_at
        frac = (progress - peak_at) / max(total - peak_at, 1e-9)
        return base / 1e4 + (base - base / 1e4) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    if progress < cfg.warmup_epochs:
        return base * (progress + 1e-3) / cfg.warmup_epochs
    if cfg.lr_schedule == "step":
        return base * cfg.lr_step_gamma ** int((progress - cfg.warmup_epochs) // cfg.lr_step_epochs)
    if cfg.lr_schedule == "cosine":
        span = max(total - cfg.warmup_epochs, 1e-9)
        return (
            base * 0.5 * (1 + math.cos(math.pi * min((progress - cfg.warmup_epochs) / span, 1.0)))
        )
    return base


@dataclass(frozen=True)
class PassResult:
    """Loss and whole-set scores of one pass over a split."""

    loss: float
    macro_f1: float
    macro_f1_batch_avg: float
    per_class_f1: np.ndarray
    probs: np.ndarray
    targets: np.ndarray
    images_per_s: float
    last_lr: float = 0.0


def _autocast(device: torch.device, amp: bool | None) -> torch.autocast | nullcontext[None]:
    """bf16 autocast when ``amp`` (``None``: on CUDA only), else full precision."""
    if amp is None:
        amp = device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


class _PassCollector:
    """Accumulates one pass's losses, probabilities and targets batch by batch, on the device.

    Nothing is copied to the host until ``result``: a per-batch ``.item()`` or ``.cpu()`` would
    make the host wait for the GPU at every step instead of queueing the next one.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss.detach().float().reshape(()))
        self.sizes.append(len(y))
        self.probs.append(torch.sigmoid(logits.detach().float()))
        self.targets.append(y.detach())

    def all_losses_finite(self) -> bool:
        """Whether every batch loss so far is finite (one host sync)."""
        return not self.losses or bool(torch.isfinite(torch.stack(self.losses)).all())

    def result(self, last_lr: float = 0.0) -> PassResult:
        if not self.sizes:
            raise ValueError("a pass over an empty split has no result")
        losses = torch.stack(self.losses).cpu().numpy().astype(np.float64)
        probs = [p.cpu().numpy() for p in self.probs]
        targets = [t.cpu().numpy() for t in self.targets]
        f1 = F1Accumulator(num_classes=targets[0].shape[1])
        for t, p in zip(targets, probs, strict=True):
            f1.update(t, p)
        sizes = np.asarray(self.sizes, dtype=np.float64)
        n = int(sizes.sum())
        return PassResult(
            loss=float((losses * sizes).sum() / n),
            macro_f1=f1.compute(),
            macro_f1_batch_avg=f1.batch_averaged(),
            per_class_f1=f1.per_class(),
            probs=np.concatenate(probs),
            targets=np.concatenate(targets),
            images_per_s=n / max(time.perf_counter() - self.start, 1e-9),
            last_lr=last_lr,
        )


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrialConfig,
    epoch: int,
    steps_per_epoch: int,
    amp: bool | None = None,
) -> PassResult:
    """One epoch of training; F1 of the epoch's own predictions is accumulated over every sample.

    ``epoch`` counts from 0. ``amp``: bf16 autocast (``None``: on CUDA only; the fast path sets
    it, see ``fast_path``).

    Raises:
        NonFiniteLossError: a batch's loss was NaN or infinite (named with the 1-based epoch).
    """
    model.train()
    device = next(model.parameters()).device
    collected = _PassCollector()
    lr = cfg.lr
    for step, (x, y) in enumerate(batches):
        lr = lr_at(epoch + step / max(steps_per_epoch, 1), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        collected.add(loss, logits, y)
    if not collected.all_losses_finite():  # checked once per epoch: no host sync per step
        raise NonFiniteLossError(epoch + 1)
    return collected.result(last_lr=lr)


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module | None = None,
    amp: bool | None = None,
) -> PassResult:
    """Probabilities over a whole split (eval mode), with loss and whole-set / batch-averaged F1."""
    model.eval()
    device = next(model.parameters()).device
    collected = _PassCollector()
    for x, y in batches:
        with _autocast(device, amp):
            logits = model(x).float()
        loss = loss_fn(logits, y) if loss_fn is not None else logits.new_zeros(())
        collected.add(loss, logits, y)
    return collected.result()
