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

from hpa_tune.errors import HpaTuneError
from hpa_tune.ray_layer.runner import (
    RunPlan,
    _init_ray,
    _quiet_tune,
    fit_and_collect,
    ray_restore_path,
    tune_trainable,
)
from hpa_tune.search.experiment import read_run
from hpa_tune.search.trial_table import TrialRecord

TUNER_FILE = "tuner.pkl"  # written by Ray Tune into the experiment directory when a search starts


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


def resume_search(plan: RunPlan) -> list[TrialRecord]:
    """Restore the Tune experiment of ``plan`` and run it to its end; one record per trial.

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
    return fit_and_collect(plan, tuner)
