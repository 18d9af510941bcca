"""Refit (and scoring every trial) as a Ray task with the winning trial's resources.

On a GPU cluster the refit then trains on a GPU worker, not on the CPU-only head that runs the
driver. The task reads the data itself (``run.json``'s ``data_dir``: a directory every node
mounts, or a bucket, through its node's shard cache) and writes into the experiment as a local
refit does (an experiment on object storage through a staging copy on the task's node, uploaded
back); its log lines and epoch progress stream back to the driver as they happen (a Ray
streaming generator).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import RUN_FILE, SPACE_FILE
from hpa_tune.ray_layer.cluster_resources import TrialResources, resolve_trial_resources
from hpa_tune.refit.retrain import Progress, RefitResult
from hpa_tune.search.experiment import absolute_location, read_run
from hpa_tune.storage import filesystems as storage
from hpa_tune.storage.staging import local_experiment

# ("log", line) | ("progress", done, total) | ("refit", RefitResult) | ("done",)
Event = tuple[Any, ...]


def _run_refit(
    location: str,
    all_trials: bool,
    threads: int,
    emit: Callable[[Event], None],
    top_k: int | None = None,
    tta: bool | None = None,
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
) -> Iterator[Event]:
    """The Ray task (a streaming generator): the refit runs in a thread, its events are yielded."""
    events: queue.Queue[Event] = queue.Queue()

    def work() -> None:
        try:
            _run_refit(exp_dir, all_trials, threads, events.put, top_k, tta)
            events.put(("done",))
        except BaseException as exc:  # re-raised in the generator, so Ray hands it to the driver
            events.put(("error", exc))

    threading.Thread(target=work, name="hpa-refit", daemon=True).start()
    while True:
        event = events.get()
        if event[0] == "error":
            raise event[1]
        yield event
        if event[0] == "done":
            return


def refit_resources(exp_dir: Path) -> TrialResources:
    """The resources of the experiment's trials (so of its winner), checked against this cluster."""
    from hpa_tune.ray_layer.cluster import autoscaler_node_types, live_node_resources

    record, _ = read_run(exp_dir)
    return resolve_trial_resources(
        record.cpus_per_trial, record.gpus_per_trial, live_node_resources(), autoscaler_node_types()
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

    Raises:
        HpaTuneError: the refit failed with one (bad experiment directory, missing data, ...).
    """
    import ray

    from hpa_tune.ray_layer.cluster import init_ray

    init_ray()
    location = absolute_location(storage.location_arg(exp_dir))
    with local_experiment(location, upload=False, only=(RUN_FILE, SPACE_FILE)) as local:
        res = refit_resources(local)
    log(f"refit: a Ray task with {res.cpus:g} CPU and {res.gpus:g} GPU (the trials' resources)")
    task = ray.remote(refit_events).options(
        num_returns="streaming", num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0
    )
    result: RefitResult | None = None
    try:
        stream = task.remote(location, all_trials, max(1, int(res.cpus)), top_k, tta)  # type: ignore[call-arg]
        for ref in stream:  # type: ignore[attr-defined]  # a streaming generator, not one ref
            event = ray.get(ref)
            if event[0] == "log":
                log(event[1])
            elif event[0] == "progress" and progress is not None:
                progress(event[1], event[2])
            elif event[0] == "refit":
                result = event[1]
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, HpaTuneError):
            raise exc.cause from None
        raise
    assert result is not None, "the refit task ended without a result"
    return result
