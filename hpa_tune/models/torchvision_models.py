"""torchvision ResNets and DenseNets with an RGB or RGBY stem and an HPA-sized head.

Built with ``torchvision.models.get_model(name, weights=None, num_classes=...)`` (no download
here; ImageNet weights are loaded by ``pretrained.py``). For 4-channel input the stem conv is
replaced by a freshly initialised one of the same geometry. Both families end in adaptive
average pooling, so any square input from 32 px up works (native size 224 px).

Freeze levels (most frozen first):

* ResNet: ``fc`` trains only ``fc``; ``layer4`` trains ``layer4`` and ``fc``; ``layer3``
  trains ``layer3``, ``layer4`` and ``fc``; ``none`` trains everything.
* DenseNet: ``classifier`` trains only ``classifier``; ``denseblock4`` trains
  ``features.denseblock4``, ``features.norm5`` and ``classifier``; ``denseblock3``
  additionally trains ``features.transition3`` and ``features.denseblock3``; ``none`` trains
  everything.
"""

from __future__ import annotations

import functools
from typing import Any

import torchvision
from torch import nn

from hpa_tune.models.registry import ModelInfo, register_model

RESNETS = ("resnet18", "resnet34", "resnet50")
DENSENETS = ("densenet121", "densenet161", "densenet169")

_RESNET_LEVELS = (
    ("fc", ("fc",)),
    ("layer4", ("layer4", "fc")),
    ("layer3", ("layer3", "layer4", "fc")),
)
_DENSENET_LEVELS = (
    ("classifier", ("classifier",)),
    ("denseblock4", ("features.denseblock4", "features.norm5", "classifier")),
    (
        "denseblock3",
        (
            "features.denseblock3",
            "features.transition3",
            "features.denseblock4",
            "features.norm5",
            "classifier",
        ),
    ),
)


def build_torchvision_model(
    tv_name: str, stem_conv: str, *, in_chans: int, num_classes: int, image_size: int, **kwargs: Any
) -> nn.Module:
    """Build torchvision model ``tv_name`` with random weights for ``in_chans`` input channels.

    Args:
        tv_name: torchvision model name, e.g. ``"resnet18"``.
        stem_conv: Module name of its input convolution (``conv1`` / ``features.conv0``).
        in_chans: 3 or 4; for 4 the stem conv is replaced.
        num_classes: Size of the fresh linear head (``fc`` / ``classifier``).
        image_size: Unused (adaptive pooling); accepted for the common builder signature.
        **kwargs: Passed to ``torchvision.models.get_model`` (e.g. ``drop_rate`` for DenseNets).
    """
    model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        old = model.get_submodule(stem_conv)
        assert isinstance(old, nn.Conv2d)
        new = nn.Conv2d(
            in_chans,
            old.out_channels,
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            bias=old.bias is not None,
        )
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        parent_name, _, child = stem_conv.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def _register(tv_name: str, family: str) -> None:
    resnet = family == "resnet"
    stem_conv = "conv1" if resnet else "features.conv0"
    head = "fc" if resnet else "classifier"
    levels = _RESNET_LEVELS if resnet else _DENSENET_LEVELS
    pretty = ", ".join(f"'{level}' trains {' + '.join(mods)}" for level, mods in levels)
    info = ModelInfo(
        name=tv_name,
        family=family,
        native_size=224,
        min_size=32,
        description=(
            f"torchvision {tv_name} (ImageNet weights available), stem adapted to RGBY, "
            f"fresh {head} head. Freeze levels: {pretty}; 'none' trains everything."
        ),
        stem_conv=stem_conv,
        head=head,
        trainable_modules=levels,
        imagenet=True,
    )
    register_model(info)(functools.partial(build_torchvision_model, tv_name, stem_conv))


for _name in RESNETS:
    _register(_name, "resnet")
for _name in DENSENETS:
    _register(_name, "densenet")
