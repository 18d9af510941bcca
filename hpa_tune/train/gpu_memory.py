"""One trial's peak GPU memory, estimated before launch, and the rule that refuses a packing.

The estimate is measured, not guessed per architecture: the model is built on PyTorch's ``meta``
device (shapes only, no memory, no arithmetic) and one training forward pass is run under
``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd keeps for the
backward pass. Counting those bytes (each tensor once, parameters excluded) gives the activation
memory of the batch. The peak is then::

    peak = 1.25 * (activations * a + params_bytes * (1 + g + o + c) + batch + data) + context

with ``a`` = 0.5 under bf16 autocast (activations are stored in bf16) else 1; per trainable
parameter ``g`` = 1 (its gradient) and ``o`` = 2 for Adam/AdamW (two moments), 1 for SGD
(momentum); ``c`` = 0.5 for the bf16 weight copies autocast caches; ``batch`` = the uint8 and
float32 input batch; ``data`` = the uint8 train+val arrays when the fast path keeps them on the
GPU; 1.25 for the caching allocator's fragmentation and cuDNN workspaces; ``context`` = 0.5 GiB
for the CUDA context every process holds outside the allocator.

A packing (``gpus_per_trial`` below 1) gives each trial ``gpus_per_trial`` of the GPU's memory;
it is refused when the estimate of any configuration given exceeds that share; of those, only the
ones no other outgrows in every cost at once are estimated. This module knows nothing of search
spaces: run planning (``search.planning.check_search_packing``) enumerates every combination of
a space's memory-relevant choices (``MEMORY_KEYS``) and hands the configurations to
``check_configs_fit``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from hpa_tune.classes import CHANNEL_SETS, NUM_CLASSES
from hpa_tune.errors import HpaTuneError
from hpa_tune.models import create_model, get_model_info
from hpa_tune.train.config import TrialConfig

GIB = 2**30
CUDA_CONTEXT_BYTES = GIB // 2
FRAGMENTATION = 1.25
# Environment override of the GPU's memory, for a driver that has no GPU itself.
GPU_MEMORY_ENV = "HPA_TUNE_GPU_MEMORY_GB"
# The config keys a trial's memory depends on (``pretrained`` decides which freeze levels are valid).
MEMORY_KEYS = frozenset(
    {
        "arch",
        "image_size",
        "batch_size",
        "channels",
        "freeze",
        "optimizer",
        "routing_iters",
        "pretrained",
        "fast_path",  # off trains in fp32: twice the activations of bf16 autocast
    }
)
# Keys whose larger values never need less memory, all else equal (channels, optimizer and
# freeze are ranked in ``_costs``), and a key that only decides which freeze levels are valid.
_ORDERED_KEYS = ("batch_size", "image_size", "routing_iters", "channels", "optimizer", "freeze")
_NO_MEMORY_KEYS = ("pretrained",)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device memory of one training trial, with its parts (bytes)."""

    label: str
    activations: int
    parameters: int
    batch: int
    data: int
    peak: int

    def describe(self) -> str:
        """``label: X.X GiB (activations A, parameters+optimiser P, data D)``."""
        return (
            f"{self.label}: {self.peak / GIB:.1f} GiB (activations {self.activations / GIB:.1f}, "
            f"parameters+optimiser {self.parameters / GIB:.2f}, data {self.data / GIB:.2f})"
        )


@lru_cache(maxsize=64)
def saved_activation_bytes(
    arch: str, in_chans: int, image_size: int, batch_size: int, freeze: str, extra: tuple = ()
) -> tuple[int, int, int]:
    """Bytes autograd saves in one float32 training forward; trainable and frozen parameter counts."""
    with torch.device("meta"):
        model = create_model(
            arch,
            in_chans=in_chans,
            num_classes=NUM_CLASSES,
            pretrained=None,
            freeze=freeze,
            image_size=image_size,
            **dict(extra),
        )
        x = torch.empty(batch_size, in_chans, image_size, image_size)
    model.train()
    params = {id(p) for p in model.parameters()}
    seen: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in params:
            seen.setdefault(id(t), t)  # holding t keeps its id unique for the whole pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    activations = sum(t.numel() * t.element_size() for t in seen.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return activations, trainable, frozen


def estimate_trial_peak(cfg: TrialConfig, data_bytes: int = 0, amp: bool = True) -> MemoryEstimate:
    """The peak GPU memory of training ``cfg`` (see the module docstring for the formula)."""
    in_chans = len(CHANNEL_SETS[cfg.channels])
    extra = tuple(sorted(cfg.model_kwargs().items()))
    acts, trainable, frozen = saved_activation_bytes(
        cfg.arch, in_chans, cfg.image_size, cfg.batch_size, cfg.freeze, extra
    )
    optimiser_states = _optimiser_states(cfg.optimizer)
    per_trainable = 4 * (1 + 1 + optimiser_states + (0.5 if amp else 0))
    per_frozen = 4 * (1 + (0.5 if amp else 0))
    parameters = int(trainable * per_trainable + frozen * per_frozen)
    activations = int(acts * (0.5 if amp else 1.0))
    batch = cfg.batch_size * in_chans * cfg.image_size**2 * (1 + 4)
    peak = int(FRAGMENTATION * (activations + parameters + batch + data_bytes)) + CUDA_CONTEXT_BYTES
    return MemoryEstimate(config_label(cfg), activations, parameters, batch, data_bytes, peak)


def config_label(cfg: TrialConfig) -> str:
    """``densenet161 at 224 px, batch 64, rgby, freeze none, adam``: what memory depends on."""
    extra = "".join(f", {k} {v}" for k, v in cfg.model_kwargs().items())
    return (
        f"{cfg.arch} at {cfg.image_size} px, batch {cfg.batch_size}, {cfg.channels}, "
        f"freeze {cfg.freeze}, {cfg.optimizer}{extra}"
    )


