"""The study's small baseline CNN, designed for 64 px input."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hpa_tune.models.registry import ModelInfo, register_model

DEFAULT_WIDTHS = (32, 64, 128, 256)


class BaselineCNN(nn.Module):
    """Conv-BN-ReLU-maxpool blocks, global average pool, dropout, linear head.

    Every block halves the spatial size, so the smallest input is ``2 ** len(widths)`` px
    (16 px with the default four blocks); global average pooling makes any larger size work.

    Args:
        in_chans: Input channels (3 = RGB, 4 = RGBY).
        num_classes: Number of output logits.
        widths: Output channels of each block.
        dropout: Dropout probability before the linear head.
    """

    def __init__(
        self,
        in_chans: int = 4,
        num_classes: int = 28,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        blocks = []
        prev = in_chans
        for width in widths:
            blocks.append(_conv_block(prev, width))
            prev = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(prev, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, in_chans, S, S)``."""
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


def _conv_block(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_chans),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
        )
    )


@register_model(
    ModelInfo(
        name="baseline_cnn",
        family="baseline",
        native_size=64,
        min_size=16,
        description=(
            "Small baseline CNN for 64 px input: four 3x3 conv-BN-ReLU-maxpool blocks "
            "(32, 64, 128, 256 channels), global average pool, dropout, linear head. "
            "model_kwargs: widths, dropout. Freeze level 'head' trains only the linear head."
        ),
        stem_conv="features.0.conv",
        head="head",
        trainable_modules=(("head", ("head",)),),
    )
)
def build_baseline_cnn(
    *, in_chans: int, num_classes: int, image_size: int, **model_kwargs: Any
) -> nn.Module:
    """Build :class:`BaselineCNN`; ``image_size`` is not needed (global pooling)."""
    return BaselineCNN(in_chans=in_chans, num_classes=num_classes, **model_kwargs)
