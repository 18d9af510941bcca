"""A space reduced to its default configuration (``hpa-tune run SPACE --default-only``).

At small budgets one configuration trained for the whole budget beat every search we measured
(BENCHMARKS.md 7.2), so the CLI runs that directly: every parameter pinned at the space's first
``points_to_evaluate``, one trial of ``max_epochs`` at the full image size, and a refit that
reuses that trial's checkpoint instead of training it again. Pure; no Ray.
"""

from __future__ import annotations

from hpa_tune.errors import HpaTuneError
from hpa_tune.search.space import SpaceSpec, pin_values


def default_only(spec: SpaceSpec) -> SpaceSpec:
    """``spec`` with every parameter fixed at its default point, no resolution rungs (the default
    trains at the last, full size throughout) and ``refit_epochs_factor`` 1.

    Raises:
        HpaTuneError: the space has no ``points_to_evaluate``, or its first point leaves a
            parameter that would be sampled without a value (one line naming it).
    """
    where = f"space {spec.name!r}: --default-only"
    if not spec.params:
        pinned = spec
    elif not spec.points_to_evaluate:
        raise HpaTuneError(f"{where} trains points_to_evaluate[0], and the space has none")
    else:
        point = spec.points_to_evaluate[0]
        pinned = pin_values(
            spec, {spec.config_key(n): v for n, v in point.items() if n in spec.params}
        )
    if pinned.params:
        names = ", ".join(sorted(pinned.params))
        raise HpaTuneError(f"{where}: points_to_evaluate[0] gives no value for {names}")
    fixed = dict(pinned.fixed)
    if pinned.fidelity is not None:
        fixed["image_size"] = pinned.fidelity.image_size[-1]
    return pinned.model_copy(
        update={
            "fixed": fixed,
            "fidelity": None,
            "points_to_evaluate": [],
            "refit_epochs_factor": 1.0,
        }
    )
