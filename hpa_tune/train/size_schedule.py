"""Image resolution as a fidelity: which image size each epoch of a trial trains at.

A space's ``fidelity: {image_size: [S1, ..., Sn]}`` is laid on ASHA's rungs (progressive
resizing): a trial trains at ``S1`` up to the first rung (``grace_period``), at ``S2`` up to the
second (``grace_period * reduction_factor``), and so on, and at the full size ``Sn`` from the
rung after the last smaller size to ``max_epochs``. ASHA therefore judges trials on cheap
low-resolution epochs, and a trial it lets go on continues with the same weights and optimiser
state at the next size.

A schedule is ``((last_epoch, size), ...)``: ``size`` trains the epochs after the previous
entry's ``last_epoch`` up to its own. Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SizeSchedule = tuple[tuple[int, int], ...]


# Reported with each epoch of a resolution fidelity: whether it trained at the trial's full size
# (the trial table and Ray's kept checkpoint rank trials by those epochs only).
FULL_SIZE = "full_size"


def asha_rung_epochs(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which single-bracket ASHA judges a trial, before ``max_epochs``.

    Ray's rungs are the milestones ``grace * rf**k``; a trial is recorded at a rung at its first
    epoch at or after the milestone, hence the ceiling for a fractional ``reduction_factor``.
    """
    grace = min(grace_period, max_epochs)
    epochs: list[int] = []
    milestone = float(grace)
    while reduction_factor > 1 and math.ceil(milestone - 1e-9) < max_epochs:
        epochs.append(math.ceil(milestone - 1e-9))
        milestone *= reduction_factor
    return epochs


def size_schedule(
    sizes: Sequence[int], grace_period: int, reduction_factor: float, max_epochs: int
) -> SizeSchedule:
    """The schedule of ``sizes`` (ascending, the last the full size) on ASHA's rungs.

    Raises:
        ValueError: more sizes than the rungs before ``max_epochs`` leave room for (the full
            size must train at least one epoch after the last rung).
    """
    rungs = asha_rung_epochs(grace_period, reduction_factor, max_epochs)
    if len(sizes) - 1 > len(rungs):
        raise ValueError(
            f"{len(sizes)} sizes need {len(sizes) - 1} ASHA rung(s) before max_epochs "
            f"{max_epochs}, but grace_period {grace_period} and reduction_factor "
            f"{reduction_factor:g} give {len(rungs)} ({rungs}); use fewer sizes or more epochs"
        )
    return (*zip(rungs, sizes[:-1], strict=False), (max_epochs, sizes[-1]))


def size_at_epoch(schedule: SizeSchedule | None, epoch: int, full_size: int) -> int:
    """The image size epoch ``epoch`` (1-based) trains at; ``full_size`` without a schedule and
    after its last entry."""
    for last_epoch, size in schedule or ():
        if epoch <= last_epoch:
            return size
    return full_size


def scale_schedule(schedule: SizeSchedule, max_epochs: int) -> SizeSchedule:
    """``schedule`` stretched to ``max_epochs`` (the refit's longer training): every boundary is
    scaled by the same factor, rounded, kept strictly increasing and below the last epoch."""
    old_max = schedule[-1][0]
    factor = max_epochs / old_max
    scaled: list[tuple[int, int]] = []
    for last_epoch, size in schedule[:-1]:
        previous = scaled[-1][0] if scaled else 0
        scaled.append((max(previous + 1, round(last_epoch * factor)), size))
    return (*scaled, (max_epochs, schedule[-1][1]))
