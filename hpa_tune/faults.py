"""Faults a search survives: Ctrl-C (stop, resume later) and a trial that cannot recover.

- Ctrl-C once: Ray Tune's own SIGINT handler ends the search loop, snapshots the experiment and
  returns from ``Tuner.fit``, restoring the handler that was installed before. ``watch_ctrl_c``
  installs a marker handler first, so that afterwards "is the marker back?" tells an interrupted
  search from a finished one. A second Ctrl-C then raises KeyboardInterrupt as usual.
- Ray retries a failed trial up to ``max_failures`` times from its last checkpoint, whatever the
  failure (Ray 2.60's ``FailureConfig`` has no per-error rule, and a result that flags the error
  would break its strict metric check). A process that died deserves that; a loss that became
  NaN, a bad configuration or a missing or corrupt shard (``NotRetryableError``) does not: it
  would only fail again. So a retried trial that finds its previous attempt's marker fails at
  once with the same reason, before it resolves its configuration or reads any data
  (``fail_fast_on_retry``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from hpa_tune.errors import HpaTuneError, NotRetryableError

NONFINITE_MARKER = "nonfinite_loss.txt"
NOT_RETRYABLE_MARKER = "not_retryable.txt"


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
    """Run a trial attempt; a retry of one that failed in a way a retry cannot change fails again
    at once.

    The first attempt leaves a marker in the trial's directory on the node when it raises
    ``NonFiniteLossError`` or ``NotRetryableError``; an attempt that finds the marker raises the
    same error before anything else. (A retry on another node does not see it and fails again
    the slow way, with the same reason.)

    Raises:
        NonFiniteLossError, NotRetryableError: now, if a previous attempt ended with it; or from
            the block.
    """
    from hpa_tune.engine import NonFiniteLossError  # torch: only where trials train

    nonfinite = Path(trial_dir) / NONFINITE_MARKER
    not_retryable = Path(trial_dir) / NOT_RETRYABLE_MARKER
    if nonfinite.is_file():
        raise NonFiniteLossError(int(nonfinite.read_text()))
    if not_retryable.is_file():
        raise NotRetryableError(not_retryable.read_text())
    try:
        yield
    except NonFiniteLossError as err:
        _leave_marker(nonfinite, str(err.epoch))
        raise
    except NotRetryableError as err:
        _leave_marker(not_retryable, str(err))
        raise


def _leave_marker(marker: Path, text: str) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(text)
