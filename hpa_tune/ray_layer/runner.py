"""``hpa-tune run``: a Ray Tune search (OptunaSearch + ASHA) over a YAML search space.

The module that schedules trials, and so the one importing Ray (with its callbacks ``progress``,
``tb_callback`` and ``bucket_sync``, its thin Ray subclasses ``truthful_search`` and ``asha_state``, and
``resume``, which restores what it started).
Trials read their data themselves, through their node's shard cache (``data.node_cache``): the
driver holds no image arrays. Results on object storage: Ray writes trials to the bucket, our
own files go to a local staging directory that the CLI uploads (``staging``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.errors import HpaTuneError
from hpa_tune.ray_layer.cluster_resources import TrialResources, resolve_trial_resources
from hpa_tune.ray_layer.faults import SearchInterrupted, fail_fast_on_retry, watch_ctrl_c
from hpa_tune.ray_layer.session import record_local_session
from hpa_tune.ray_layer.trial_errors import error_summary, trial_tracebacks_silenced
from hpa_tune.search.experiment import (
    HISTORY_FILE,
    SUMMARY_FILE,
    BestTrial,
    RunRecord,
    absolute_location,
    write_best,
    write_run,
)
from hpa_tune.search.space import (
    SpaceSpec,
    define_by_run,
    load_space,
    pin_values,
    preview_configs,
    resolve_config,
    searched_values,
    split_trial_config,
    tpe_sampler,
)
from hpa_tune.search.study import finish_running, journal_path, journal_storage, load_study
from hpa_tune.search.trial_table import TrialRecord, history_frame, summary_frame
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.staging import StagedPath, staging_dir
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.gpu_memory import check_search_packing
from hpa_tune.train.trainable import load_trial_data, train_trial


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
    live: bool = True


@dataclass(frozen=True)
class RunPlan:
    """Everything decided before Ray starts."""

    spec: SpaceSpec
    record: RunRecord
    exp_dir: Path  # local: the experiment itself, or the staging copy of ``location``
    max_concurrent: int | None
    location: str = ""  # where the experiment lives: a local path or an s3:// / gs:// URI


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
    constants: dict[str, Any] = {**spec.fixed, "max_epochs": max_epochs, "seed": options.seed}
    previews = preview_configs(spec, constants, n=24, seed=options.seed)
    sizes = sorted(
        {cfg.image_size for _, cfg in previews} | set(searched_values(spec, "image_size"))
    )
    name = options.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    record = RunRecord(
        space_path=str(options.space_path),
        data_dir=absolute_location(storage.location_arg(data_dir)),
        builtin_sample=builtin_sample,
        constants=constants,
        num_samples=options.num_samples or budget.num_samples,
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


def _tune_trainable(
    config: dict[str, Any], spec: SpaceSpec, data_uri: str, threads: int, gpus: float = 1.0
) -> None:
    """The Ray Tune function trainable: resolve the config, map its data through this node's
    shard cache (its image size, train + val), then hand over to ``train_trial``."""
    from ray import tune

    from hpa_tune.ray_layer.cluster import assigned_device, current_node_id

    params, constants = split_trial_config(spec, config)
    cfg = resolve_config(spec, params, constants)
    torch.set_num_threads(threads)

    device = torch.device(assigned_device())  # CPU (logged once) on a GPU without CUDA
    node_id = current_node_id()  # recorded per epoch: summary.csv/history.csv say where it ran
    data = load_trial_data(data_uri, [cfg.image_size])

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({**metrics, "node_id": node_id}, checkpoint=checkpoint)

    # A retry of a trial whose loss became non-finite fails again at once, not after an epoch.
    with fail_fast_on_retry(tune.get_context().get_trial_dir()):
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_trial(cfg, data, report, device=device, gpu_fraction=gpus)
            return
        with checkpoint.as_directory() as restore_dir:
            train_trial(
                cfg, data, report, restore_dir=restore_dir, device=device, gpu_fraction=gpus
            )


def _init_ray() -> None:
    """Join ``$RAY_ADDRESS`` (a cluster, with its auth token) or start a local Ray."""
    from hpa_tune.ray_layer.cluster import init_ray

    if init_ray():  # a local Ray of our own (not a cluster we joined)
        import ray

        record_local_session(ray.get_runtime_context())  # ended by a later command if we die


def _quiet_tune() -> None:
    # One checkpoint kept per trial makes Tune snapshot often; its warning about that is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Our own table (progress.LiveProgress) is the display; Tune's output engine stays silent
    # (with the new engine, verbose=0 still prints a config box and a TensorBoard hint that
    # points at Ray's session folder rather than EXP/tensorboard).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _trial_resources(rec: RunRecord) -> TrialResources:
    """Resources per trial, checked against the nodes up now and those the autoscaler can add."""
    from hpa_tune.ray_layer.cluster import autoscaler_node_types, live_node_resources

    resources = resolve_trial_resources(
        rec.cpus_per_trial, rec.gpus_per_trial, live_node_resources(), autoscaler_node_types()
    )
    for note in resources.notes:
        logging.getLogger(__name__).warning(note)
    return resources


def _scheduler(plan: RunPlan) -> Any:
    from hpa_tune.ray_layer.asha_state import ASHA_STATE_FILE, PersistentASHA

    s = plan.spec.scheduler
    if s.type == "fifo":
        return None
    return PersistentASHA(
        state_path=_state_dir(plan) / ASHA_STATE_FILE,
        time_attr="epoch",
        max_t=plan.record.max_epochs,
        grace_period=min(s.grace_period, plan.record.max_epochs),
        reduction_factor=s.reduction_factor,
        brackets=s.brackets,
    )


def _searcher(plan: RunPlan) -> Any:
    from hpa_tune.ray_layer.truthful_search import TruthfulOptunaSearch

    s = plan.spec.sampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per run
    sampler = tpe_sampler(
        s, plan.record.seed, plan.record.num_samples, len(plan.spec.points_to_evaluate)
    )
    return TruthfulOptunaSearch(
        max_epochs=plan.record.max_epochs,
        storage=journal_storage(_state_dir(plan)),
        study_name=plan.record.study_name or plan.exp_dir.name,
        space=define_by_run(plan.spec, plan.record.constants),
        metric=plan.spec.metric,
        mode=plan.spec.mode,
        sampler=sampler,
        points_to_evaluate=[dict(p) for p in plan.spec.points_to_evaluate] or None,
    )


def run_search(plan: RunPlan, live: bool = True) -> list[TrialRecord]:
    """Run the Ray Tune search of ``plan``; returns one record per trial.

    ``live`` shows the updating trial table; otherwise nothing is printed while trials run.
    """
    from ray import tune

    _quiet_tune()
    if journal_path(plan.exp_dir).exists():
        raise HpaTuneError(
            f"{plan.exp_dir} already holds a search; continue it with `hpa-tune resume "
            f"{plan.exp_dir}` or choose another --name"
        )
    rec = plan.record
    check_search_packing(plan.spec, rec.constants, rec.seed, rec.gpus_per_trial, _data_rows(rec))
    _init_ray()
    resources = _trial_resources(rec)
    cpus, gpus = resources.cpus, resources.gpus
    # Written once resources are known: run.json records what trials actually got (space.yaml
    # keeps what was asked, e.g. "auto").
    write_run(plan.exp_dir, replace(rec, cpus_per_trial=cpus, gpus_per_trial=gpus), plan.spec)
    trainable = tune_trainable(plan, cpus, gpus)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=plan.spec.metric,
            mode=plan.spec.mode,
            search_alg=_searcher(plan),
            scheduler=_scheduler(plan),
            num_samples=rec.num_samples,
            max_concurrent_trials=plan.max_concurrent,
            time_budget_s=rec.time_budget_s,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            reuse_actors=True,  # a new worker process per trial costs seconds (BENCHMARKS.md 5.1)
        ),
        run_config=tune.RunConfig(
            **_ray_storage(plan),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=plan.spec.metric,
                checkpoint_score_order=plan.spec.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=rec.max_failures),
            callbacks=_callbacks(plan, live),
            verbose=0,
        ),
    )
    return fit_and_collect(plan, tuner)


def fit_and_collect(plan: RunPlan, tuner: Any) -> list[TrialRecord]:
    """Run ``tuner`` (new or restored) to its end, close the study, and record every trial.

    Raises:
        SearchInterrupted: Ctrl-C stopped the search; Tune saved its state for ``resume``.
    """
    with watch_ctrl_c() as interrupted, trial_tracebacks_silenced():
        results = tuner.fit()
        if interrupted():
            raise SearchInterrupted(plan.exp_dir)
    study = load_study(plan.exp_dir, plan.record.study_name)
    if study is not None:  # trials the time budget stopped were never told how they ended
        finish_running(study, plan.record.max_epochs, plan.spec.mode)
    return [_record(plan, result) for result in results]


def tune_trainable(plan: RunPlan, cpus: float, gpus: float) -> Any:
    """The trainable Tune runs (and ``resume`` supplies again): each trial loads its own data
    (``data_uri``) through its node's shard cache; resources attached."""
    from ray import tune

    threads = max(1, int(cpus))
    return tune.with_resources(
        tune.with_parameters(
            _tune_trainable,
            spec=plan.spec,
            data_uri=plan.record.data_dir,
            threads=threads,
            gpus=gpus,
        ),
        {"cpu": cpus, "gpu": gpus},
    )


