"""The files of an experiment directory (``STORAGE/NAME``), read and written in one place (their
names: ``hpa_tune.experiment_files``).

``run.json``      how the run was started (space, data, constants, budget, seed)
``space.yaml``    the search space as loaded (the resolved configuration beside the results)
``summary.csv``   one row per trial
``history.csv``   one row per trial and epoch (every scalar each trial reported)
``best.json``     the winning trial: sampled params, resolved config, metric
``trial_scores.csv``  every trial's best checkpoint scored on the holdout (``score_all_trials``)
``optuna.journal``  the Optuna study (journal storage; its name is ``study_name`` in run.json)
``asha_state.json``  ASHA's rungs, kept so that ``hpa-tune resume`` continues them
``refit/``        the refit model, thresholds and holdout metrics (``refit/metrics.json``)
``.driver/``      the claim of the driver running it now (``driver_claim``)
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import (
    BEST_FILE,
    MODEL_FILE,
    RUN_FILE,
    SPACE_FILE,
)
from hpa_tune.search.space import SpaceSpec, parse_space
from hpa_tune.storage import driver_claim
from hpa_tune.storage import filesystems as storage


@dataclass
class RunRecord:
    """How a run was started; enough for ``refit`` to reload data and replay the winner."""

    space_path: str
    data_dir: str
    builtin_sample: bool
    constants: dict[str, Any]
    num_samples: int
    max_epochs: int
    seed: int
    sizes: list[int]
    cpus_per_trial: float = 1
    gpus_per_trial: float | str = "auto"
    time_budget_s: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    study_name: str = ""  # the Optuna study in optuna.journal ("" in runs made before it existed)
    max_failures: int = 2  # retries of a trial whose process died, from its last checkpoint
    # --warm-start (search.warm_start): the earlier experiments, how many of their trials the
    # study began with, and where its first trial's parameters came from (experiment, trial_id,
    # metric, value, params); empty in runs without a warm start or made before it existed.
    warm_start_from: list[str] = field(default_factory=list)
    warm_start_trials: int = 0
    start_point_from: dict[str, Any] | None = None


@dataclass
class BestTrial:
    """The winner of a search."""

    trial_id: str
    params: dict[str, Any]
    config: dict[str, Any]
    metric: str
    mode: str
    value: float
    epoch: int
    checkpoint: str | None


def write_run(exp_dir: Path, record: RunRecord, spec: SpaceSpec) -> None:
    """Save ``run.json`` and ``space.yaml``."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / RUN_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")
    (exp_dir / SPACE_FILE).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))


def absolute_location(path: str | Path) -> str:
    """``path`` made absolute, so an experiment directory works from any working directory.

    URLs (``s3://...``) are kept as they are.
    """
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def check_storage(storage: str | Path) -> None:
    """Fail in one line, before any work, if experiments cannot be written under ``storage``.

    Raises:
        HpaTuneError: ``storage`` (or a parent) is a file, or the directory is not writable.
    """
    if "://" in str(storage):
        return
    existing = Path(storage).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise HpaTuneError(f"--storage {storage}: {existing} is a file, expected a directory")
    try:
        Path(storage).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=storage):
            pass
    except OSError as err:
        raise HpaTuneError(f"--storage {storage}: cannot write there ({err.strerror})") from None


def check_new_experiment(exp_dir: Path) -> None:
    """A new run never writes into an existing experiment.

    Raises:
        HpaTuneError: ``exp_dir`` exists and is not empty; names ``resume`` and ``--name``.
    """
    # The new run's own claim (taken before this check) is not an experiment.
    if exp_dir.is_dir() and any(p.name != driver_claim.CLAIM_DIR for p in exp_dir.iterdir()):
        raise HpaTuneError(
            f"{exp_dir}: an experiment of that name exists; continue it with "
            f"`hpa-tune resume {exp_dir}`, or choose another --name"
        )
    if exp_dir.exists() and not exp_dir.is_dir():
        raise HpaTuneError(f"{exp_dir}: exists and is a file; choose another --name")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise HpaTuneError(f"{path}: not found; is {path.parent} an experiment directory ({what})?")
    return path


def read_run(exp_dir: Path) -> tuple[RunRecord, SpaceSpec]:
    """Load ``run.json`` and ``space.yaml`` of an experiment."""
    record = RunRecord(
        **json.loads(_require(exp_dir / RUN_FILE, "written by hpa-tune run").read_text())
    )
    raw = yaml.safe_load(_require(exp_dir / SPACE_FILE, "written by hpa-tune run").read_text())
    return record, parse_space(raw, str(exp_dir / SPACE_FILE))


def write_best(exp_dir: Path, best: BestTrial) -> None:
    """Save ``best.json``."""
    (exp_dir / BEST_FILE).write_text(json.dumps(asdict(best), indent=2) + "\n")


def read_best(exp_dir: Path) -> BestTrial:
    """Load ``best.json``."""
    return BestTrial(
        **json.loads(_require(exp_dir / BEST_FILE, "with a finished search").read_text())
    )


def experiment_started(location: str | Path) -> bool:
    """Whether ``location`` holds an experiment (or a driver's claim on one): ``resume`` and
    ``refit`` of a path that holds nothing create nothing there, not even a claim."""
    where = driver_claim.claim_location(location)
    if not storage.is_remote(where):
        return Path(where).is_dir()
    return bool(storage.list_files(storage.join(where, driver_claim.CLAIM_DIR))) or storage.is_file(
        storage.join(where, RUN_FILE)
    )


def local_checkpoint(exp_dir: Path, recorded: str) -> Path:
    """A trial checkpoint recorded in ``summary.csv`` as a path in ``exp_dir``: the experiment
    may have been moved, or be a staging copy of a bucket (then the checkpoint is downloaded
    into it on first use)."""
    marker = f"/{exp_dir.name}/"
    if marker not in recorded or (not storage.is_remote(recorded) and Path(recorded).is_dir()):
        return Path(recorded)
    local = exp_dir / recorded.rsplit(marker, 1)[1]
    if storage.is_remote(recorded) and not (local / MODEL_FILE).is_file():
        storage.download_tree(recorded, local)
    return local
