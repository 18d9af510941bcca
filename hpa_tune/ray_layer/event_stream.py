"""The body of a Ray streaming-generator task that reports as it works: the work runs in a thread
and hands events to ``emit``; the task yields them as they come (so the driver sees log lines and
epochs while the work goes on), and re-raises the work's exception, which Ray hands to the driver
(``raise_task_error`` turns a project error back into its one line there).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from hpa_tune.errors import HpaTuneError

# ("log", line) | ("progress", ...) | a result ("refit", ...), ("member", ...) | ("done",)
Event = tuple[Any, ...]


def stream_events(work: Callable[[Callable[[Event], None]], None], name: str) -> Iterator[Event]:
    """Run ``work(emit)`` in a thread named ``name``; yield what it emits, then ``("done",)``."""
    events: queue.Queue[Event] = queue.Queue()

    def run() -> None:
        try:
            work(events.put)
            events.put(("done",))
        except BaseException as exc:  # re-raised in the generator, so Ray hands it to the driver
            events.put(("error", exc))

    threading.Thread(target=run, name=name, daemon=True).start()
    while True:
        event = events.get()
        if event[0] == "error":
            raise event[1]
        yield event
        if event[0] == "done":
            return


def raise_task_error(exc: Any) -> NoReturn:
    """Re-raise a Ray task's ``HpaTuneError`` as itself (one line for the user), else ``exc``."""
    if isinstance(exc.cause, HpaTuneError):
        raise exc.cause from None
    raise exc
