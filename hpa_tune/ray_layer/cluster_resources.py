"""What one trial asks of the Ray cluster, decided against what the cluster *can* provide (pure).

A trial runs on one node, so its request is checked node by node, never against the cluster's
sum. Without an autoscaler the nodes are those up now (``ray.nodes()``). With one, a trial may
also go to a node the autoscaler can still launch: its request is checked against the node types
of the autoscaling config, and waits for the autoscaler instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpa_tune.errors import HpaTuneError


@dataclass(frozen=True)
class NodeType:
    """A node shape a trial can run on: a live node (``max_workers`` 0) or a launchable type."""

    name: str
    resources: Mapping[str, float]
    max_workers: int = 0

    def describe(self) -> str:
        shown = ", ".join(f"{self.resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))
        return f"{self.name} ({shown}" + (
            f", up to {self.max_workers})" if self.max_workers else ")"
        )


@dataclass(frozen=True)
class TrialResources:
    """CPUs and GPUs per trial; ``notes`` are warnings for the user (e.g. a capped request)."""

    cpus: float
    gpus: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def node_types_from_config(config: Mapping[str, Any]) -> list[NodeType]:
    """The worker types of an autoscaling config (``available_node_types``) the autoscaler may launch.

    The head type is left out: the head is already up and is counted among the live nodes.
    """
    head = config.get("head_node_type")
    types = config.get("available_node_types") or {}
    return [
        NodeType(name, dict(spec.get("resources") or {}), int(spec.get("max_workers", 0)))
        for name, spec in types.items()
        if name != head and int(spec.get("max_workers", 0)) > 0
    ]


def fits(cpus: float, gpus: float, resources: Mapping[str, float]) -> bool:
    """Whether one trial's request fits on one node with these total resources."""
    return resources.get("CPU", 0.0) >= cpus and resources.get("GPU", 0.0) >= gpus


def resolve_gpus(requested: float | str, node_gpus: float) -> float:
    """GPUs per trial without an autoscaler, given the most GPUs one node that is up has.

    ``auto`` is 1 when a node has a GPU and 0 otherwise.

    Raises:
        HpaTuneError: more GPUs were requested than any one node has (trials would wait forever).
    """
    if requested == "auto":
        return 1.0 if node_gpus >= 1 else 0.0
    gpus = float(requested)
    if gpus > 0 and node_gpus < gpus:
        raise HpaTuneError(
            f"gpus_per_trial is {gpus:g} but the largest node of the Ray cluster has "
            f"{node_gpus:g} GPU(s), a trial runs on one node, and there is no autoscaler to add "
            "a larger one; use --gpus-per-trial 0 (or auto) to run on CPUs, or at most "
            f"{node_gpus:g}"
        )
    return gpus


def resolve_cpus(requested: float, node_cpus: float) -> float:
    """CPUs per trial, capped at one node's CPUs (a trial asking for more would wait forever)."""
    return min(requested, node_cpus) if node_cpus > 0 else requested


def _capped_note(requested: float, cpus: float, where: str) -> tuple[str, ...]:
    if cpus >= requested:
        return ()
    return (f"cpus_per_trial {requested:g} > the {cpus:g} CPUs of {where}: using {cpus:g}",)


def resolve_trial_resources(
    cpus: float,
    gpus: float | str,
    live_nodes: Sequence[Mapping[str, float]],
    node_types: Sequence[NodeType] | None,
) -> TrialResources:
    """CPUs and GPUs per trial on a cluster.

    Args:
        cpus: ``cpus_per_trial`` as asked.
        gpus: ``gpus_per_trial`` as asked: a number or ``"auto"``.
        live_nodes: total resources of each node that is up now.
        node_types: the types an autoscaler can launch; ``None`` when there is no autoscaler.

    Returns:
        A trial runs on one node. Without an autoscaler: GPUs checked against the node up now
        with the most GPUs, CPUs capped at the largest node up that has the GPUs asked for. With
        one: the same over the live nodes and the launchable types (``auto`` is 1 when any of
        them has a GPU).

    Raises:
        HpaTuneError: no node, up or launchable, can ever hold one trial.
    """
    if node_types is None:
        got_gpus = resolve_gpus(gpus, max((n.get("GPU", 0.0) for n in live_nodes), default=0.0))
        gpu_nodes = [n for n in live_nodes if n.get("GPU", 0.0) >= got_gpus]
        got_cpus = resolve_cpus(cpus, max((n.get("CPU", 0.0) for n in gpu_nodes), default=0.0))
        return TrialResources(got_cpus, got_gpus, _capped_note(cpus, got_cpus, "the largest node"))
    shapes = [NodeType(f"live node {i}", n) for i, n in enumerate(live_nodes)] + list(node_types)
    if gpus == "auto":
        gpus = 1.0 if any(s.resources.get("GPU", 0.0) >= 1 for s in shapes) else 0.0
    gpus = float(gpus)
    with_gpus = [s for s in shapes if s.resources.get("GPU", 0.0) >= gpus]
    if not with_gpus:
        raise HpaTuneError(_never_fits(cpus, gpus, shapes))
    largest = max(s.resources.get("CPU", 0.0) for s in with_gpus)
    got_cpus = min(cpus, largest) if largest > 0 else cpus
    if not any(fits(got_cpus, gpus, s.resources) for s in with_gpus):
        raise HpaTuneError(_never_fits(cpus, gpus, shapes))
    return TrialResources(got_cpus, gpus, _capped_note(cpus, got_cpus, "the largest node type"))


def _never_fits(cpus: float, gpus: float, shapes: Sequence[NodeType]) -> str:
    offered = "; ".join(s.describe() for s in shapes) or "none"
    return (
        f"a trial asks for {cpus:g} CPU and {gpus:g} GPU, but no node of the cluster, up or "
        f"launchable by its autoscaler, has that many: {offered}; lower --gpus-per-trial / "
        "--cpus-per-trial or add a node type to the cluster config"
    )
