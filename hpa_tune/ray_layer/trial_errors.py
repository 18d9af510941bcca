"""Why a trial failed, in one line: the real cause of a (Ray-wrapped, chained) exception.

Ray hands the driver a wrapper (``RayTaskError``, ``TuneError``) whose text is a remote
traceback; the line worth showing is the message of our own user-facing error
(``HpaTuneError``, e.g. "cannot read pretrained weights from X") where one is in the chain,
else of the chain's root cause.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from hpa_tune.errors import HpaTuneError


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, what it wraps (Ray's ``cause``) and what caused it, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        wrapped = getattr(current, "cause", None)
        if isinstance(wrapped, BaseException):
            current = wrapped
        else:
            current = current.__cause__ or current.__context__
    return seen


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _from_text(text: str) -> str:
    """The last ``Type: message`` line of a rendered traceback (for errors known only as text)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ours = [ln for ln in lines if "HpaTuneError" in ln.split(":", 1)[0] or "Error: " in ln]
    return (ours or lines or [""])[-1]


def error_summary(error: BaseException | str | None) -> str | None:
    """One line naming the real cause of a trial's failure (None when it did not fail)."""
    if error is None:
        return None
    if isinstance(error, str):
        return _from_text(error) or "unknown error"
    chain = _chain(error)
    # Ray's wrappers (``RayTaskError(HpaTuneError)`` subclasses the error it carries as
    # ``cause``) render a remote traceback as their message: skip them.
    unwrapped = [e for e in chain if not isinstance(getattr(e, "cause", None), BaseException)]
    chain = unwrapped or chain
    ours = [e for e in chain if isinstance(e, HpaTuneError)]
    root = ours[0] if ours else chain[-1]
    message = _first_line(str(root))
    if not ours and root is chain[0] and "Traceback" in str(root):
        message = _from_text(str(root))
    return f"{type(root).__name__}: {message}" if message else type(root).__name__


# Where Ray Tune logs a failed trial's whole traceback (and the list of unfinished trials) on
# the driver's console; ``error_summary`` lines and each trial's ``error.txt`` say it instead.
_TRACEBACK_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")


@contextmanager
def trial_tracebacks_silenced() -> Iterator[None]:
    """Keep Ray Tune from printing failed trials' tracebacks while the block runs."""
    loggers = [logging.getLogger(name) for name in _TRACEBACK_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
