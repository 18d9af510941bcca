"""Faults a search survives: Ctrl-C (stop, resume later) and a trial that cannot recover.

- Ctrl-C once: Ray Tune's own SIGINT handler ends the search loop, snapshots the experiment and
  returns from ``Tuner.fit``, restoring the handler that was installed before. ``watch_ctrl_c``
  installs a marker handler first, so that afterwards "is the marker back?" tells an interrupted
  search from a finished one. A second Ctrl-C then raises KeyboardInterrupt as usual.
- Ray retries a failed trial up to ``max_failures`` times from its last checkpoint, whatever the
  failure. A process that died deserves that; a loss that became NaN does not (it would only
  become NaN again), so a retried trial first checks the error Ray recorded for it and fails at
  once with the same reason (``raise_if_deterministic_failure``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from hpa_tune.errors import HpaTuneError

RAY_ERROR_FILE = "error.txt"  # written by Ray into a trial's directory on each failure


class SearchInterrupted(HpaTuneError):
    """The search was stopped with Ctrl-C; its state is saved and ``hpa-tune resume`` continues it."""

    def __init__(self, exp_dir: Path) -> None:
        super().__init__(
            f"search interrupted; its state is saved. Continue it with: hpa-tune resume {exp_dir}"
        )
        self.exp_dir = exp_dir


def _marker(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def watch_ctrl_c() -> Iterator[Callable[[], bool]]:
    """Yields a function telling whether Ctrl-C interrupted the Tune loop run inside the block."""
    tune_handles_sigint = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    if threading.current_thread() is not threading.main_thread() or not tune_handles_sigint:
        yield lambda: False  # Tune installs no handler: Ctrl-C raises KeyboardInterrupt
        return
    previous = signal.signal(signal.SIGINT, _marker)
    try:
        yield lambda: signal.getsignal(signal.SIGINT) is _marker
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_deterministic_failure(trial_dir: str | Path) -> None:
    """Fail a retried trial at once if its previous attempt ended with a non-finite loss.

    Raises:
        NonFiniteLossError: with the reason of the previous attempt.
    """
    from hpa_tune.engine import NonFiniteLossError  # torch: only where trials train

    error_file = Path(trial_dir) / RAY_ERROR_FILE
    if not error_file.is_file():
        return
    for line in reversed(error_file.read_text(errors="replace").splitlines()):
        _, found, reason = line.partition(f"{NonFiniteLossError.__name__}: ")
        epoch = reason.strip().rpartition(" ")[2]
        if found and epoch.isdigit():
            raise NonFiniteLossError(int(epoch))
