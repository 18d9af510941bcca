"""Run planning: everything ``hpa-tune run`` decides before Ray starts, free of Ray and torch.

``plan_run`` resolves the budget, constants, image sizes and the experiment's location from the
options and the space file; ``check_run_data`` and ``check_search_packing`` find what every trial
would fail on (a size not prepared, an unusable shard cache, a GPU packing that cannot fit)
while the driver is still the only process. Importing this module loads neither Ray nor torch:
the checks that need them import them when called.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.errors import NotRetryableError
from hpa_tune.search.default_point import default_only
from hpa_tune.search.experiment import RunRecord, absolute_location
from hpa_tune.search.space import (
    SpaceSpec,
    config_combinations,
    fidelity_constants,
    load_space,
    pin_values,
    preview_configs,
    searched_values,
)
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.staging import staging_dir

if TYPE_CHECKING:  # the estimate loads torch, which planning leaves unloaded
    from hpa_tune.search.warm_start import WarmStart
    from hpa_tune.train.gpu_memory import MemoryEstimate


@dataclass(frozen=True)
class RunOptions:
    """``hpa-tune run`` options; ``None`` means "take it from the space file"."""

    space_path: Path
    data_dir: str | Path | None = None
    storage: str | Path = "results"  # a local directory, s3://... or gs://...
    name: str | None = None
    num_samples: int | None = None
    max_epochs: int | None = None
    time_budget_s: float | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int | None = None
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: str = "live"  # live, plain or none (progress.progress_mode resolves auto)
    default_only: bool = False  # one trial of the space's default point (``default_point``)


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before Ray starts."""

    spec: SpaceSpec
    record: RunRecord
    exp_dir: Path  # local: the experiment itself, or the staging copy of ``location``
    max_concurrent: int | None
    location: str = ""  # where the experiment lives: a local path or an s3:// / gs:// URI
    warm_start: WarmStart | None = None  # earlier trials the study starts with (--warm-start)


def warm_started(plan: RunPlan, warm: WarmStart) -> RunPlan:
    """``plan`` starting from earlier studies: their trials join its study first, their winner is
    its first trial, and ``run.json`` records both (``search.warm_start``)."""
    record = replace(plan.record, **warm.record_fields())
    return replace(plan, spec=warm.start_space(plan.spec), record=record, warm_start=warm)


def plan_run(options: RunOptions, data_dir: str | Path, builtin_sample: bool) -> RunPlan:
    """Resolve budget, constants and image sizes; validate sampled configurations (pure apart from reading the YAML)."""
    spec = load_space(options.space_path)
    budget = spec.demo if builtin_sample else spec.budget
    max_epochs = options.max_epochs or budget.max_epochs
    pinned: dict[str, Any] = {}
    if builtin_sample:
        # The built-in sample trains from scratch: no weight download on a newcomer's machine.
        pinned.update({"pretrained": "none", **spec.demo.fixed})
    pinned.update(options.overrides)
    spec = pin_values(spec, pinned)
    if options.default_only:
        spec = default_only(spec)
    constants: dict[str, Any] = {
        **spec.fixed,
        "max_epochs": max_epochs,
        "seed": options.seed,
        **fidelity_constants(spec, max_epochs),
    }
    previews = preview_configs(spec, constants, n=24, seed=options.seed)
    sizes = sorted(
        {size for _, cfg in previews for size in cfg.training_sizes()}
        | set(searched_values(spec, "image_size"))
    )
    name = options.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = RunRecord(
        space_path=str(options.space_path),
        data_dir=absolute_location(storage.location_arg(data_dir)),
        builtin_sample=builtin_sample,
        constants=constants,
        num_samples=1 if options.default_only else options.num_samples or budget.num_samples,
        max_epochs=max_epochs,
        seed=options.seed,
        sizes=sizes,
        cpus_per_trial=options.cpus_per_trial or spec.resources.cpus_per_trial,
        gpus_per_trial=options.gpus_per_trial
        if options.gpus_per_trial is not None
        else spec.resources.gpus_per_trial,
        time_budget_s=options.time_budget_s or budget.time_budget_s,
        overrides=dict(options.overrides),
        study_name=name,
        max_failures=options.max_failures
        if options.max_failures is not None
        else spec.resources.max_failures,
    )
    max_concurrent = options.max_concurrent or spec.resources.max_concurrent
    results = storage.location_arg(options.storage)
    if storage.is_remote(results):
        location = storage.join(results, name)
    else:
        location = str(Path(results).resolve() / name)
    return RunPlan(spec, record, staging_dir(location), max_concurrent, location)


def check_run_data(rec: RunRecord) -> dict[int, int]:
    """Train + val samples per image size of the run (from the manifest; no arrays loaded).

    Checks first what every trial would otherwise fail on: each image size of the run (the rungs
    of a resolution fidelity included) prepared,
    and this machine's shard cache (``$HPA_TUNE_SHARD_CACHE``, ``_GB``) usable.

    Raises:
        HpaTuneError: one line naming the size, or the variable and directory.
    """
    from hpa_tune.data.node_cache import NodeCache  # its array views load torch

    manifest = ShardManifest.load(rec.data_dir)
    if missing := [size for size in rec.sizes if size not in manifest.sizes]:
        many = len(missing) > 1
        raise NotRetryableError(
            f"{rec.data_dir}: image size{'s' * many} {', '.join(map(str, missing))} "
            f"{'were' if many else 'was'} not prepared; prepared sizes: {manifest.sizes}"
        )
    for size in rec.sizes:
        for split in (TRAIN, VAL):
            manifest.check_prepared(rec.data_dir, split, size)
    NodeCache.from_env().check_writable()
    rows = manifest.splits[TRAIN] + manifest.splits[VAL]
    return {size: rows for size in rec.sizes}


def check_search_packing(
    spec: SpaceSpec,
    constants: dict[str, Any],
    gpus_per_trial: float | str,
    data_rows: dict[int, int],
) -> list[MemoryEstimate]:
    """``check_configs_fit`` over every memory-relevant configuration of the space (before Ray).

    The configurations are enumerated, not sampled (``config_combinations`` over
    ``MEMORY_KEYS``), so the costliest one the search can reach is always among those checked.

    Raises:
        HpaTuneError: the packing cannot fit (the message names the configuration and its estimate).
    """
    if gpus_per_trial == "auto" or not 0 < float(gpus_per_trial) < 1:
        return []  # auto is one whole GPU per trial: nothing is packed
    from hpa_tune.train.gpu_memory import MEMORY_KEYS, check_configs_fit  # loads torch

    configs = [cfg for _, cfg in config_combinations(spec, constants, set(MEMORY_KEYS))]
    return check_configs_fit(configs, float(gpus_per_trial), data_rows)