def _optimiser_states(optimizer: str) -> int:
    return 1 if optimizer == "sgd" else 2


def trials_per_gpu(gpus_per_trial: float) -> int:
    """How many trials Ray places on one GPU for a fractional ``gpus_per_trial``."""
    if not 0 < gpus_per_trial < 1:
        return 1
    return math.floor(1 / gpus_per_trial + 1e-9)


def check_packing(estimates: list[MemoryEstimate], gpus_per_trial: float, gpu_bytes: int) -> None:
    """Refuse a packing in which the largest estimated trial exceeds its share of the GPU.

    Raises:
        HpaTuneError: naming the costliest configuration, its estimate and the share it would get.
    """
    if not 0 < gpus_per_trial < 1 or not estimates:
        return
    share = gpus_per_trial * gpu_bytes
    worst = max(estimates, key=lambda e: e.peak)
    if worst.peak > share:
        raise HpaTuneError(
            f"gpus_per_trial {gpus_per_trial:g} packs {trials_per_gpu(gpus_per_trial)} trials per "
            f"GPU, but the costliest configuration, {worst.describe()}, is estimated to need more "
            f"than the {gpus_per_trial:g} x {gpu_bytes / GIB:.0f} GiB = {share / GIB:.1f} GiB "
            "each trial gets; use a larger --gpus-per-trial or smaller batch_size/image_size"
        )


def gpu_memory_bytes() -> int | None:
    """Memory of the GPUs trials will use: ``$HPA_TUNE_GPU_MEMORY_GB``, else this machine's GPU 0."""
    value = os.environ.get(GPU_MEMORY_ENV)
    if value:
        try:
            return int(float(value) * GIB)
        except ValueError:
            raise HpaTuneError(f"{GPU_MEMORY_ENV}={value!r}: expected a number of GiB") from None
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory)
    return None


def resident_data_bytes(cfg: TrialConfig, rows: int) -> int:
    """Device bytes of ``rows`` samples kept on the GPU (uint8 images of cfg's channels, labels)."""
    return rows * (len(CHANNEL_SETS[cfg.channels]) * cfg.image_size**2 + 4 * NUM_CLASSES)


def _costs(cfg: TrialConfig, data_bytes: int) -> tuple[float, ...]:
    """What grows the estimate of ``cfg`` when all else is equal, each larger-is-costlier.

    Freeze levels are listed most frozen first, then ``none``: a later level trains more.
    """
    return (
        cfg.batch_size,
        cfg.image_size,
        cfg.routing_iters,
        len(CHANNEL_SETS[cfg.channels]),
        _optimiser_states(cfg.optimizer),
        get_model_info(cfg.arch).freeze_levels.index(cfg.freeze),
        data_bytes,
    )


def costliest_candidates(
    configs: list[tuple[TrialConfig, int]],
) -> list[tuple[TrialConfig, int]]:
    """The (config, device data bytes) pairs no other pair outgrows in every cost (pure).

    Of two configurations of one architecture that differ only in ordered costs (batch size,
    image size, channels, optimiser states, freeze depth, device data, ...), the one that is at
    least as large in all of them needs at least as much memory, so only the others need an
    estimate (one of each set of equal costs). Architectures are not ordered: each keeps its own.
    """
    groups: dict[str, dict[tuple[float, ...], tuple[TrialConfig, int]]] = {}
    for cfg, data in configs:
        rest = cfg.model_dump_json(exclude={*_ORDERED_KEYS, *_NO_MEMORY_KEYS})
        groups.setdefault(rest, {}).setdefault(_costs(cfg, data), (cfg, data))
    kept = []
    for members in groups.values():
        for costs, member in members.items():
            if not any(
                other != costs and all(x >= y for x, y in zip(other, costs, strict=True))
                for other in members
            ):
                kept.append(member)
    return kept


def check_configs_fit(
    configs: list[TrialConfig], gpus_per_trial: float, data_rows: dict[int, int]
) -> list[MemoryEstimate]:
    """Estimate the costliest of ``configs`` and check the packing.

    Returns the estimates made: one per configuration that no other outgrows in every cost
    (``costliest_candidates``). ``data_rows``: train+val samples per image size; their arrays are
    counted when the fast path would keep them on the GPU. Nothing is checked when the GPU's
    memory is unknown (logged).
    """
    if not 0 < gpus_per_trial < 1:
        return []
    gpu_bytes = gpu_memory_bytes()
    if gpu_bytes is None:
        logging.getLogger(__name__).warning(
            "gpus_per_trial %g: GPU memory unknown here (set %s to check the packing)",
            gpus_per_trial,
            GPU_MEMORY_ENV,
        )
        return []
    share = gpus_per_trial * gpu_bytes
    with_data = []
    for cfg in {c.model_dump_json(): c for c in configs}.values():
        size_bytes = resident_data_bytes(cfg, data_rows.get(cfg.image_size, 0))
        on_device = cfg.fast_path != "off" and size_bytes <= cfg.device_data_share * share
        with_data.append((cfg, size_bytes if on_device else 0))
    estimates = []
    for cfg, data in costliest_candidates(with_data):
        try:
            estimates.append(estimate_trial_peak(cfg, data, amp=cfg.fast_path != "off"))
        except Exception as err:  # a model the meta device cannot run must not block the search
            logging.getLogger(__name__).warning(
                "cannot estimate the GPU memory of %s: %s", config_label(cfg), err
            )
    check_packing(estimates, gpus_per_trial, gpu_bytes)
    return estimates
