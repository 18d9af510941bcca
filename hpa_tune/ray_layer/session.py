"""Ending what a dead driver's local Ray runtime left behind — that runtime only.

A driver that starts a local Ray owns its processes (GCS, raylet, dashboard and runtime-env
agents, workers). Killed with SIGKILL, it cannot stop them: they are reparented to init and
some ignore SIGTERM. So each driver that starts a local Ray records, in a small JSON file under
``$HPA_TUNE_CACHE/ray-sessions`` (default ``~/.cache/hpa-tune/ray-sessions``), its pid, its
start time and the Ray session name (``session_<date>_<time>_<us>_<pid>``, unique per runtime).
The next ``hpa-tune`` command reads those records; for each whose driver is gone, it kills the
processes whose command line names that session (GCS, raylet, dashboard, monitors name its
directory), the ``ray::*`` processes with a file open in it (the agents, reparented to init),
and their descendants, then forgets the record. A runtime
whose driver is alive, or one never recorded here (``ray start``, another program), is never
touched. Linux only (``/proc``); elsewhere nothing is recorded or ended.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PROC = Path("/proc")
_KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class SessionRecord:
    """A local Ray runtime and the driver that started it."""

    driver_pid: int
    driver_start: int  # clock ticks after boot (/proc/PID/stat): a reused pid does not match
    session_name: str
    gcs_address: str = ""


def state_dir() -> Path:
    """Where session records live: ``$HPA_TUNE_CACHE/ray-sessions`` (or ``~/.cache/hpa-tune``)."""
    root = os.environ.get("HPA_TUNE_CACHE") or Path.home() / ".cache" / "hpa-tune"
    return Path(root) / "ray-sessions"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None if there is none."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _open_files(pid: int) -> list[str]:
    """Targets of a process's open file descriptors (log files in its session directory)."""
    fd_dir = _PROC / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return []
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(fd_dir / name))
        except OSError:
            continue
    return targets


def _pids() -> list[int]:
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]


def driver_alive(record: SessionRecord) -> bool:
    """The recorded driver still runs (same pid and start time, not a zombie)."""
    stat = _stat(record.driver_pid)
    return stat is not None and stat[0] != "Z" and stat[2] == record.driver_start


def names_session(args: list[str], session_name: str) -> bool:
    """Whether a command line names ``session_name`` as a whole path component or value."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(session_name)}(?![\w-])")
    return any(pattern.search(arg) for arg in args)


def session_processes(session_name: str) -> list[int]:
    """Pids of the processes of one Ray session: those naming it, and their descendants."""
    me = os.getpid()
    parents: dict[int, int] = {}
    roots = []
    for pid in _pids():
        stat = _stat(pid)
        if stat is None or pid == me:
            continue
        parents[pid] = stat[1]
        args = _cmdline(pid)
        # Ray's agents rename themselves (``ray::DashboardAgent``): their open log files in the
        # session directory say which runtime they belong to.
        renamed = bool(args) and args[0].startswith("ray::")
        if names_session(args, session_name) or (
            renamed and names_session(_open_files(pid), session_name)
        ):
            roots.append(pid)
    found, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(children)
        frontier.extend(children)
    return sorted(found)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # SIGTERM is ignored by some of Ray's agents
    deadline = time.monotonic() + _KILL_WAIT_S
    while time.monotonic() < deadline:
        left = [p for p in pids if (s := _stat(p)) is not None and s[0] != "Z"]
        if not left:
            return
        time.sleep(0.05)


def _read(path: Path) -> SessionRecord | None:
    try:
        return SessionRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def end_dead_sessions() -> list[int]:
    """Kill what the local Ray runtimes of dead drivers left running; returns the pids killed."""
    directory = state_dir()
    if not _PROC.is_dir() or not directory.is_dir():
        return []
    killed: list[int] = []
    for path in sorted(directory.glob("*.json")):
        record = _read(path)
        if record is not None and driver_alive(record):
            continue
        if record is not None:
            pids = session_processes(record.session_name)
            _kill(pids)
            killed += pids
        path.unlink(missing_ok=True)
    return killed


def record_local_session(context: Any) -> Path | None:
    """Record the local Ray runtime this driver just started; the record goes when it exits.

    Also ends what dead drivers' runtimes left behind. Call right after ``ray.init`` started a
    local runtime (not when joining a cluster: its processes are not ours).

    Args:
        context: ``ray.get_runtime_context()`` of that runtime (this module does not import Ray).
    """
    end_dead_sessions()
    stat = _stat(os.getpid())
    if stat is None:
        return None
    record = SessionRecord(os.getpid(), stat[2], context.get_session_name(), context.gcs_address)
    path = state_dir() / f"{record.driver_pid}-{record.driver_start}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    os.replace(tmp, path)
    atexit.register(path.unlink, missing_ok=True)
    return path
