"""Refit (and scoring every trial) as a Ray task with the winning trial's resources.

On a GPU cluster the refit then trains on a GPU worker, not on the CPU-only head that runs the
driver. The task reads the data itself (``run.json``'s ``data_dir``: a directory every node
mounts, or a bucket, through its node's shard cache) and writes into the experiment as a local
refit does (an experiment on object storage through a staging copy on the task's node, uploaded
back); its log lines and epoch progress stream back to the driver as they happen (a Ray
streaming generator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hpa_tune.experiment_files import BEST_FILE, RUN_FILE, SPACE_FILE, SUMMARY_FILE
from hpa_tune.ray_layer.cluster_resources import TrialResources, resolve_trial_resources
from hpa_tune.ray_layer.event_stream import Event, raise_task_error, stream_events
from hpa_tune.refit.members import TrainedMember, needs_retraining
from hpa_tune.refit.retrain import Progress, RefitResult, refit_candidates
from hpa_tune.search.experiment import absolute_location, read_run
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.staging import local_experiment

# Events: ("log", line) | ("progress", done, total) | ("refit", RefitResult) | ("done",)


def _run_refit(
    location: str,
    all_trials: bool,
    threads: int,
    emit: Callable[[Event], None],
    top_k: int | None = None,
    tta: bool | None = None,
    trained: Mapping[str, TrainedMember] | None = None,
) -> None:
    """The work of the task: refit, then optionally score every trial; reports through ``emit``."""
    import torch

    from hpa_tune.ray_layer.cluster import current_node_id, trial_device
    from hpa_tune.refit.retrain import refit
    from hpa_tune.refit.trial_scores import score_trials

    torch.set_num_threads(threads)
    node_id = current_node_id()
    _, fallback = trial_device(_gpu_ids(), torch.cuda.is_available())
    if fallback:  # refit picks the CPU itself (no CUDA); say so where the user looks
        emit(("log", f"refit on node {node_id}: {fallback}"))

    def log(line: Any) -> None:
        emit(("log", str(line)))

    with local_experiment(location) as exp_dir:
        result = refit(
            exp_dir,
            None,
            log=log,
            progress=lambda d, t: emit(("progress", d, t)),
            node_id=node_id,
            top_k=top_k,
            tta=tta,
            trained=trained,
        )
        if all_trials:
            score_trials(exp_dir, None, log=log)
    emit(("refit", result))


def _gpu_ids() -> list[Any]:
    import ray

    return list(ray.get_gpu_ids())


def refit_events(
    exp_dir: str,
    all_trials: bool,
    threads: int,
    top_k: int | None = None,
    tta: bool | None = None,
    trained: Mapping[str, TrainedMember] | None = None,
) -> Iterator[Event]:
    """The Ray task (a streaming generator): the refit runs in a thread, its events are yielded."""
    yield from stream_events(
        lambda emit: _run_refit(exp_dir, all_trials, threads, emit, top_k, tta, trained),
        name="hpa-refit",
    )


def refit_resources(exp_dir: Path) -> TrialResources:
    """The resources of the experiment's trials (so of its winner), checked against this cluster."""
    from hpa_tune.ray_layer.cluster import autoscaler_node_types, live_node_resources

    record, _ = read_run(exp_dir)
    return resolve_trial_resources(
        record.cpus_per_trial, record.gpus_per_trial, live_node_resources(), autoscaler_node_types()
    )


def _members_first(
    exp_dir: Path,
    top_k: int | None,
    res: TrialResources,
    log: Callable[[str], Any],
    progress: Progress | None,
) -> dict[str, TrainedMember] | None:
    """The members the refit must retrain, each trained as a Ray task of its own, when there are
    ``PARALLEL_FROM`` or more of them (else ``None``: the refit task trains them itself). Done
    before the refit task is submitted, which holds a trial's resources while it runs."""
    from hpa_tune.ray_layer.remote_members import PARALLEL_FROM, train_members_on_ray

    candidates = refit_candidates(exp_dir, top_k)
    todo = needs_retraining(candidates)
    if len(todo) < PARALLEL_FROM:
        return None
    record, spec = read_run(exp_dir)
    positions = {c.trial_id: f"{i + 1}/{len(candidates)}" for i, c in enumerate(candidates)}
    log(
        f"refit: {len(todo)} members retrain as Ray tasks of their own, each with "
        f"{res.cpus:g} CPU and {res.gpus:g} GPU"
    )
    return train_members_on_ray(
        todo, positions, record.data_dir, res, spec.metric, spec.mode, log, progress
    )


def refit_on_ray(
    exp_dir: str | Path,
    log: Callable[[str], Any] = print,
    progress: Progress | None = None,
    all_trials: bool = False,
    top_k: int | None = None,
    tta: bool | None = None,
) -> RefitResult:
    """Run ``refit`` (and ``score_trials`` when ``all_trials``) as a Ray task; joins Ray if needed.

    When two or more members must be retrained, each first trains as a Ray task of its own
    (``remote_members``), all at once; the refit task then takes them as trained.

    Raises:
        HpaTuneError: the refit failed with one (bad experiment directory, missing data, ...).
    """
    import ray

    from hpa_tune.ray_layer.cluster import init_ray

    init_ray()
    location = absolute_location(storage.location_arg(exp_dir))
    only = (RUN_FILE, SPACE_FILE, SUMMARY_FILE, BEST_FILE)
    with local_experiment(location, upload=False, only=only) as local:
        res = refit_resources(local)
        trained = _members_first(local, top_k, res, log, progress)
    log(f"refit: a Ray task with {res.cpus:g} CPU and {res.gpus:g} GPU (the trials' resources)")
    task = ray.remote(refit_events).options(
        num_returns="streaming", num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0
    )
    result: RefitResult | None = None
    try:
        threads = max(1, int(res.cpus))
        stream = task.remote(location, all_trials, threads, top_k, tta, trained)  # type: ignore[call-arg]
        for ref in stream:  # type: ignore[attr-defined]  # a streaming generator, not one ref
            event = ray.get(ref)
            if event[0] == "log":
                log(event[1])
            elif event[0] == "progress" and progress is not None:
                progress(event[1], event[2])
            elif event[0] == "refit":
                result = event[1]
    except ray.exceptions.RayTaskError as exc:
        raise_task_error(exc)
    assert result is not None, "the refit task ended without a result"
    return result
