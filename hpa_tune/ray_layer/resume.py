"""``hpa-tune resume``: continue a search whose driver died (or was stopped with Ctrl-C).

Ray Tune does the work (``Tuner.restore``): finished trials — completed, pruned or errored — are
kept and not rerun; trials that were running restart from their last epoch's checkpoint; the
searcher (``TruthfulOptunaSearch``, its sampler and its study in ``EXP/optuna.journal``) carries
on from its saved state. ASHA's rungs, which Ray does not restore, come back from
``EXP/asha_state.json`` (``asha_state.PersistentASHA``). The trainable is supplied again; its
trials load their data through their node's shard cache, as in ``run``. An experiment on object
storage is restored from the bucket, our files from a staging copy (see ``staging``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import REFIT_DIR, REFIT_METRICS_FILE, SUMMARY_FILE, TUNER_FILE
from hpa_tune.ray_layer.runner import (
    _init_ray,
    _quiet_tune,
    fit_and_collect,
    progress_callbacks,
    ray_restore_path,
    tune_trainable,
)
from hpa_tune.search.experiment import read_run
from hpa_tune.search.planning import RunPlan
from hpa_tune.search.trial_table import TrialRecord
from hpa_tune.storage import filesystems as storage


def finished_search(location: str | Path) -> str | None:
    """What to say about the experiment at ``location`` (local, ``s3://``, ``gs://``) when its
    search has finished (``summary.csv`` is written only then), else None: there is something
    to resume. Reads two files' existence; writes nothing."""
    text = storage.location_arg(location)
    if not storage.is_file(storage.join(text, SUMMARY_FILE)):
        return None
    if storage.is_file(storage.join(text, REFIT_DIR, REFIT_METRICS_FILE)):
        refit = f"its refit is in {storage.join(text, REFIT_DIR)}"
        again = "`--refit` trains a new one (replacing it)"
    else:
        refit, again = "it has no refit", f"train one with `hpa-tune resume {text} --refit`"
    return (
        f"{text}: the search is finished ({SUMMARY_FILE}) and {refit}; nothing to resume, "
        f"left as it is ({again}; `hpa-tune refit` also takes --top-k and --tta)"
    )


def plan_resume(exp_dir: Path, location: str = "") -> RunPlan:
    """The plan of the search in ``exp_dir`` (the staging copy of ``location`` when that is on
    object storage), as it was started.

    Raises:
        HpaTuneError: ``exp_dir`` is not a search directory Ray Tune can restore.
    """
    exp_dir = Path(exp_dir).resolve()
    record, spec = read_run(exp_dir)
    if not (exp_dir / TUNER_FILE).is_file():
        raise HpaTuneError(
            f"{exp_dir / TUNER_FILE}: not found; the search in {exp_dir} never started, "
            "so there is nothing to resume (start it again with hpa-tune run)"
        )
    return RunPlan(spec, record, exp_dir, spec.resources.max_concurrent, location or str(exp_dir))


def resume_search(plan: RunPlan, progress: str = "live") -> list[TrialRecord]:
    """Restore the Tune experiment of ``plan`` and run it to its end; one record per trial.

    ``progress`` (``live``, ``plain``, ``none``) replaces the display the search started with.

    Raises:
        SearchInterrupted: Ctrl-C stopped it again (resume again to continue).
    """
    from ray import tune

    _quiet_tune()
    _init_ray()
    rec = plan.record  # run.json holds the resources trials got (resolved at the start)
    trainable = tune_trainable(plan, float(rec.cpus_per_trial), float(rec.gpus_per_trial))
    path, filesystem = ray_restore_path(plan)
    tuner = tune.Tuner.restore(
        path,
        trainable=trainable,
        storage_filesystem=filesystem,
        resume_unfinished=True,  # running trials continue from their last checkpoint
        resume_errored=False,  # errored trials are finished: kept as they ended
        restart_errored=False,
    )
    _show_progress(tuner, progress_callbacks(plan, progress))
    return fit_and_collect(plan, tuner)


def _show_progress(tuner: Any, shown: list[Any]) -> None:
    """Swap the progress display pickled with the search (the one ``run`` chose) for ``shown``.

    Tune restores the run config, callbacks included, from ``tuner.pkl`` and offers no public
    way to change them; its local tuner's run config is the object ``fit`` uses.
    """
    from hpa_tune.ray_layer.live_table import SearchProgress

    run_config = tuner._local_tuner.get_run_config()
    kept = [c for c in run_config.callbacks or [] if not isinstance(c, SearchProgress)]
    run_config.callbacks = kept + shown