def ray_restore_path(plan: RunPlan) -> tuple[str, Any]:
    """What ``Tuner.restore`` takes for ``plan``'s experiment: its path and filesystem (None for
    a local directory)."""
    if not storage.is_remote(plan.location):
        return str(plan.exp_dir), None
    fs, path = storage.filesystem(plan.location)
    return path, fs


def _data_rows(rec: RunRecord) -> dict[int, int]:
    """Train + val samples per image size of the run (from the manifest; no arrays loaded)."""
    manifest = ShardManifest.load(rec.data_dir)
    rows = manifest.splits[TRAIN] + manifest.splits[VAL]
    return {size: rows for size in rec.sizes}


def _ray_storage(plan: RunPlan) -> dict[str, Any]:
    """Where Ray Tune writes trials: beside our files locally, straight to the bucket otherwise
    (every node can reach it; credentials stay in the environment, not in the filesystem)."""
    if not storage.is_remote(plan.location):
        return {"name": plan.exp_dir.name, "storage_path": str(plan.exp_dir.parent)}
    parent, _, name = plan.location.rpartition("/")
    fs, path = storage.filesystem(parent)
    return {"name": name, "storage_path": path, "storage_filesystem": fs}


def _state_dir(plan: RunPlan) -> Path | StagedPath:
    """Where the driver keeps the search's own state (journal, ASHA rungs, TensorBoard): the
    experiment directory, or for a bucket experiment the staging copy of whichever driver runs
    or restores it (the searcher, scheduler and callbacks are pickled with the search)."""
    return StagedPath(plan.location) if storage.is_remote(plan.location) else plan.exp_dir


