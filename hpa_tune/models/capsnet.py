"""A small capsule network (Sabour et al., 2017) with dynamic routing, native 32 px."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpa_tune.errors import HpaTuneError
from hpa_tune.models.registry import ModelInfo, register_model

NATIVE_SIZE = 32
LENGTH_EPS = 1e-6


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Capsule non-linearity ``|s|^2 / (1 + |s|^2) * s / |s|``: keeps direction, length < 1."""
    sq_norm = (s * s).sum(dim=dim, keepdim=True)
    return s * (sq_norm / (1.0 + sq_norm) / torch.sqrt(sq_norm + eps))


class CapsNet(nn.Module):
    """Capsule network whose output is the logit of each class capsule's length.

    ``sigmoid(model(x))`` is exactly the length of the 28 class capsules, i.e. each class's
    probability: forward returns ``logit(clamp(length, 1e-6, 1 - 1e-6))``. The rest of hpa-tune
    applies ``sigmoid`` to every model's output, and the margin loss reads ``sigmoid(logits)``
    as the capsule lengths. :meth:`capsule_lengths` gives the unclamped lengths directly.

    Layout:

    * ``front``: for inputs above 32 px, ``round(log2(image_size / 32))`` stride-2 stages
      (3x3 conv, BN, ReLU; 32 channels) so the primary-capsule grid stays about the size it
      is at 32 px; then a 7x7 conv with 128 channels and ReLU.
    * ``primary``: a 6x6 stride-4 conv giving ``primary_types`` capsule types of
      ``primary_dim`` dimensions on a grid (6x6 at 32 px), squashed.
    * ``class_capsules``: ``num_classes`` capsules of ``class_dim`` dimensions computed by
      dynamic routing-by-agreement over ``routing_iters`` iterations. The transformation
      matrices are shared across grid positions of the same capsule type, so the parameter
      count does not depend on the grid size and any input size works. Grids above 8x8 are
      average-pooled to 8x8 to bound the routing cost.

    The smallest input is 16 px for a model built at 32 px (32 px per extra stage beyond).

    Args:
        in_chans: Input channels (3 = RGB, 4 = RGBY).
        num_classes: Number of class capsules (= output logits).
        image_size: Input size the model is built for; sets the number of stride-2 stages.
        routing_iters: Routing-by-agreement iterations (>= 1).
        primary_types: Number of primary capsule types.
        primary_dim: Dimension of a primary capsule.
        class_dim: Dimension of a class capsule.
    """

    def __init__(
        self,
        in_chans: int = 4,
        num_classes: int = 28,
        image_size: int = NATIVE_SIZE,
        routing_iters: int = 3,
        primary_types: int = 32,
        primary_dim: int = 8,
        class_dim: int = 16,
    ) -> None:
        super().__init__()
        if routing_iters < 1:
            raise HpaTuneError(f"routing_iters must be >= 1, got {routing_iters}")
        self.primary_types = primary_types
        self.primary_dim = primary_dim
        self.front = _front_end(in_chans, _num_stages(image_size))
        self.primary = nn.Conv2d(128, primary_types * primary_dim, kernel_size=6, stride=4)
        self.class_capsules = ClassCapsules(
            primary_types, primary_dim, num_classes, class_dim, routing_iters
        )

    def capsules(self, x: torch.Tensor) -> torch.Tensor:
        """Class capsule vectors ``(N, num_classes, class_dim)`` for images ``(N, C, S, S)``."""
        grid = self.primary(self.front(x))
        if grid.shape[-1] > 8 or grid.shape[-2] > 8:
            grid = F.adaptive_avg_pool2d(grid, 8)
        n, _, h, w = grid.shape
        # (N, types * dim, H, W) -> (N, types, H * W, dim): one capsule per type and position.
        u = grid.view(n, self.primary_types, self.primary_dim, h * w).transpose(2, 3)
        return self.class_capsules(squash(u))

    def capsule_lengths(self, x: torch.Tensor) -> torch.Tensor:
        """Class capsule lengths ``(N, num_classes)`` in ``[0, 1)``: the class probabilities."""
        return self.capsules(x).norm(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` with ``sigmoid(logits) == clamp(capsule length)``."""
        lengths = self.capsule_lengths(x).clamp(LENGTH_EPS, 1.0 - LENGTH_EPS)
        return torch.logit(lengths)


class ClassCapsules(nn.Module):
    """Class capsules from primary capsules by dynamic routing-by-agreement.

    ``weight`` has shape ``(types, num_classes, class_dim, primary_dim)``: one transformation
    matrix per (primary capsule type, class), shared across grid positions.
    """

    def __init__(
        self,
        primary_types: int,
        primary_dim: int,
        num_classes: int,
        class_dim: int,
        routing_iters: int = 3,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(primary_types, num_classes, class_dim, primary_dim))
        # Large enough that initial class-capsule lengths are ~0.1-0.5: near zero the squash
        # (length ~ |s|^2) has almost no gradient.
        nn.init.normal_(self.weight, std=0.5 / math.sqrt(primary_dim))
        self.routing_iters = routing_iters

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Route primary capsules ``u`` ``(N, types, positions, primary_dim)`` to classes.

        Returns:
            Class capsules ``(N, num_classes, class_dim)``.
        """
        # Predictions of every primary capsule i for every class j: (N, J, types * positions, D),
        # laid out so that both routing contractions below are batched matrix products.
        u_hat = torch.einsum("tjdk,btpk->bjtpd", self.weight, u).flatten(2, 3)
        # Agreement updates use detached predictions; gradients flow through the final pass.
        u_hat_detached = u_hat.detach()
        routing_logits = u_hat.new_zeros(u_hat.shape[:3])
        for i in range(self.routing_iters):
            coupling = routing_logits.softmax(dim=1)  # each primary capsule splits over classes
            last = i == self.routing_iters - 1
            preds = u_hat if last else u_hat_detached
            v = squash(torch.einsum("bji,bjid->bjd", coupling, preds))
            if not last:
                agreement = torch.einsum("bjid,bjd->bji", u_hat_detached, v)
                routing_logits = routing_logits + agreement
        return v


def _num_stages(image_size: int) -> int:
    return max(0, round(math.log2(image_size / NATIVE_SIZE)))


def _front_end(in_chans: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_chans
    for _ in range(stages):
        layers += [
            nn.Conv2d(prev, 32, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        ]
        prev = 32
    layers += [nn.Conv2d(prev, 128, kernel_size=7), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@register_model(
    ModelInfo(
        name="capsnet",
        family="capsnet",
        native_size=NATIVE_SIZE,
        min_size=16,
        description=(
            "Small capsule network (32 primary capsule types x 8-D, 28 class capsules x 16-D, "
            "dynamic routing). Output is logit(capsule length): sigmoid gives the lengths. "
            "model_kwargs: routing_iters (default 3), primary_types, primary_dim, class_dim. "
            "Freeze level 'routing' trains only the class-capsule transformation matrices."
        ),
        stem_conv="front.0",
        head="class_capsules",
        trainable_modules=(("routing", ("class_capsules",)),),
    )
)
def build_capsnet(
    *, in_chans: int, num_classes: int, image_size: int, **model_kwargs: Any
) -> CapsNet:
    """Build :class:`CapsNet` for ``image_size`` px input."""
    return CapsNet(
        in_chans=in_chans, num_classes=num_classes, image_size=image_size, **model_kwargs
    )
