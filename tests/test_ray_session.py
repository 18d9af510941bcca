"""A SIGKILLed driver's local Ray runtime is ended by the next command — that runtime only."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hpa_tune.ray_layer.session import (
    SessionRecord,
    driver_alive,
    names_session,
    session_processes,
)

# A driver starting its local Ray exactly as `hpa-tune run` does, then waiting: it prints its
# session name and exits (normally, stopping Ray) when its stdin closes.
DRIVER = """
import sys
from hpa_tune.ray_layer.runner import _init_ray
import ray

_init_ray()
print(ray.get_runtime_context().get_session_name(), flush=True)
sys.stdin.read()
"""


def test_a_session_name_matches_only_as_a_whole_component():
    name = "session_2026-11-30_14-15-35_191968_1832"
    assert names_session([f"--log_dir=/tmp/ray/{name}/logs"], name)
    assert names_session(["--session-name", name], name)
    assert not names_session([f"--log_dir=/tmp/ray/{name}6/logs"], name)
    assert not names_session([f"/tmp/ray/x{name}"], name)


def test_a_reused_pid_is_not_the_recorded_driver():
    me = SessionRecord(os.getpid(), 0, "session_x")
    assert not driver_alive(me)  # same pid, another start time: not the driver that recorded it


def _start_driver(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_next_command_ends_a_killed_drivers_ray_and_leaves_another_runtime_alone(tmp_path):
    env = {**os.environ, "HPA_TUNE_CACHE": str(tmp_path / "cache")}
    bystander, bystander_session = _start_driver(env)
    doomed, doomed_session = _start_driver(env)
    try:
        assert bystander_session.startswith("session_") and doomed_session.startswith("session_")
        before = set(session_processes(bystander_session))
        assert before
        records = list((tmp_path / "cache" / "ray-sessions").glob("*.json"))
        assert len(records) == 2

        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        left = session_processes(doomed_session)
        assert left  # what the dead driver could not stop (at least its agents)

        next_command = subprocess.run(
            [sys.executable, "-m", "hpa_tune.cli", "models"], env=env, capture_output=True
        )

        assert next_command.returncode == 0, next_command.stderr
        assert session_processes(doomed_session) == []
        assert not any(_alive(pid) for pid in left)
        assert before <= {p for p in session_processes(bystander_session) if _alive(p)}
        assert len(list((tmp_path / "cache" / "ray-sessions").glob("*.json"))) == 1
    finally:
        for proc in (doomed, bystander):
            if proc.poll() is None:
                proc.communicate(input="", timeout=60)  # a normal exit stops its Ray
        for session in (doomed_session, bystander_session):
            for pid in session_processes(session):  # only this test's own runtimes
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_start_cluster():
    """A cluster started with ``ray start --head`` as a user would, in its own temp dir (short:
    Ray's socket paths are length-limited) and on free ports, so that it is this test's alone.
    Yields (environment announcing it, its session name); only its processes are ended after
    (never ``ray stop``, which stops every Ray runtime of this user on the machine)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)  # where `ray start` writes ray_current_cluster
    ports = ["--port", "--ray-client-server-port", "--dashboard-agent-listen-port"]
    ports += ["--metrics-export-port", "--runtime-env-agent-port"]
    args = [f"{flag}={_free_port()}" for flag in ports]
    ray = Path(sys.executable).with_name("ray")
    subprocess.run(
        [str(ray), "start", "--head", "--num-cpus=1", "--include-dashboard=false", *args],
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    session = (ray_tmp / "ray" / "session_latest").resolve().name
    try:
        yield env, session
    finally:
        for pid in session_processes(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_ray_start_cluster_is_never_joined_implicitly_nor_ended(tmp_path, ray_start_cluster):
    env, cluster_session = ray_start_cluster
    env = {**env, "HPA_TUNE_CACHE": str(tmp_path / "cache")}
    cluster = set(session_processes(cluster_session))
    assert cluster
    driver, driver_session = _start_driver(env)
    try:
        assert driver_session.startswith("session_")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()

        next_command = subprocess.run(
            [sys.executable, "-m", "hpa_tune.cli", "models"], env=env, capture_output=True
        )

        assert next_command.returncode == 0, next_command.stderr
        assert all(_alive(pid) for pid in cluster)
        assert driver_session != cluster_session  # it ran a private runtime, not the cluster
        assert session_processes(driver_session) == []  # its own runtime was ended
    finally:
        if driver.poll() is None:
            driver.communicate(input="", timeout=60)
        for pid in session_processes(driver_session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_stale_ray_current_cluster_is_ignored(tmp_path):
    """The head `ray start` announced is gone: the next driver starts its own Ray at once."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(ray_tmp), HPA_TUNE_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    session = ""
    try:
        out, err = proc.communicate(input="", timeout=180)
        session = out.strip()
        assert proc.returncode == 0, err
        assert session.startswith("session_") and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in session_processes(session) if session else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
