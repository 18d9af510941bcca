"""Loading pretrained weights: torchvision ImageNet weights from the hub cache, or a local file.

Whatever the source, the state dict is fitted to the model the same way: the stem conv is
adapted to the model's input channels (:func:`adapt_input_conv`), a head trained for another
number of classes is left freshly initialised, and every other tensor must match the model's
key and shape exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from hpa_tune.errors import HpaTuneError
from hpa_tune.models.adapt import adapt_input_conv
from hpa_tune.models.registry import ModelInfo, name_under

OFFLINE_ENV = "HPA_TUNE_OFFLINE"

# Old torchvision DenseNet checkpoints (the ImageNet ones) name layers "norm.1", "conv.2", ...
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class PretrainedWeightsNotFoundError(FileNotFoundError, HpaTuneError):
    """Pretrained weights are neither in the cache nor at the given path."""


def imagenet_cache_path(name: str) -> tuple[str, Path]:
    """URL and hub-cache path of the default torchvision ImageNet weights for model ``name``."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_pretrained(model: nn.Module, info: ModelInfo, source: str | os.PathLike[str]) -> None:
    """Load pretrained weights into ``model`` (built from registry entry ``info``), in place.

    Args:
        model: Freshly built, not yet frozen model.
        info: Its registry entry (stem and head names).
        source: ``"imagenet"`` or a path to a ``.pth``/``.pt`` state dict.

    Raises:
        PretrainedWeightsNotFoundError: The file is missing (for ImageNet: not cached, and
            offline or the download failed); the message says where to put it.
        HpaTuneError: ImageNet requested for a model without ImageNet weights, or the state
            dict does not fit the model (keys named).
    """
    if str(source).lower() == "imagenet":
        if not info.imagenet:
            raise HpaTuneError(
                f"no ImageNet weights exist for {info.name!r}; use pretrained=none or a path "
                f"to a state dict saved from an hpa-tune {info.name}"
            )
        path = _cached_imagenet_weights(info.name)
    else:
        path = Path(source)
        if not path.is_file():
            raise PretrainedWeightsNotFoundError(f"pretrained weights file not found: {path}")
    fitted = fit_state_dict(model, info, _read_state_dict(path), path)
    model.load_state_dict(fitted)


def fit_state_dict(
    model: nn.Module, info: ModelInfo, loaded: Mapping[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Fit ``loaded`` (read from ``path``) to ``model``'s own state dict; see the module doc.

    Raises:
        HpaTuneError: Missing, unexpected or mis-shaped keys outside stem and head.
    """
    target = model.state_dict()
    source = {_LEGACY_DENSENET_KEY.sub(r"\1\2", k): v for k, v in loaded.items()}
    stem_key = f"{info.stem_conv}.weight"
    if stem_key in source and stem_key in target:
        try:
            source[stem_key] = adapt_input_conv(source[stem_key], target[stem_key].shape[1])
        except HpaTuneError as exc:
            raise HpaTuneError(f"{path}: stem {stem_key}: {exc}") from None
    head = (info.head,)
    head_keys = [k for k in target if name_under(k, head)]
    if any(k not in source or source[k].shape != target[k].shape for k in head_keys):
        # Trained for another number of classes (e.g. ImageNet's 1000): keep the fresh head.
        source = {k: v for k, v in source.items() if not name_under(k, head)}
        source.update({k: target[k] for k in head_keys})
    _check_keys(source, target, path)
    return {k: source.get(k, target[k]) for k in target}


def _check_keys(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path: Path
) -> None:
    # FrozenBatchNorm2d drops num_batches_tracked, so saved frozen models lack it; it is
    # harmless either way.
    def relevant(key: str) -> bool:
        return not key.endswith("num_batches_tracked")

    missing = [k for k in target if k not in source and relevant(k)]
    unexpected = [k for k in source if k not in target and relevant(k)]
    mis_shaped = [
        f"{k} (file {tuple(source[k].shape)}, model {tuple(target[k].shape)})"
        for k in source
        if k in target and source[k].shape != target[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise HpaTuneError(f"{path} does not fit the model; " + "; ".join(problems))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HpaTuneError(f"cannot read pretrained weights from {path}: {exc}") from exc
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        # A checkpoint wrapping the state dict, e.g. {"model": ..., "epoch": ...}.
        nested = [obj[k] for k in ("state_dict", "model_state_dict", "model") if k in obj]
        obj = nested[0] if nested else obj
    if not _is_state_dict(obj):
        raise HpaTuneError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _cached_imagenet_weights(name: str) -> Path:
    url, path = imagenet_cache_path(name)
    if path.is_file():
        return path
    hint = (
        f"ImageNet weights for {name} are not in the cache: download {url} and place it at "
        f"{path} (or set TORCH_HOME), or pass pretrained=/path/to/weights.pth, or pretrained=none"
    )
    if os.environ.get(OFFLINE_ENV) == "1":
        raise PretrainedWeightsNotFoundError(f"{hint} ({OFFLINE_ENV}=1 forbids downloading)")
    match = torch.hub.HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            url, str(path), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:
        raise PretrainedWeightsNotFoundError(f"{hint} (download failed: {exc})") from exc
    return path
