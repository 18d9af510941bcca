"""Refit an experiment where it should run: in this process, or as a Ray task with the trials'
resources (``remote_refit``), and with a bucket experiment staged locally for the local case.

The CLI only says which experiment and how; this module decides where the work runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpa_tune.refit.retrain import Progress, RefitResult


def refit_on_ray_by_default() -> bool:
    """Whether a refit runs as a Ray task unless told otherwise: when joining a cluster
    (``$RAY_ADDRESS``), so that it trains on a worker with the trials' resources."""
    return bool(os.environ.get("RAY_ADDRESS"))


def refit_experiment(
    location: str | Path,
    *,
    on_ray: bool | None = None,
    all_trials: bool = False,
    top_k: int | None = None,
    tta: bool | None = None,
    log: Callable[[str], Any] = print,
    progress: Progress | None = None,
) -> RefitResult:
    """Refit the experiment at ``location`` (local, ``s3://``, ``gs://``) and, with
    ``all_trials``, score every trial's best checkpoint on the holdout.

    ``on_ray``: as a Ray task (which stages a bucket experiment itself, where it runs), or here
    through a local staging copy that is uploaded back; ``None``: ``refit_on_ray_by_default``.
    """
    if on_ray is None:
        on_ray = refit_on_ray_by_default()
    if on_ray:
        from hpa_tune.ray_layer.remote_refit import refit_on_ray

        return refit_on_ray(
            location, log=log, progress=progress, all_trials=all_trials, top_k=top_k, tta=tta
        )
    from hpa_tune.refit.retrain import refit
    from hpa_tune.refit.trial_scores import score_trials
    from hpa_tune.storage.staging import local_experiment

    with local_experiment(location) as exp_dir:
        result = refit(exp_dir, log=log, progress=progress, top_k=top_k, tta=tta)
        if all_trials:
            score_trials(exp_dir, log=log)
    return result
