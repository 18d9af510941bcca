"""Faults a search survives: Ctrl-C or SIGTERM (stop, resume later) and a trial that cannot recover.

- Ctrl-C once: Ray Tune's own SIGINT handler ends the search loop, snapshots the experiment and
  returns from ``Tuner.fit``, restoring the handler that was installed before. ``watch_ctrl_c``
  installs a marker handler first, so that afterwards "is the marker back?" tells an interrupted
  search from a finished one; a second Ctrl-C finds the marker and ends the process at once.
- SIGTERM (``timeout``, systemd, Slurm, Kubernetes) is the first Ctrl-C: during the search it is
  handed to whatever handles SIGINT (Tune), elsewhere both raise KeyboardInterrupt, which the CLI
  prints as one line. After that first stop any further signal ends the process at once, quietly
  (no "Exception ignored in atexit callback" while Ray shuts down). Ray's own SIGTERM handler
  (``sys.exit`` from wherever the driver is, which crashes its C++ threads) is replaced.
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
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from hpa_tune.errors import HpaTuneError, NotRetryableError
from hpa_tune.experiment_files import NONFINITE_MARKER, NOT_RETRYABLE_MARKER


class SearchInterrupted(HpaTuneError):
    """The search was stopped (Ctrl-C, SIGTERM); its state is saved and ``hpa-tune resume``
    continues it."""

    def __init__(self, exp_dir: Path, signum: int = signal.SIGINT) -> None:
        super().__init__(
            f"search interrupted; its state is saved. Continue it with: hpa-tune resume {exp_dir}"
        )
        self.exp_dir = exp_dir
        self.exit_code = 128 + signum  # 130 for Ctrl-C, 143 for SIGTERM


_stop_signal = 0  # the first SIGINT/SIGTERM this process received (0: none yet)


def _abort(signum: int, frame: FrameType | None) -> None:
    """A signal after the first: end now, quietly (a local Ray left behind is ended by the next
    ``hpa-tune`` command, as after SIGKILL)."""
    os.write(sys.stderr.fileno(), b"aborted\n")
    os._exit(128 + (_stop_signal or signum))


def _stop_once(signum: int) -> None:
    global _stop_signal
    _stop_signal = _stop_signal or signum
    signal.signal(signal.SIGINT, _abort)
    signal.signal(signal.SIGTERM, _abort)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C or SIGTERM outside the search: KeyboardInterrupt."""
    _stop_once(signum)
    raise KeyboardInterrupt


def stop_signal() -> int:
    """The first SIGINT/SIGTERM received (0: none), e.g. to choose the exit status."""
    return _stop_signal


def install_stop_handlers() -> None:
    """SIGINT and SIGTERM stop the command (KeyboardInterrupt) once, then abort it; for CLI use."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


def reclaim_sigterm() -> None:
    """Undo ``ray.init``'s SIGTERM handler where ours were installed (SIGTERM mirrors SIGINT)."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGINT)
    if handler in (_interrupt, _abort):
        signal.signal(signal.SIGTERM, handler)


def _marker(signum: int, frame: FrameType | None) -> None:
    # Tune handled the first stop and put this handler back: this is the second.
    _abort(signum, frame)


def _term_as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """SIGTERM during the search: what SIGINT does there (Tune stops and saves)."""
    global _stop_signal
    handler = signal.getsignal(signal.SIGINT)
    if handler is _marker:  # Tune already stopping (or not yet listening): abort
        _abort(signum, frame)
    _stop_signal = _stop_signal or signum
    if callable(handler):
        handler(signal.SIGINT, frame)


@contextmanager
def watch_ctrl_c() -> Iterator[Callable[[], int]]:
    """Yields a function telling whether Ctrl-C or SIGTERM interrupted the Tune loop run inside
    the block: the signal's number (SIGINT for Ctrl-C, SIGTERM), 0 if not."""
    tune_handles_sigint = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    if threading.current_thread() is not threading.main_thread() or not tune_handles_sigint:
        yield lambda: 0  # Tune installs no handler: Ctrl-C raises KeyboardInterrupt
        return
    previous = signal.signal(signal.SIGINT, _marker)
    previous_term = signal.signal(signal.SIGTERM, _term_as_ctrl_c)
    try:
        # Tune keeps its handler until a stop, and then puts the marker back.
        yield (
            lambda: (
                (_stop_signal or signal.SIGINT) if signal.getsignal(signal.SIGINT) is _marker else 0
            )
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


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
    from hpa_tune.train.engine import NonFiniteLossError  # torch: only where trials train

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
