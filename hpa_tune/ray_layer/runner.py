"""``hpa-tune run``: the Ray Tune wiring of a planned search (OptunaSearch + ASHA).

The plan is made without Ray (``search.planning``), the winner and result files chosen and
written without it (``search.results``); this module builds the ``Tuner`` from a plan (searcher
``truthful_search``, scheduler ``asha_state``, callbacks ``tensorboard_callback``,
``bucket_sync`` and ``live_table``), runs it, and turns Ray's results into trial records.
``resume`` restores what it started. The function each trial runs in a worker is in ``worker``:
trials read their data themselves, through their node's shard cache (``data.node_cache``), so
the driver holds no image arrays. Results on object storage: Ray writes trials to the bucket,
our own files go to a local staging directory that the CLI uploads (``staging``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import TRIAL_PREFIX
from hpa_tune.ray_layer.cluster_resources import TrialResources, resolve_trial_resources
from hpa_tune.ray_layer.faults import SearchInterrupted, watch_ctrl_c
from hpa_tune.ray_layer.session import record_local_session
from hpa_tune.ray_layer.trial_errors import error_summary, trial_tracebacks_silenced
from hpa_tune.ray_layer.worker import CHECKPOINT_RANK, _tune_trainable
from hpa_tune.search.experiment import RunRecord, write_run
from hpa_tune.search.planning import RunPlan, check_run_data, check_search_packing
from hpa_tune.search.space import define_by_run, split_trial_config, tpe_sampler
from hpa_tune.search.study import finish_running, journal_path, journal_storage, load_study
from hpa_tune.search.trial_table import TrialRecord
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.staging import StagedPath
from hpa_tune.train.config import TrialConfig


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
    from hpa_tune.experiment_files import ASHA_STATE_FILE
    from hpa_tune.ray_layer.asha_state import PersistentASHA

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


def _search_alg(plan: RunPlan) -> Any:
    """The searcher, capped at ``plan.max_concurrent`` running trials, in a generator that a
    restore keeps in step with Ray's trials (``aligned_search``)."""
    from ray.tune.search import ConcurrencyLimiter

    from hpa_tune.ray_layer.aligned_search import AlignedSearchGenerator

    searcher = _searcher(plan)
    if plan.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent)
    return AlignedSearchGenerator(searcher)


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
            search_alg=_search_alg(plan),
            scheduler=_scheduler(plan),
            num_samples=rec.num_samples,
            time_budget_s=rec.time_budget_s,
            trial_dirname_creator=lambda trial: f"{TRIAL_PREFIX}{trial.trial_id}",
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
    sizes_vary = bool(rec.constants.get("size_schedule"))
    if progress == "live":
        return [LiveProgress(rec.num_samples, rec.max_epochs, params, sizes_vary)]
    if progress != "plain":
        return []
    s = plan.spec.scheduler
    rungs = (
        [] if s.type == "fifo" else asha_rungs(s.grace_period, s.reduction_factor, rec.max_epochs)
    )
    return [
        PlainProgress(
            rec.num_samples, rec.max_epochs, params, rungs, rec.time_budget_s, sizes_vary=sizes_vary
        )
    ]


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
        trial_id=Path(result.path).name.removeprefix(TRIAL_PREFIX),
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
