"""The refit's members trained in parallel: each member a refit on Ray must retrain is a Ray task
of its own with the trials' resources, so K members on K GPUs take the time of one.

The tasks run before the refit task (which holds a trial's resources itself), so a cluster with
room for one trial still works: Ray then queues the members one after another. Each task reads
the data itself (``run.json``'s ``data_dir``, through its node's shard cache), trains its member
(``refit.members.retrain_member``) and returns the best epoch's weights through Ray's object
store, never writing into the experiment; its log lines and epochs stream back as they happen.
The refit task then takes the members as trained (``refit(..., trained=...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from hpa_tune.ray_layer.cluster_resources import TrialResources
from hpa_tune.ray_layer.event_stream import Event, raise_task_error, stream_events
from hpa_tune.refit.members import Candidate, TrainedMember, failure_reason
from hpa_tune.refit.retrain import Progress

# Fewer members to train than this: the refit task trains them itself, as without a cluster.
PARALLEL_FROM = 2


def _train_member(
    data_dir: str,
    cand: Candidate,
    label: str,
    threads: int,
    metric: str,
    mode: str,
    emit: Callable[[Event], None],
) -> None:
    """The work of one member's task: retrain ``cand``, say where and when; reports through
    ``emit``."""
    import ray
    import torch

    from hpa_tune.ray_layer.cluster import current_node_id, trial_device
    from hpa_tune.refit.members import retrain_member
    from hpa_tune.train.trial_data import load_trial_data

    started = time.time()
    torch.set_num_threads(threads)
    node_id = current_node_id()
    emit(("log", f"refit: {label} started on node {node_id}"))
    _, fallback = trial_device(list(ray.get_gpu_ids()), torch.cuda.is_available())
    if fallback:
        emit(("log", f"refit: {label} on node {node_id}: {fallback}"))
    data = load_trial_data(data_dir, [cand.cfg.image_size])
    trained = retrain_member(
        cand,
        data,
        log=lambda line: emit(("log", f"{label}: {line}")),
        progress=lambda epoch: emit(("progress", epoch)),
        metric=metric,
        mode=mode,
    )
    emit(("member", replace(trained, node_id=node_id, started=started, ended=time.time())))


def member_events(
    data_dir: str, cand: Candidate, label: str, threads: int, metric: str, mode: str
) -> Iterator[Event]:
    """The Ray task of one member (a streaming generator of its events)."""
    yield from stream_events(
        lambda emit: _train_member(data_dir, cand, label, threads, metric, mode, emit),
        name=f"hpa-refit-{cand.trial_id}",
    )


def _lost(cand: Candidate, exc: BaseException) -> TrainedMember:
    """A member whose task died without raising (its worker killed, e.g. for memory)."""
    lines = str(exc).strip().splitlines()
    why = f"its Ray task died ({type(exc).__name__}: {lines[0] if lines else ''})"
    return TrainedMember(cand.trial_id, None, failure=failure_reason(cand.trial_id, why))


def train_members_on_ray(
    todo: list[Candidate],
    positions: dict[str, str],
    data_dir: str,
    res: TrialResources,
    metric: str,
    mode: str,
    log: Callable[[str], Any] = print,
    progress: Progress | None = None,
) -> dict[str, TrainedMember]:
    """Retrain ``todo``, one Ray task each with ``res``, all at once; waits for every task.

    Args:
        todo: the members to retrain (``refit.members.needs_retraining``).
        positions: each member's place in the refit's, by trial id (``member 2/3``).
        data_dir: where the tasks read the data (``run.json``'s ``data_dir``).
        res: the trials' resources, which each task asks for.
        metric, mode: the search's, to keep each member's best epoch.
        log, progress: the members' log lines, and ``progress(epochs_done, epochs_total)`` over
            all of them, as they arrive.

    Returns:
        Each member, by trial id: its weights, or why retraining it failed.

    Raises:
        HpaTuneError: a task failed with one outside the member failures the refit skips.
    """
    import ray

    task = ray.remote(member_events).options(
        num_returns="streaming", num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0
    )
    threads = max(1, int(res.cpus))
    streams = {}
    for cand in todo:
        label = f"member {positions[cand.trial_id]} (trial {cand.trial_id})"
        stream = task.remote(data_dir, cand, label, threads, metric, mode)
        streams[stream] = cand
    total = sum(c.cfg.max_epochs for c in todo)
    epochs = {c.trial_id: 0 for c in todo}  # each member's epochs done so far

    def tick(cand: Candidate, epochs_done: int) -> None:
        epochs[cand.trial_id] = epochs_done
        if progress is not None:
            progress(sum(epochs.values()), total)

    trained: dict[str, TrainedMember] = {}
    pending = list(streams)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for stream in ready:
            cand = streams[stream]
            try:
                event = ray.get(next(stream))  # type: ignore[arg-type]
            except StopIteration:
                continue
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
                trained[cand.trial_id] = _lost(cand, exc)
                tick(cand, cand.cfg.max_epochs)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise_task_error(exc)
            pending.append(stream)
            if event[0] == "log":
                log(event[1])
            elif event[0] == "progress":
                tick(cand, event[1])
            elif event[0] == "member":
                member = event[1]
                trained[cand.trial_id] = member
                tick(cand, cand.cfg.max_epochs)  # a failed member's epochs count as done
                how = "failed" if member.failure else "ended"
                log(
                    f"refit: member {positions[cand.trial_id]} (trial {cand.trial_id}) {how} on "
                    f"node {member.node_id} after {member.ended - member.started:.0f} s"
                )
    return trained
