"""``hpa-tune run``: a Ray Tune search (OptunaSearch + ASHA) over a YAML search space.

The module that schedules trials, and so the one importing Ray (with its callbacks ``progress``,
``tb_callback`` and ``bucket_sync``, its thin Ray subclasses ``truthful_search`` and ``asha_state``, and
``resume``, which restores what it started).
Trials read their data themselves, through their node's shard cache (``data.node_cache``): the
driver holds no image arrays. Results on object storage: Ray writes trials to the bucket, our
own files go to a local staging directory that the CLI uploads (``staging``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from hpa_tune.data.node_cache import NodeCache
from hpa_tune.data.shards import ShardManifest
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.errors import HpaTuneError, NotRetryableError
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
from hpa_tune.search.trial_table import (
    TrialRecord,
    best_report_index,
    checkpoint_rank,
    history_frame,
    never_reported,
    summary_frame,
)
from hpa_tune.search.warm_start import WarmStart
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
    progress: str = "live"  # live, plain or none (progress.progress_mode resolves auto)


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

    def reporter(restore_dir: str | None) -> Any:
        best = {"value": _read_best_so_far(restore_dir)}  # of the epochs before the restore

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            value = metrics.get(spec.metric)
            rank = float("-inf")
            if value is not None:
                rank = checkpoint_rank(float(value), best["value"], spec.mode)
                best["value"] = float(value) if rank > float("-inf") else best["value"]
            checkpoint = None
            if checkpoint_dir:
                Path(checkpoint_dir, BEST_SO_FAR_FILE).write_text(json.dumps(best["value"]))
                checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
            metrics = {**metrics, "node_id": node_id, CHECKPOINT_RANK: rank}
            tune.report(metrics, checkpoint=checkpoint)

        return report

    # A retry of a trial that failed in a way a retry cannot change (a non-finite loss, a bad
    # configuration, a missing or corrupt shard) fails again at once, before any work.
    with fail_fast_on_retry(tune.get_context().get_trial_dir()):
        params, constants = split_trial_config(spec, config)
        try:
            cfg = resolve_config(spec, params, constants)
        except HpaTuneError as err:
            raise NotRetryableError(str(err)) from None
        torch.set_num_threads(threads)

        device = torch.device(assigned_device())  # CPU (logged once) on a GPU without CUDA
        node_id = current_node_id()  # recorded per epoch: summary.csv/history.csv say where it ran
        data = load_trial_data(data_uri, [cfg.image_size])

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_trial(cfg, data, reporter(None), device=device, gpu_fraction=gpus)
            return
        with checkpoint.as_directory() as restore_dir:
            train_trial(
                cfg,
                data,
                reporter(restore_dir),
                restore_dir=restore_dir,
                device=device,
                gpu_fraction=gpus,
            )


# Ray ranks a trial's checkpoints by this reported value (``summary.checkpoint_rank``), so the
# one it keeps is the epoch summary.csv names, also on ties; the trial's best score so far
# travels in each checkpoint for a restore.
CHECKPOINT_RANK = "checkpoint_rank"
BEST_SO_FAR_FILE = "best_so_far.json"


def _read_best_so_far(restore_dir: str | None) -> float | None:
    path = Path(restore_dir, BEST_SO_FAR_FILE) if restore_dir else None
    if path is None or not path.is_file():
        return None
    value = json.loads(path.read_text())
    return None if value is None else float(value)


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
    journal = journal_storage(_state_dir(plan))
    study_name = plan.record.study_name or plan.exp_dir.name
    if plan.warm_start is not None:  # carried trials first: the new trials are numbered after them
        plan.warm_start.start_study(journal, study_name, plan.spec.mode)
    return TruthfulOptunaSearch(
        max_epochs=plan.record.max_epochs,
        storage=journal,
        study_name=study_name,
        space=define_by_run(plan.spec, plan.record.constants),
        metric=plan.spec.metric,
        mode=plan.spec.mode,
        sampler=sampler,
        points_to_evaluate=[dict(p) for p in plan.spec.points_to_evaluate] or None,
    )


def run_search(plan: RunPlan, progress: str = "live") -> list[TrialRecord]:
    """Run the Ray Tune search of ``plan``; returns one record per trial.

    ``progress``: ``live`` shows the updating trial table, ``plain`` prints a line per trial
    event (for logs), ``none`` nothing while trials run.
    """
    from ray import tune

    _quiet_tune()
    if journal_path(plan.exp_dir).exists():
        raise HpaTuneError(
            f"{plan.exp_dir} already holds a search; continue it with `hpa-tune resume "
            f"{plan.exp_dir}` or choose another --name"
        )
    rec = plan.record
    rows = check_run_data(rec)  # what every trial would fail on is found before Ray starts
    check_search_packing(plan.spec, rec.constants, rec.gpus_per_trial, rows)
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
                num_to_keep=1,  # the best epoch (earliest of equals), and Ray keeps the latest
                checkpoint_score_attribute=CHECKPOINT_RANK,
                checkpoint_score_order="max",
            ),
            failure_config=tune.FailureConfig(max_failures=rec.max_failures),
            callbacks=_callbacks(plan, progress),
            verbose=0,
        ),
    )
    return fit_and_collect(plan, tuner)


def fit_and_collect(plan: RunPlan, tuner: Any) -> list[TrialRecord]:
    """Run ``tuner`` (new or restored) to its end, close the study, and record every trial.

    Raises:
        SearchInterrupted: Ctrl-C or SIGTERM stopped the search; Tune saved its state for
            ``resume``.
    """
    with watch_ctrl_c() as interrupted, trial_tracebacks_silenced():
        results = tuner.fit()
        if signum := interrupted():
            raise SearchInterrupted(plan.exp_dir, signum)
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


def check_run_data(rec: RunRecord) -> dict[int, int]:
    """Train + val samples per image size of the run (from the manifest; no arrays loaded).

    Checks first what every trial would otherwise fail on: each image size of the run prepared,
    and this machine's shard cache (``$HPA_TUNE_SHARD_CACHE``, ``_GB``) usable.

    Raises:
        HpaTuneError: one line naming the size, or the variable and directory.
    """
    manifest = ShardManifest.load(rec.data_dir)
    for size in rec.sizes:
        for split in (TRAIN, VAL):
            manifest.check_prepared(rec.data_dir, split, size)
    NodeCache.from_env().check_writable()
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


def _callbacks(plan: RunPlan, progress: str) -> list[Any]:
    """TensorBoard logs always; the ``progress`` display (live, plain or none); for a bucket
    experiment, uploads of our files before each of Tune's snapshots."""
    from hpa_tune.ray_layer.bucket_sync import StagingUploads
    from hpa_tune.ray_layer.tensorboard_callback import TensorBoardTrials

    state = _state_dir(plan)
    callbacks: list[Any] = [TensorBoardTrials(state, plan.spec, plan.record.max_epochs)]
    if storage.is_remote(plan.location):
        callbacks.append(StagingUploads(plan.location))
    return callbacks + progress_callbacks(plan, progress)


