"""The earlier experiments of a warm start (``--warm-start EXP ...``): read from a directory or a
bucket, planned by ``warm_start.plan_warm_start``, and what the plan carried, logged."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpa_tune.errors import HpaTuneError
from hpa_tune.search.experiment import (
    BEST_FILE,
    RUN_FILE,
    SPACE_FILE,
    absolute_location,
    read_best,
    read_run,
)
from hpa_tune.search.space import SpaceSpec
from hpa_tune.search.study import JOURNAL_FILE, load_study
from hpa_tune.search.warm_start import EarlierStudy, WarmStart, plan_warm_start
from hpa_tune.storage import filesystems as storage


def read_earlier(location: str) -> EarlierStudy:
    """The study and winner of the experiment at ``location`` (local, ``s3://``, ``gs://``);
    reads ``run.json``, ``space.yaml``, ``best.json`` and ``optuna.journal`` only.

    Raises:
        HpaTuneError: ``location`` holds no experiment (no ``run.json``), naming it.
    """
    text = absolute_location(storage.location_arg(location))  # run.json names it from anywhere
    if not storage.is_remote(text):
        return _read_local(text, Path(text))
    with tempfile.TemporaryDirectory(prefix="hpa-warm-") as tmp:
        for name in (RUN_FILE, SPACE_FILE, BEST_FILE, JOURNAL_FILE):
            try:
                Path(tmp, name).write_bytes(storage.read_bytes(storage.join(text, name)))
            except FileNotFoundError:
                continue
        return _read_local(text, Path(tmp))


def _read_local(location: str, exp_dir: Path) -> EarlierStudy:
    if not (exp_dir / RUN_FILE).is_file():
        raise HpaTuneError(f"--warm-start {location}: no {RUN_FILE}; not an hpa-tune experiment")
    record, spec = read_run(exp_dir)
    study = load_study(exp_dir, record.study_name) if record.study_name else None
    trials = study.get_trials(deepcopy=True) if study is not None else []
    best = read_best(exp_dir) if (exp_dir / BEST_FILE).is_file() else None
    return EarlierStudy(location, spec.metric, spec.mode, trials, best)


def load_warm_start(
    locations: Sequence[str],
    spec: SpaceSpec,
    constants: Mapping[str, Any],
    log: Callable[[str], None] = print,
) -> WarmStart:
    """Read the earlier experiments, plan the warm start, and ``log`` its notes and a summary.

    Raises:
        HpaTuneError: an experiment is missing or optimised another metric or mode.
    """
    earlier = [read_earlier(location) for location in locations]
    warm = plan_warm_start(earlier, spec, constants)
    for note in warm.notes:
        log(note)
    start = warm.start_from
    first = (
        f"first trial: trial {start['trial_id']} of {start['experiment']} "
        f"({start['metric']} {start['value']:.4f})"
        if start
        else "first trial: the space's own"
    )
    log(f"warm start: {len(warm.trials)} earlier trial(s) carried into the study; {first}")
    return warm
