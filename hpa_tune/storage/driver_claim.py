"""One driver per experiment: the claim that ``run``, ``resume`` and ``refit`` take before writing.

Each driver that starts writes a claim of its own, ``EXP/.driver/<key>.json`` (its host, boot id,
pid, the pid's start time, the command, when it started, a heartbeat), then lists
``EXP/.driver/`` and decides (``decide``):

- its claim is the only live one: it holds the experiment (and removes stale claims);
- an earlier live claim exists (keys sort by start time, then a random part): it loses, deletes
  its own claim and stops with one line naming the holder;
- only later live claims exist: another driver is starting at the same moment; it lists again
  shortly (a later contender that saw this claim removes its own), and loses if one is still
  there after a few tries (that driver listed before this claim was written, and holds).

A driver holds only after a listing in which its claim was the only live one. On a store where a
finished write is seen by every later listing (a local filesystem; S3 and GCS since they became
strongly consistent) two drivers cannot both hold: each wrote its claim before listing, so of
two listings the later one sees the claim of the driver that made the earlier one. The same
algorithm runs locally and on buckets, through ``storage``: no conditional put is needed. Claims
are written whole (``storage.replace_bytes``); one that cannot be read anyway counts as a live
claim from an unknown machine until its age (from its key) makes it stale.

A claim is stale (``is_stale``) when its driver is gone: on this machine (same host name and
boot id) when no process has its pid with its start time (a recycled pid is not it); from
another machine, when its heartbeat, rewritten every ``HEARTBEAT_S`` seconds by the holder, is
older than ``stale_after_s()`` (``$HPA_TUNE_DRIVER_STALE_S``, default 300). A stale claim is
ignored and then deleted by the next driver that holds. Residual windows: clocks of two machines
that differ by more than that age make a live remote claim look stale (or a dead one live for
longer); a holder paused longer than it (a suspended laptop) can lose its claim to another
driver; and a driver killed with SIGKILL leaves its claim until the next driver finds it stale.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import CLAIM_DIR
from hpa_tune.storage import filesystems as storage

HEARTBEAT_S = 30.0
DEFAULT_STALE_AFTER_S = 300.0
SETTLE_S, SETTLE_TRIES = 0.5, 20  # how long a contender with the earliest key waits for later ones
_UNKNOWN = "?"


@dataclass(frozen=True)
class DriverClaim:
    """One driver's claim on an experiment."""

    key: str  # "<start ns>-<random hex>": the claim's file name and its place in the order
    command: str  # run / resume / refit
    host: str
    boot_id: str  # a host name shared by two machines (or one rebooted) is not the same machine
    pid: int
    pid_start: int | None  # the process's start (clock ticks after boot); None where unknown
    started: float  # epoch seconds
    heartbeat: float  # epoch seconds of the holder's last refresh

    def describe(self) -> str:
        """``hpa-tune run on host H, pid P, since 2026-12-07 00:12:20 UTC``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        if self.host == _UNKNOWN:
            return f"a driver starting since {since}, whose claim {self.key} is not complete yet"
        return f"hpa-tune {self.command} on host {self.host}, pid {self.pid}, since {since}"


@dataclass(frozen=True)
class Decision:
    """What a contender does after listing the claims: ``hold``, ``wait`` or ``lose`` (to ``holder``)."""

    action: str
    holder: DriverClaim | None = None


class ExperimentBusy(HpaTuneError):
    """Another live driver holds the experiment."""

    def __init__(self, location: str, holder: DriverClaim) -> None:
        super().__init__(
            f"{location}: another driver holds this experiment ({holder.describe()}); "
            "an experiment has one driver at a time: wait for it to end, or stop it first"
        )
        self.holder = holder


def stale_after_s() -> float:
    """Seconds without a heartbeat after which another machine's claim is stale.

    Raises:
        HpaTuneError: ``$HPA_TUNE_DRIVER_STALE_S`` is not a positive number.
    """
    raw = os.environ.get("HPA_TUNE_DRIVER_STALE_S", "")
    if not raw:
        return DEFAULT_STALE_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise HpaTuneError(f"HPA_TUNE_DRIVER_STALE_S={raw}: expected a positive number of seconds")
    return value


def is_stale(
    claim: DriverClaim,
    *,
    host: str,
    boot_id: str,
    now: float,
    stale_after: float,
    process_start: Callable[[int], int | None],
) -> bool:
    """Whether ``claim``'s driver is gone, judged from the machine ``host``/``boot_id``.

    Args:
        process_start: the start time of a pid on this machine, None when no such process runs.
    """
    if claim.host == host and claim.boot_id == boot_id and boot_id != _UNKNOWN:
        start = process_start(claim.pid)
        return start is None or (claim.pid_start is not None and start != claim.pid_start)
    return now - claim.heartbeat > stale_after


def decide(mine: str, live: list[DriverClaim]) -> Decision:
    """The contender with claim key ``mine`` holds when its claim is the only live one, loses to
    an earlier live claim, and waits while only later ones are there (drivers starting with it)."""
    others = sorted((c for c in live if c.key != mine), key=lambda c: c.key)
    if not others:
        return Decision("hold")
    if others[0].key < mine:
        return Decision("lose", others[0])
    return Decision("wait", others[0])


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, from ``/proc``); None when no such
    process runs (or is a zombie). Without ``/proc``, 0 for any existing pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _pid_exists(pid)
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return None if fields[0] == "Z" else int(fields[19])


def _pid_exists(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return _UNKNOWN


def new_claim(command: str) -> DriverClaim:
    """This process's claim, started now."""
    now_ns = time.time_ns()
    pid = os.getpid()
    return DriverClaim(
        key=f"{now_ns:020d}-{uuid.uuid4().hex[:12]}",
        command=command,
        host=socket.gethostname(),
        boot_id=boot_id(),
        pid=pid,
        pid_start=process_start(pid),
        started=now_ns / 1e9,
        heartbeat=now_ns / 1e9,
    )


