"""Joining the Ray cluster and reading what it has and can add (the Ray side of ``cluster_resources``).

Imported only where work is scheduled on Ray (``runner``, ``remote_refit``) and by trial processes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hpa_tune.errors import HpaTuneError
from hpa_tune.ray_layer.cluster_resources import NodeType, node_types_from_config
from hpa_tune.ray_layer.faults import reclaim_sigterm

log = logging.getLogger(__name__)

AUTH_MODE, AUTH_TOKEN, AUTH_TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")  # where `ray start --head` keeps the cluster's token
_cpu_fallback_logged = False


def token_source(environ: Mapping[str, str], home: Path) -> str | None:
    """Where Ray would read an authentication token from, in Ray's own order (``None``: nowhere)."""
    if environ.get(AUTH_TOKEN):
        return f"${AUTH_TOKEN}"
    if environ.get(AUTH_TOKEN_PATH):
        path = Path(environ[AUTH_TOKEN_PATH]).expanduser()
        return str(path) if path.is_file() else None
    path = home / ".ray" / "auth_token"
    return str(path) if path.is_file() else None


def join_auth_mode(environ: Mapping[str, str], token: str | None) -> str | None:
    """``RAY_AUTH_MODE`` to set before joining a cluster by address (``None``: leave it).

    Ray turns token authentication on by itself only for ``address="auto"``; a driver given an
    explicit ``RAY_ADDRESS`` would join without its token and be refused. Use the token when one
    is there and the user did not choose a mode.
    """
    if environ.get(AUTH_MODE) is not None or token is None:
        return None
    return "token"


def _missing_token_hint(address: str, token: str | None) -> str:
    if token is None:
        return (
            f"no Ray auth token found (${AUTH_TOKEN}, ${AUTH_TOKEN_PATH} or {DEFAULT_TOKEN_PATH}); "
            "Ray clusters use token authentication by default: copy the head's token here "
            "(`ray get-auth-token` on the head prints it), or set RAY_AUTH_MODE=disabled for a "
            "cluster started without authentication"
        )
    return f"is the cluster up at {address}, and is the token from {token} the head's?"


def init_ray() -> bool:
    """Join ``$RAY_ADDRESS`` (a cluster, with its auth token) or start a private local Ray.

    Without ``$RAY_ADDRESS`` a cluster started with ``ray start`` is never joined. Trial logs
    stay in Ray's log files.

    Returns:
        Whether this call started a local Ray (not joined a cluster, nor found Ray up).

    Raises:
        HpaTuneError: the cluster could not be joined; says what is missing.
    """
    import ray

    keep_raylet_logs_in_files()
    # Ray Tune's own per-trial TensorBoard logger warns "NaN or Inf found in input tensor." for
    # every epoch that is not its trial's best (``checkpoint_rank`` is -inf by design): log noise.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # "local": a private runtime, never the cluster `ray start` last announced on this machine
        # (ray_current_cluster), which is joined only on purpose, with RAY_ADDRESS. ERROR: Ray's
        # start-up notices (e.g. about its token authentication) are not ours to print.
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        reclaim_sigterm()
        return True
    token = token_source(os.environ, Path.home())
    mode = join_auth_mode(os.environ, token)
    if mode is not None:
        from ray._raylet import Config  # type: ignore[attr-defined]

        os.environ[AUTH_MODE] = mode
        Config.initialize("")  # Ray caches its config at import; re-read RAY_AUTH_MODE
    if _is_gcs_address(address):
        _check_join(address, token)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as exc:
        raise HpaTuneError(_join_error(address, exc, token)) from None
    finally:
        reclaim_sigterm()  # ray.init installs a SIGTERM handler that crashes the driver
    return False


# Ray's notice that a node's raylet died quotes that raylet.out's last 20 lines ([state-dump]
# tables, gRPC chatter) to every driver's console (ray/_private/process_watcher.py).
_RAYLET_LOG_TAIL = re.compile(r"\s*Last \d+ lines of the Raylet logs:.*", re.DOTALL)


def without_raylet_log_tail(message: str) -> str:
    """Ray's "Raylet is terminated" notice without the raylet.out lines it quotes."""
    short, cut = _RAYLET_LOG_TAIL.subn("", message)
    return f"{short} (see raylet.out in that node's Ray logs)" if cut else message