def _callbacks(plan: RunPlan, live: bool) -> list[Any]:
    """TensorBoard logs always; the live table only when ``live``; for a bucket experiment,
    uploads of our files before each of Tune's snapshots."""
    from hpa_tune.ray_layer.bucket_sync import StagingUploads
    from hpa_tune.ray_layer.live_table import LiveProgress
    from hpa_tune.ray_layer.tensorboard_callback import TensorBoardTrials

    state = _state_dir(plan)
    callbacks: list[Any] = [TensorBoardTrials(state, plan.spec, plan.record.max_epochs)]
    if storage.is_remote(plan.location):
        callbacks.append(StagingUploads(plan.location))
    if live:
        params = list(plan.spec.params)
        callbacks.append(LiveProgress(plan.record.num_samples, plan.record.max_epochs, params))
    return callbacks


def _record(plan: RunPlan, result: Any) -> TrialRecord:
    """A TrialRecord of one Ray result; ``path`` is the checkpoint of the trial's best epoch."""
    params, constants = split_trial_config(plan.spec, result.config or {})
    frame = result.metrics_dataframe
    history = [] if frame is None else frame.to_dict("records")
    history = [
        {k: v for k, v in h.items() if not str(k).startswith("val_class_f1/")} for h in history
    ]
    # A trial restored from a checkpoint reports the epochs after it again: keep the last report.
    history = list({h.get("epoch"): h for h in history}.values())
    checkpoint = _best_checkpoint(result, plan.spec.metric, plan.spec.mode)
    return TrialRecord(
        trial_id=Path(result.path).name.removeprefix("trial_"),
        params=params,
        arch=str(params.get("arch", constants.get("arch", TrialConfig().arch))),
        history=history,
        error=error_summary(result.error),
        path=_uri(plan, checkpoint or result.path),
    )


def _uri(plan: RunPlan, ray_path: str) -> str:
    """A path Ray reports, as a URI when the experiment is on object storage (Ray drops the scheme)."""
    if storage.is_remote(plan.location) and "://" not in ray_path:
        return f"{plan.location.split('://')[0]}://{ray_path}"
    return ray_path


def _best_checkpoint(result: Any, metric: str, mode: str) -> str | None:
    kept = [
        (m.get(metric), c.path)
        for c, m in (result.best_checkpoints or [])
        if m.get(metric) is not None
    ]
    if not kept:
        return result.checkpoint.path if result.checkpoint else None
    return (max if mode == "max" else min)(kept, key=lambda pair: pair[0])[1]


def pick_best(plan: RunPlan, records: list[TrialRecord]) -> BestTrial:
    """The trial with the best ``metric`` at any epoch.

    Raises:
        HpaTuneError: no trial reported the metric (every trial failed).
    """
    metric, mode = plan.spec.metric, plan.spec.mode
    sign = 1 if mode == "max" else -1
    candidates = [(sign * h[metric], r, h) for r in records for h in r.history if metric in h]
    if not candidates:
        errors = "; ".join(sorted({(r.error or "no report").splitlines()[-1] for r in records}))
        raise HpaTuneError(f"no trial reported {metric}; every trial failed: {errors}")
    _, rec, hist = max(candidates, key=lambda c: c[0])
    cfg = resolve_config(plan.spec, rec.params, plan.record.constants)
    return BestTrial(
        trial_id=rec.trial_id,
        params=rec.params,
        config=cfg.model_dump(),
        metric=metric,
        mode=mode,
        value=float(hist[metric]),
        epoch=int(hist["epoch"]),
        checkpoint=rec.path,
    )


def write_results(plan: RunPlan, records: list[TrialRecord]) -> tuple[Any, BestTrial]:
    """Write ``summary.csv``, ``history.csv`` and ``best.json``; returns the summary frame and the winner."""
    frame = summary_frame(records, plan.record.max_epochs, plan.spec.metric, plan.spec.mode)
    frame.to_csv(plan.exp_dir / SUMMARY_FILE, index=False)
    history_frame(records).to_csv(plan.exp_dir / HISTORY_FILE, index=False)
    best = pick_best(plan, records)
    write_best(plan.exp_dir, best)
    return frame, best