def progress_callbacks(plan: RunPlan, progress: str) -> list[Any]:
    """The callback showing the search's progress: ``live``, ``plain`` or ``none`` (no callback)."""
    from hpa_tune.ray_layer.live_table import LiveProgress, PlainProgress
    from hpa_tune.report.search_view import asha_rungs

    rec, params = plan.record, list(plan.spec.params)
    if progress == "live":
        return [LiveProgress(rec.num_samples, rec.max_epochs, params)]
    if progress != "plain":
        return []
    s = plan.spec.scheduler
    rungs = (
        [] if s.type == "fifo" else asha_rungs(s.grace_period, s.reduction_factor, rec.max_epochs)
    )
    return [PlainProgress(rec.num_samples, rec.max_epochs, params, rungs, rec.time_budget_s)]


def _record(plan: RunPlan, result: Any) -> TrialRecord:
    """A TrialRecord of one Ray result; ``path`` is the checkpoint of the trial's best epoch."""
    params, constants = split_trial_config(plan.spec, result.config or {})
    frame = result.metrics_dataframe
    history = [] if frame is None else frame.to_dict("records")
    history = [
        {
            k: v
            for k, v in h.items()
            if not str(k).startswith("val_class_f1/") and k != CHECKPOINT_RANK
        }
        for h in history
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
    """The kept checkpoint Ray ranks best: the trial's best epoch, the earliest of equal ones
    (by ``metric`` itself for trials reported before ``checkpoint_rank`` existed)."""
    sign = 1 if mode == "max" else -1
    kept = [
        (m[CHECKPOINT_RANK] if CHECKPOINT_RANK in m else sign * m[metric], c.path)
        for c, m in (result.best_checkpoints or [])
        if m.get(CHECKPOINT_RANK, m.get(metric)) is not None
    ]
    if not kept:
        return result.checkpoint.path if result.checkpoint else None
    return max(kept, key=lambda pair: pair[0])[1]


def pick_best(plan: RunPlan, records: list[TrialRecord]) -> BestTrial:
    """The trial with the best ``metric`` at any epoch, among the trials that ended without an
    error (one whose loss became non-finite after a good epoch is never the winner); on a tie the
    earlier trial, and within a trial the earlier epoch (``summary.best_report_index``).

    Raises:
        HpaTuneError: no trial that ended without an error reported the metric.
    """
    metric, mode = plan.spec.metric, plan.spec.mode
    sign = 1 if mode == "max" else -1
    candidates = []  # (signed best value, -position, record, its best epoch's report)
    for position, r in enumerate(records):
        reported = [h for h in r.history if metric in h]
        best = best_report_index([h[metric] for h in reported], mode)
        if best is not None and not r.error:
            candidates.append((sign * reported[best][metric], -position, r, reported[best]))
    if not candidates:
        raise HpaTuneError(_no_winner(metric, records, plan.record.time_budget_s))
    _, _, rec, hist = max(candidates, key=lambda c: c[:2])
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


def _no_winner(metric: str, records: list[TrialRecord], time_budget_s: float | None) -> str:
    """Why no trial can win: the time budget ran out first, or every trial failed."""
    trials = [r for r in records if not never_reported(r)]
    if not trials:
        budget = f" of {time_budget_s:g} s" if time_budget_s else ""
        note = f" ({budget_note(records)})" if records else ""
        return (
            f"the time budget{budget} ran out before any trial reported {metric}{note}; "
            "give the search more time with --time-budget-s"
        )
    errors = "; ".join(sorted({(r.error or "no report").splitlines()[-1] for r in trials}))
    if any(metric in h for r in trials for h in r.history):
        return f"no trial ended without an error; every trial failed: {errors}"
    return f"no trial reported {metric}; every trial failed: {errors}"


def budget_note(records: list[TrialRecord]) -> str:
    """``"N trial(s) not started"`` for the trials the time budget ended before their first
    report (they are no trials: not in ``summary.csv``); empty when there are none."""
    n = sum(never_reported(r) for r in records)
    return f"{n} trial{'s' if n != 1 else ''} not started" if n else ""


def write_results(plan: RunPlan, records: list[TrialRecord]) -> tuple[Any, BestTrial]:
    """Write ``summary.csv``, ``history.csv`` and ``best.json``; returns the summary frame and the winner."""
    trials = [r for r in records if not never_reported(r)]  # the budget ended the others first
    frame = summary_frame(trials, plan.record.max_epochs, plan.spec.metric, plan.spec.mode)
    frame.to_csv(plan.exp_dir / SUMMARY_FILE, index=False)
    history_frame(trials).to_csv(plan.exp_dir / HISTORY_FILE, index=False)
    best = pick_best(plan, records)
    write_best(plan.exp_dir, best)
    return frame, best
