"""A SIGKILLed driver's local Ray runtime is ended by the next command — that runtime only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

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
