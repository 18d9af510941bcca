"""``create_model``: build a registered model, load pretrained weights, freeze."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from hpa_tune.errors import HpaTuneError
from hpa_tune.models.adapt import check_in_chans, freeze_up_to
from hpa_tune.models.pretrained import load_pretrained
from hpa_tune.models.registry import get_model_builder, get_model_info


def create_model(
    name: str,
    *,
    in_chans: int = 4,
    num_classes: int = 28,
    pretrained: bool | str | os.PathLike[str] | None = None,
    freeze: str = "none",
    image_size: int | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Build registry model ``name``; its forward returns logits ``(N, num_classes)``.

    Args:
        name: A registered name (see ``list_models()``).
        in_chans: 3 (red, green, blue) or 4 (red, green, blue, yellow).
        num_classes: Number of output logits.
        pretrained: ``None``/``False``/``"none"`` (random init), ``True``/``"imagenet"`` (torchvision ImageNet
            weights from the torch hub cache, downloaded unless ``HPA_TUNE_OFFLINE=1``), or a
            path to a ``.pth``/``.pt`` state dict (torchvision-shaped or saved from an
            hpa-tune model). The stem is adapted to ``in_chans`` with ``adapt_input_conv``;
            a head trained for another number of classes is re-initialised.
        freeze: One of the model's ``ModelInfo.freeze_levels``; see ``freeze_up_to``.
        image_size: Input size the model is built for (default: its native size). Only models
            whose structure depends on it use it (CapsNet); all accept other sizes too.
        **model_kwargs: Model-specific options (e.g. ``routing_iters`` for ``capsnet``).

    Raises:
        HpaTuneError: (a ``ValueError``) unknown name, freeze level or ``in_chans``, an
            ``image_size`` below the model's minimum, or pretrained weights that do not fit.
        PretrainedWeightsNotFoundError: (a ``FileNotFoundError``) weights file not found.
    """
    info = get_model_info(name)
    check_in_chans(in_chans)
    info.trainable_prefixes(freeze)  # validates the level before the (slow) build
    if num_classes < 1:
        raise HpaTuneError(f"num_classes must be >= 1, got {num_classes}")
    size = info.native_size if image_size is None else image_size
    if size < info.min_size:
        raise HpaTuneError(f"{name} needs image_size >= {info.min_size} px, got {size}")
    model = get_model_builder(name)(
        in_chans=in_chans, num_classes=num_classes, image_size=size, **model_kwargs
    )
    if pretrained is True:  # timm's convention: True means the default (ImageNet) weights
        pretrained = "imagenet"
    if pretrained not in (None, False) and str(pretrained).lower() != "none":
        load_pretrained(model, info, pretrained)  # type: ignore[arg-type]
    freeze_up_to(model, name, freeze)
    return model
