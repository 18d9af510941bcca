"""Small, tested model surgery: RGB stems for RGBY input, and freezing up to a named level.

A frozen RGBY stem keeps its yellow filter trainable (``YellowTrainableStem``): otherwise every
frozen RGBY trial would be an RGB trial, since a pretrained stem's yellow filter starts at zero.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from hpa_tune.errors import HpaTuneError
from hpa_tune.models.registry import get_model_info, name_under

VALID_IN_CHANS = (3, 4)


def check_in_chans(in_chans: int) -> None:
    """Raise unless ``in_chans`` is 3 (RGB) or 4 (RGBY).

    Raises:
        HpaTuneError: Any other channel count.
    """
    if in_chans not in VALID_IN_CHANS:
        raise HpaTuneError(
            f"in_chans must be 3 (red, green, blue) or 4 (red, green, blue, yellow), "
            f"got {in_chans!r}"
        )


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a stem convolution weight ``(O, C, kH, kW)`` to ``in_chans`` input channels.

    The rule (hpa-tune images are stored red, green, blue, yellow):

    * RGB weight, ``in_chans=4``: the red, green and blue filters are kept unchanged and the
      yellow filter starts at zero, so before training the model's response is exactly the
      pretrained RGB response whatever the yellow channel holds. (The loader normalises yellow
      with its train mean/std, so an *empty* yellow channel arrives as ``-mean/std``, not 0: a
      non-zero initial yellow filter would shift every stem activation.) Training learns the
      yellow filter from there; its gradient does not depend on its value.
    * RGBY weight, ``in_chans=3``: the yellow filter is dropped.
    * Weight already has ``in_chans`` channels: returned unchanged (the same tensor).

    Args:
        weight: Convolution weight with 3 or 4 input channels.
        in_chans: 3 (RGB) or 4 (RGBY).

    Returns:
        Weight of shape ``(O, in_chans, kH, kW)`` with the input dtype.

    Raises:
        HpaTuneError: ``in_chans`` is not 3 or 4, or ``weight`` is not a 4-D conv weight with
            3 or 4 input channels.
    """
    check_in_chans(in_chans)
    if weight.ndim != 4 or weight.shape[1] not in VALID_IN_CHANS:
        raise HpaTuneError(
            f"expected a conv weight (O, 3 or 4, kH, kW), got shape {tuple(weight.shape)}"
        )
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 3:
        return weight[:, :3].clone()
    yellow = torch.zeros_like(weight[:, :1])
    return torch.cat([weight, yellow], dim=1)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_up_to(model: nn.Module, name: str, level: str) -> None:
    """Freeze ``model`` (built as registry model ``name``) at freeze ``level``, in place.

    Everything outside the level's trainable modules (see ``ModelInfo.trainable_modules``) is
    frozen: parameters get ``requires_grad=False``, and every ``BatchNorm2d`` there is replaced
    by a ``FrozenBatchNorm2d`` carrying the same affine weights and running statistics, so a
    later ``model.train()`` cannot make it update its statistics. One exception: a frozen stem
    with 4 (RGBY) input channels becomes a ``YellowTrainableStem``, whose red, green and blue
    filters are frozen and whose yellow filter trains. Level ``"none"`` changes nothing.

    Raises:
        HpaTuneError: Unknown model name, or ``level`` is not one of its freeze levels.
    """
    info = get_model_info(name)
    prefixes = info.trainable_prefixes(level)
    if prefixes is None:
        return
    for param_name, param in model.named_parameters():
        if not name_under(param_name, prefixes):
            param.requires_grad_(False)
    frozen_bn = [
        module_name
        for module_name, module in model.named_modules()
        if isinstance(module, nn.BatchNorm2d) and not name_under(module_name, prefixes)
    ]
    for module_name in frozen_bn:
        _replace_module(model, module_name, _frozen_copy(model.get_submodule(module_name)))
    stem = model.get_submodule(info.stem_conv)
    if (
        isinstance(stem, nn.Conv2d)
        and stem.in_channels == 4
        and not name_under(info.stem_conv, prefixes)
    ):
        _replace_module(model, info.stem_conv, YellowTrainableStem(stem))


class YellowTrainableStem(nn.Module):
    """A frozen RGBY stem convolution whose yellow filter still trains.

    The red, green and blue filters (and the bias) are frozen parameters, the yellow filter is
    the trainable ``yellow_weight``: the optimiser sees only the yellow filter, so neither its
    steps nor its weight decay touch the frozen ones. The state dict holds the ``weight`` (and
    ``bias``) keys of the ``nn.Conv2d`` it replaces, so checkpoints load into either.

    Args:
        conv: The stem, with 4 input channels (red, green, blue, yellow) and ``groups=1``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.in_channels != 4 or conv.groups != 1 or conv.padding_mode != "zeros":
            raise HpaTuneError(f"not an RGBY stem convolution: {conv}")
        weight = conv.weight.detach()
        self.rgb_weight = nn.Parameter(weight[:, :3].clone(), requires_grad=False)
        self.yellow_weight = nn.Parameter(weight[:, 3:].clone())
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    @property
    def weight(self) -> torch.Tensor:
        """The whole ``(O, 4, kH, kW)`` filter bank: red, green, blue, yellow."""
        return torch.cat([self.rgb_weight, self.yellow_weight], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight if keep_vars else self.weight.detach()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        # load_state_dict copies the dict so that modules may rewrite their keys in it.
        weight = state_dict.pop(prefix + "weight", None)
        if weight is not None:
            state_dict[prefix + "rgb_weight"] = weight[:, :3]
            state_dict[prefix + "yellow_weight"] = weight[:, 3:]
        super()._load_from_state_dict(state_dict, prefix, *args)


def _frozen_copy(bn: nn.Module) -> FrozenBatchNorm2d:
    assert isinstance(bn, nn.BatchNorm2d)
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats:
            assert bn.running_mean is not None and bn.running_var is not None
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    tensors = [*bn.parameters(), *bn.buffers()]
    return frozen.to(tensors[0].device) if tensors else frozen


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
