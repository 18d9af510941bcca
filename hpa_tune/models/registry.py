"""Model registry: every model hpa-tune can build, chosen by name.

Each model module registers its builder with :func:`register_model`; ``create_model`` (in
``factory.py``) looks the name up here. A builder is called as
``builder(in_chans=..., num_classes=..., image_size=..., **model_kwargs)`` and returns a module
whose forward gives logits of shape ``(N, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from hpa_tune.errors import HpaTuneError

ModelBuilder = Callable[..., nn.Module]

FAMILIES = ("baseline", "resnet", "densenet", "capsnet")


@dataclass(frozen=True)
class ModelInfo:
    """What hpa-tune knows about a registered model.

    Attributes:
        name: Registry name passed to ``create_model``.
        family: ``"baseline"``, ``"resnet"``, ``"densenet"`` or ``"capsnet"``.
        native_size: Square input size (px) the model is designed for.
        description: One-paragraph summary shown by ``list_models`` consumers.
        min_size: Smallest square input (px) the model accepts.
        stem_conv: Module name of the convolution that sees the input channels; its weight is
            adapted to ``in_chans`` when pretrained weights are loaded.
        head: Module name of the classifier; re-initialised when pretrained weights were
            trained for another number of classes.
        trainable_modules: For every freeze level except ``"none"`` (most frozen first), the
            module-name prefixes that stay trainable; everything else is frozen.
        imagenet: Whether torchvision ImageNet weights exist (``pretrained="imagenet"``).
        freeze_levels: Derived from ``trainable_modules``: its levels, then ``"none"``
            (everything trains).
    """

    name: str
    family: str
    native_size: int
    description: str
    min_size: int
    stem_conv: str
    head: str
    trainable_modules: tuple[tuple[str, tuple[str, ...]], ...]
    imagenet: bool = False
    freeze_levels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        levels = tuple(level for level, _ in self.trainable_modules)
        if "none" in levels or len(set(levels)) != len(levels):
            raise ValueError(f"{self.name}: freeze levels must be unique and not 'none'")
        object.__setattr__(self, "freeze_levels", (*levels, "none"))

    def trainable_prefixes(self, level: str) -> tuple[str, ...] | None:
        """Module-name prefixes that train at ``level``; ``None`` means everything trains.

        Raises:
            HpaTuneError: ``level`` is not one of this model's freeze levels.
        """
        if level == "none":
            return None
        for known, prefixes in self.trainable_modules:
            if known == level:
                return prefixes
        raise HpaTuneError(
            f"unknown freeze level {level!r} for model {self.name!r}; valid levels (most "
            f"frozen first): {self.describe_freeze_levels()}"
        )

    def describe_freeze_levels(self) -> str:
        """Every freeze level with the modules that train at it, on one line."""
        parts = [f"{level} (trains {', '.join(p)})" for level, p in self.trainable_modules]
        return ", ".join([*parts, "none (trains everything)"])


_REGISTRY: dict[str, tuple[ModelInfo, ModelBuilder]] = {}


def name_under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether parameter/module ``name`` lies under one of the module-name ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def register_model(info: ModelInfo) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` under ``info.name``.

    Raises:
        ValueError: The name is already registered.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if info.name in _REGISTRY:
            raise ValueError(f"model {info.name!r} is registered twice")
        _REGISTRY[info.name] = (info, builder)
        return builder

    return decorator


def list_models() -> list[ModelInfo]:
    """Every registered model, sorted by family then name."""
    infos = [info for info, _ in _REGISTRY.values()]
    return sorted(infos, key=lambda i: (FAMILIES.index(i.family), i.name))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` registered under ``name``.

    Raises:
        HpaTuneError: Unknown name; the message lists the valid names.
    """
    return _lookup(name)[0]


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered under ``name`` (see the module docstring for its signature)."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[ModelInfo, ModelBuilder]:
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(info.name for info in list_models())
        raise HpaTuneError(f"unknown model {name!r}; valid models: {valid}") from None
