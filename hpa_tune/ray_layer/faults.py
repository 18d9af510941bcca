"""Faults a search survives: Ctrl-C (stop, resume later) and a trial that cannot recover.

- Ctrl-C once: Ray Tune's own SIGINT handler ends the search loop, snapshots the experiment and
  returns from ``Tuner.fit``, restoring the handler that was installed before. ``watch_ctrl_c``
  installs a marker handler first, so that afterwards "is the marker back?" tells an interrupted
  search from a finished one. A second Ctrl-C then raises KeyboardInterrupt as usual.
- Ray retries a failed trial up to ``max_failures`` times from its last checkpoint, whatever the
  failure. A process that died deserves that; a loss that became NaN does not (it would only
  become NaN again), so a retried trial that finds its previous attempt's marker fails at once
  with the same reason (``fail_fast_on_retry``).
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

NONFINITE_MARKER = "nonfinite_loss.txt"


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


@contextmanager
def fail_fast_on_retry(trial_dir: str | Path) -> Iterator[None]:
    """Run a trial attempt; a retry of one whose loss became non-finite fails again at once.

    The first attempt leaves a marker in the trial's directory on the node when it raises
    ``NonFiniteLossError``; an attempt that finds the marker raises the same error before
    training. (A retry on another node does not see it and diverges again, which is slower but
    ends the same way.)

    Raises:
        NonFiniteLossError: now, if a previous attempt ended with it; or from the block.
    """
    from hpa_tune.train.engine import NonFiniteLossError  # torch: only where trials train

    marker = Path(trial_dir) / NONFINITE_MARKER
    if marker.is_file():
        raise NonFiniteLossError(int(marker.read_text()))
    try:
        yield
    except NonFiniteLossError as err:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(err.epoch))
        raise