def keep_raylet_logs_in_files() -> None:
    """Have this driver print Ray's error notices without the raylet log tails they carry.

    ``log_to_driver=False`` keeps workers' output in files, but not the errors Ray publishes to
    drivers; the notice of a lost node would otherwise flood the console with [state-dump] lines.
    """
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "hpa_tune_filter", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            data = {**data, "lines": [without_raylet_log_tail(line) for line in data["lines"]]}
        original(data, ignore_prefix)

    print_to_stdstream.hpa_tune_filter = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream


def _is_gcs_address(address: str) -> bool:
    """``host:port`` of a GCS (not ``auto``/``local``, which Ray resolves, nor ``ray://``)."""
    return "://" not in address and ":" in address


def _join_error(address: str, exc: BaseException, token: str | None) -> str:
    # Ray's first sentence ("... InvalidAuthToken: Authentication token is missing or incorrect"),
    # not its paragraph of advice.
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return f"RAY_ADDRESS={address}: cannot join the Ray cluster ({first}); " + _missing_token_hint(
        address, token
    )


def _check_join(address: str, token: str | None) -> None:
    """One GCS request before ``ray.init``: a refused token fails in milliseconds here, where
    ``ray.init`` would retry for about a minute before saying no more than "failed to connect".
    """
    import ray
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError as exc:
        raise HpaTuneError(_join_error(address, exc, token)) from None
    except Exception as exc:  # unreachable: GcsClient gave up after its own timeout
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HpaTuneError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({first}); is the head up "
            "(`ray start --head`) and the address its GCS address (host:port)?"
        ) from None


def live_node_resources() -> list[dict[str, float]]:
    """Total resources of every node that is up."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _monitor_config_path(gcs_address: str) -> Path | None:
    """The ``--autoscaling-config`` of this cluster's autoscaler (monitor) process on this machine.

    The driver runs on the head (``ray exec``/``ray job submit``/a shell there), where Ray's monitor
    runs with the config the head was started with (``~/ray_bootstrap_config.yaml`` after ``ray up``).
    """
    import psutil  # Ray's own copy, importable once ray is

    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or []
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not any(a.endswith("monitor.py") for a in args[:3]):
            continue
        if f"--gcs-address={gcs_address}" not in args:
            continue
        for arg in args:
            if arg.startswith("--autoscaling-config="):
                return Path(arg.split("=", 1)[1]).expanduser()
    return None


def autoscaler_node_types() -> list[NodeType] | None:
    """The node types this cluster's autoscaler can launch; ``None`` without an autoscaler.

    Read from the cluster config in the GCS when one was reported there (KubeRay), else from the
    autoscaling config file of the head's monitor process.
    """
    import ray
    from ray._private.state import state

    reported = state.get_cluster_config()
    if reported is not None and reported.node_group_configs:
        return [
            NodeType(g.name, dict(g.resources), g.max_count if g.max_count >= 0 else 1 << 30)
            for g in reported.node_group_configs
            if g.max_count != 0
        ]
    path = _monitor_config_path(ray.get_runtime_context().gcs_address)
    if path is None or not path.is_file():
        return None
    return node_types_from_config(yaml.safe_load(path.read_text()) or {})


def current_node_id() -> str | None:
    """The Ray node id of this process (``None`` outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def trial_device(gpu_ids: list[Any], cuda_available: bool) -> tuple[str, str | None]:
    """``cuda`` or ``cpu`` for a process given ``gpu_ids`` by Ray, and a warning for a CPU fallback.

    A node may declare logical GPUs without CUDA behind them (``cluster/local.yaml``, or a
    misconfigured node): the trial still runs, on the CPU.
    """
    if cuda_available:
        return "cuda", None
    if gpu_ids:
        return "cpu", (
            f"Ray assigned GPU {','.join(map(str, gpu_ids))} but this node has no CUDA; "
            "training on the CPU"
        )
    return "cpu", None


def assigned_device(logger: Any = log) -> str:
    """The device for this Ray worker; logs a CPU fallback once per process."""
    global _cpu_fallback_logged
    import ray
    import torch

    device, warning = trial_device(list(ray.get_gpu_ids()), torch.cuda.is_available())
    if warning and not _cpu_fallback_logged:
        _cpu_fallback_logged = True
        logger.warning("node %s: %s", current_node_id(), warning)
    return device