def _claim_path(location: str, key: str) -> str:
    return storage.join(location, CLAIM_DIR, f"{key}.json")


def _write(location: str, claim: DriverClaim) -> None:
    data = json.dumps(asdict(claim)).encode()
    for attempt in range(3):
        try:
            # Whole or not at all: a heartbeat rewritten in place could be read half-written.
            storage.replace_bytes(_claim_path(location, claim.key), data)
            return
        except FileNotFoundError:  # a releasing driver removed the emptied directory meanwhile
            if attempt == 2:
                raise


def _parse(key: str, data: bytes) -> DriverClaim:
    """A claim file; one that cannot be read (being written, or cut short) is a claim from an
    unknown machine whose heartbeat is the start time in its key."""
    try:
        return DriverClaim(**json.loads(data))
    except (ValueError, TypeError):
        started = int(key.partition("-")[0] or 0) / 1e9 if key[:1].isdigit() else 0.0
        return DriverClaim(key, "?", _UNKNOWN, _UNKNOWN, 0, None, started, started)


def read_claims(location: str) -> list[DriverClaim]:
    """Every claim under ``location/.driver`` (a claim deleted while listing is left out)."""
    claims = []
    claim_dir = storage.join(location, CLAIM_DIR)
    for name in storage.list_files(claim_dir):
        if "/" in name or not name.endswith(".json"):
            continue
        data = _read_claim(storage.join(claim_dir, name))
        if data is not None:
            claims.append(_parse(name.removesuffix(".json"), data))
    return claims


def _read_claim(path: str) -> bytes | None:
    """A listed claim's bytes; ``None`` when its driver deleted it after the listing (a bucket may
    then answer the read with an error rather than "not found"). One that exists but cannot be
    read gives ``b""``: a claim of unknown origin, live until its key's start time is old."""
    for _ in range(2):
        try:
            return storage.read_bytes(path)
        except FileNotFoundError:
            return None
        except HpaTuneError:
            if not storage.is_file(path):
                return None
    return b""


def _split_live(claims: list[DriverClaim]) -> tuple[list[DriverClaim], list[DriverClaim]]:
    host, boot, now, after = socket.gethostname(), boot_id(), time.time(), stale_after_s()
    live: list[DriverClaim] = []
    stale: list[DriverClaim] = []
    for claim in claims:
        gone = is_stale(
            claim,
            host=host,
            boot_id=boot,
            now=now,
            stale_after=after,
            process_start=process_start,
        )
        (stale if gone else live).append(claim)
    return live, stale


class HeldClaim:
    """A claim this process holds; refreshed in the background until ``release``."""

    def __init__(self, location: str, claim: DriverClaim) -> None:
        self.location, self.claim = location, claim
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._refresh, name="driver-claim", daemon=True)
        self._beat.start()

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.claim = replace(self.claim, heartbeat=time.time())
            try:
                _write(self.location, self.claim)
            except Exception as err:  # a store that is down now may be back at the next beat
                logging.getLogger(__name__).warning("driver claim heartbeat failed: %s", err)

    def release(self) -> None:
        """Stop refreshing and delete this driver's claim (only its own)."""
        self._stop.set()
        self._beat.join(timeout=10)
        _delete_own(self.location, self.claim.key)


def _delete_own(location: str, key: str) -> None:
    claim_dir = storage.join(location, CLAIM_DIR)
    storage.delete(claim_dir, [f"{key}.json"])
    storage.remove_empty_dir(claim_dir)  # others' claims still there: the directory stays


def acquire(
    location: str | Path, command: str, *, sleep: Callable[[float], None] = time.sleep
) -> HeldClaim:
    """Take the experiment at ``location`` for this driver.

    Raises:
        ExperimentBusy: another live driver holds it (or is taking it at the same moment).
    """
    where = claim_location(location)
    claim = new_claim(command)
    _write(where, claim)
    try:
        for attempt in range(SETTLE_TRIES):
            live, stale = _split_live(read_claims(where))
            decision = decide(claim.key, live)
            if decision.action == "hold":
                # Taken over: a dead driver's claim goes (each is judged stale again by whoever
                # holds next, so deleting one twice is harmless).
                storage.delete(storage.join(where, CLAIM_DIR), [f"{c.key}.json" for c in stale])
                return HeldClaim(where, claim)
            assert decision.holder is not None
            if decision.action == "lose" or attempt == SETTLE_TRIES - 1:
                raise ExperimentBusy(where, decision.holder)
            sleep(SETTLE_S)
        raise AssertionError("unreachable: the last attempt holds or raises")
    except BaseException:
        _delete_own(where, claim.key)
        raise


@contextmanager
def driver_claim(location: str | Path, command: str) -> Iterator[DriverClaim]:
    """Hold the experiment at ``location`` for the block; released however the block ends
    (normally, with an error, Ctrl-C).

    Raises:
        ExperimentBusy: another live driver holds it.
    """
    held = acquire(location, command)
    try:
        yield held.claim
    finally:
        held.release()


def claim_location(location: str | Path) -> str:
    """``location`` as a bucket URI, or an absolute local path."""
    text = storage.location_arg(location)
    return text if storage.is_remote(text) else str(Path(text).expanduser().resolve())
