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

NONFINITE_CHECK_STEPS = 16
"""A training pass checks its batch losses for NaN/inf every this many steps (and at its end):
one host sync per check, so the GPU is not drained at every step, and a diverged trial stops
at most this many steps after the batch where its loss became non-finite."""


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


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype a pass on ``device`` uses: bf16 when ``amp`` (``None``: on CUDA only),
    ``None`` for full precision (fp32). Pure, so it is testable without a GPU."""
    if amp is None:
        amp = device.type == "cuda"
    return torch.bfloat16 if amp else None


def autocast_context(device: torch.device, amp: bool | None) -> torch.autocast | nullcontext[None]:
    """bf16 autocast when ``amp`` (``None``: on CUDA only), else full precision."""
    dtype = autocast_dtype(device, amp)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


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

    def all_losses_finite(self, since: int = 0) -> bool:
        """Whether every batch loss from batch ``since`` on is finite (one host sync)."""
        recent = self.losses[since:]
        return not recent or bool(torch.isfinite(torch.stack(recent)).all())

    def result(self, last_lr: float = 0.0, batch_avg_size: int | None = None) -> PassResult:
        """The pass's scores; ``batch_avg_size``: the batch size the batch-averaged F1 is
        computed at (default: the batches as they came)."""
        if not self.sizes:
            raise ValueError("a pass over an empty split has no result")
        losses = torch.stack(self.losses).cpu().numpy().astype(np.float64)
        probs = np.concatenate([p.cpu().numpy() for p in self.probs])
        targets = np.concatenate([t.cpu().numpy() for t in self.targets])
        f1 = F1Accumulator(num_classes=targets.shape[1])
        for lo, hi in _chunks(self.sizes, batch_avg_size):
            f1.update(targets[lo:hi], probs[lo:hi])
        sizes = np.asarray(self.sizes, dtype=np.float64)
        n = int(sizes.sum())
        return PassResult(
            loss=float((losses * sizes).sum() / n),
            macro_f1=f1.compute(),
            macro_f1_batch_avg=f1.batch_averaged(),
            per_class_f1=f1.per_class(),
            probs=probs,
            targets=targets,
            images_per_s=n / max(time.perf_counter() - self.start, 1e-9),
            last_lr=last_lr,
        )


def _chunks(sizes: list[int], size: int | None) -> list[tuple[int, int]]:
    """``(start, end)`` rows of consecutive batches of ``size`` over ``sum(sizes)`` rows (the last
    may be shorter), or of the given ``sizes`` when ``size`` is ``None``."""
    n = sum(sizes)
    if size is None:
        ends = np.cumsum(sizes).tolist()
        return list(zip([0, *ends[:-1]], ends, strict=True))
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


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
    it, see ``fast_path``). The losses are checked every ``NONFINITE_CHECK_STEPS`` steps.

    Raises:
        NonFiniteLossError: a batch's loss was NaN or infinite (named with the 1-based epoch),
            raised at most ``NONFINITE_CHECK_STEPS`` steps after that batch.
    """
    model.train()
    device = next(model.parameters()).device
    collected = _PassCollector()
    lr = cfg.lr
    checked = 0  # batch losses already found finite
    for step, (x, y) in enumerate(batches):
        lr = lr_at(epoch + step / max(steps_per_epoch, 1), cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast_context(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        collected.add(loss, logits, y)
        if step + 1 - checked >= NONFINITE_CHECK_STEPS:
            checked = _check_finite(collected, checked, epoch)
    _check_finite(collected, checked, epoch)
    return collected.result(last_lr=lr)


def _check_finite(collected: _PassCollector, since: int, epoch: int) -> int:
    """Raise ``NonFiniteLossError`` unless the losses from batch ``since`` on are finite; return
    how many batch losses are now checked."""
    if not collected.all_losses_finite(since):
        raise NonFiniteLossError(epoch + 1)
    return len(collected.losses)


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module | None = None,
    amp: bool | None = None,
    batch_avg_size: int | None = None,
) -> PassResult:
    """Probabilities over a whole split (eval mode), with loss and whole-set / batch-averaged F1.

    ``batch_avg_size``: the batch size the batch-averaged F1 is computed at, whatever size the
    ``batches`` come in (pass the trial's, so the fast path's larger eval batches change nothing);
    default: the batches as they came.
    """
    model.eval()
    device = next(model.parameters()).device
    collected = _PassCollector()
    for x, y in batches:
        with autocast_context(device, amp):
            logits = model(x).float()
        loss = loss_fn(logits, y) if loss_fn is not None else logits.new_zeros(())
        collected.add(loss, logits, y)
    return collected.result(batch_avg_size=batch_avg_size)
