"""Loss registry and the study's per-class weights.

Every loss takes the model's logits ``(N, K)`` and 0/1 targets ``(N, K)``. Class weights come from
the train split's label counts: ``none`` (1), ``full`` (#neg/#pos) or ``ln`` (ln(#neg/#pos)) — the
study found ``ln`` best.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHTINGS = ("none", "full", "ln")
# ln(#neg/#pos) is negative for a class present in more than half the samples; such a weight
# would reward mistakes, so weights are floored here (no HPA class comes near: max 41%).
MIN_CLASS_WEIGHT = 0.1


def class_weights(positives: np.ndarray, n_samples: int, weighting: str) -> np.ndarray:
    """Per-class loss weights from positive counts.

    Args:
        positives: (K,) number of samples carrying each class in the train split.
        n_samples: number of samples in the train split.
        weighting: ``none`` (all 1), ``full`` (#neg/#pos) or ``ln`` (ln(#neg/#pos)).

    Returns:
        (K,) float32 weights, floored at ``MIN_CLASS_WEIGHT``; a class with no positive counts
        as having one.

    Raises:
        ValueError: on an unknown weighting.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"unknown loss weighting {weighting!r}; expected one of {list(WEIGHTINGS)}"
        )
    pos = np.clip(np.asarray(positives, dtype=np.float64), 1, None)
    neg = np.clip(n_samples - pos, 1, None)
    if weighting == "none":
        w = np.ones_like(pos)
    elif weighting == "full":
        w = neg / pos
    else:
        w = np.log(neg / pos)
    return np.maximum(w, MIN_CLASS_WEIGHT).astype(np.float32)


class _WeightedLoss(nn.Module):
    """Holds optional per-class weights as a buffer so they follow the model's device."""

    def __init__(self, weights: np.ndarray | None) -> None:
        super().__init__()
        w = torch.ones(0) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.weights: torch.Tensor
        self.register_buffer("weights", w)

    def _w(self) -> torch.Tensor | float:
        return self.weights if self.weights.numel() else 1.0


class WeightedBCE(_WeightedLoss):
    """BCE with logits, the class weight scaling both terms: ``-w [y log σ(x) + (1-y) log(1-σ(x))]``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_elem = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (per_elem * self._w()).mean()


class PositiveWeightedBCE(_WeightedLoss):
    """BCE with logits, the class weight scaling the positive term only (torch's ``pos_weight``)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pos_weight = self.weights if self.weights.numel() else None
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


class FocalLoss(_WeightedLoss):
    """Focal loss ``-w [y (1-p)^γ log p + (1-y) p^γ log(1-p)]``; γ = 0 is the weighted BCE."""

    def __init__(self, weights: np.ndarray | None, gamma: float = 2.0) -> None:
        super().__init__(weights)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_wrong = p * (1 - target) + (1 - p) * target
        return (p_wrong.pow(self.gamma) * bce * self._w()).mean()


class MarginLoss(_WeightedLoss):
    """CapsNet margin loss on capsule lengths ``v = σ(logits)``, summed over classes, mean over samples.

    ``L_k = T_k max(0, m+ - v_k)^2 + λ (1 - T_k) max(0, v_k - m-)^2``, optionally times w_k.
    """

    def __init__(
        self,
        weights: np.ndarray | None,
        m_plus: float = 0.9,
        m_minus: float = 0.1,
        lambda_: float = 0.5,
    ) -> None:
        super().__init__(weights)
        self.m_plus, self.m_minus, self.lambda_ = m_plus, m_minus, lambda_

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        v = torch.sigmoid(logits)
        present = target * F.relu(self.m_plus - v).pow(2)
        absent = self.lambda_ * (1 - target) * F.relu(v - self.m_minus).pow(2)
        return ((present + absent) * self._w()).sum(dim=1).mean()


_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": WeightedBCE,
    "bce_pos": PositiveWeightedBCE,
    "focal": FocalLoss,
    "margin": MarginLoss,
}


def list_losses() -> list[str]:
    """Names accepted by ``create_loss``."""
    return sorted(_LOSSES)


def create_loss(name: str, weights: np.ndarray | None = None, **params: Any) -> nn.Module:
    """Build a registered loss.

    Args:
        name: one of ``list_losses()``.
        weights: optional (K,) per-class weights (see ``class_weights``).
        **params: loss options (``gamma`` for focal; ``m_plus``, ``m_minus``, ``lambda_`` for margin).

    Raises:
        ValueError: on an unknown name or option.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(list_losses())}")
    try:
        return _LOSSES[name](weights, **params)
    except TypeError as err:
        raise ValueError(f"loss {name!r} does not accept options {sorted(params)}: {err}") from None
