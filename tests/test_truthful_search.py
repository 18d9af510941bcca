"""The Optuna study is told what happened to each trial, and it is kept in EXP/optuna.journal.

The first tests drive ``TruthfulOptunaSearch`` with the calls Ray Tune makes (suggest, one
result per epoch, complete); the last ones read the study a real ASHA search left behind.
"""

import json

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpa_tune.ray_layer.truthful_search import TruthfulOptunaSearch
from hpa_tune.search.space import define_by_run, parse_space
from hpa_tune.search.study import finish_running, journal_storage, load_study, trial_outcome

SPACE = parse_space(
    {"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}}, "test"
)


def _searcher(exp_dir, max_epochs=4):
    return TruthfulOptunaSearch(
        max_epochs=max_epochs,
        storage=journal_storage(exp_dir),
        study_name="s",
        space=define_by_run(SPACE, {}),
        metric="val_macro_f1",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def _run(searcher, trial_id, scores, stopped_early=False, error=False):
    """What Tune does: results for every epoch but the last one the scheduler stopped on."""
    searcher.suggest(trial_id)
    results = [{"epoch": e, "val_macro_f1": v} for e, v in enumerate(scores, start=1)]
    told = results[:-1] if stopped_early else results
    for result in told:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result=None if error else results[-1], error=error)


def _by_ray_id(exp_dir):
    study = load_study(exp_dir, "s")
    assert study is not None
    return {t.user_attrs["trial_id"]: t for t in study.trials}


def test_trial_outcome_is_pruned_before_max_epochs_and_complete_with_the_best_epoch_at_it():
    assert trial_outcome({1: 0.2, 2: 0.1}, 4, "max", error=False) == (TrialState.PRUNED, None)
    assert trial_outcome({1: 0.2, 2: 0.5, 3: 0.3}, 3, "max", False) == (TrialState.COMPLETE, 0.5)
    assert trial_outcome({1: 0.2, 2: 0.5, 3: 0.3}, 3, "min", False) == (TrialState.COMPLETE, 0.2)
    assert trial_outcome({1: 0.2}, 1, "max", error=True) == (TrialState.FAIL, None)


def test_pruned_trial_is_pruned_in_the_study_with_its_stopping_epoch(tmp_path):
    searcher = _searcher(tmp_path)
    _run(searcher, "a", [0.1, 0.05], stopped_early=True)
    trial = _by_ray_id(tmp_path)["a"]
    assert trial.state == TrialState.PRUNED
    # Ray's stock searcher never reports the result the scheduler stopped a trial on.
    assert trial.intermediate_values == {1: 0.1, 2: 0.05}


def test_trial_run_to_max_epochs_is_complete_with_its_best_epoch(tmp_path):
    searcher = _searcher(tmp_path, max_epochs=3)
    _run(searcher, "a", [0.1, 0.4, 0.3], stopped_early=True)  # ASHA stops at max_t too
    trial = _by_ray_id(tmp_path)["a"]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.4)
    assert trial.intermediate_values == {1: 0.1, 2: 0.4, 3: 0.3}


def test_errored_trial_fails_in_the_study(tmp_path):
    searcher = _searcher(tmp_path)
    _run(searcher, "a", [0.1, 0.2], error=True)
    assert _by_ray_id(tmp_path)["a"].state == TrialState.FAIL


def test_restored_searcher_adopts_a_trial_asked_after_its_snapshot_and_tells_nothing_twice(
    tmp_path,
):
    searcher = _searcher(tmp_path, max_epochs=2)
    _run(searcher, "a", [0.1, 0.2])
    searcher.save(str(tmp_path / "searcher.pkl"))  # Ray's snapshot of the searcher
    searcher.suggest("b")  # asked after the snapshot; then the driver dies
    searcher.on_trial_result("b", {"epoch": 1, "val_macro_f1": 0.3})
    lost_params = _by_ray_id(tmp_path)["b"].params

    restored = _searcher(tmp_path, max_epochs=2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", result={"epoch": 2, "val_macro_f1": 0.2})  # told already
    config = restored.suggest("c")  # Ray asks again for the trial it never knew
    assert config["lr"] == pytest.approx(lost_params["lr"])
    _run(restored, "c", [0.3, 0.4])
    study = load_study(tmp_path, "s")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["a", "c"]


def test_an_epoch_trained_again_after_a_restore_keeps_its_latest_score(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    for epoch, score in ((1, 0.1), (2, 0.2), (2, 0.25), (3, 0.3)):  # restored after epoch 1
        searcher.on_trial_result("a", {"epoch": epoch, "val_macro_f1": score})
    assert _by_ray_id(tmp_path)["a"].intermediate_values == {1: 0.1, 2: 0.25, 3: 0.3}


def test_finish_running_tells_trials_a_time_budget_stopped(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_result("a", {"epoch": 1, "val_macro_f1": 0.3})
    study = load_study(tmp_path, "s")
    assert finish_running(study, max_epochs=4, mode="max") == 1
    assert study.trials[0].state == TrialState.PRUNED


# A real ASHA search (the shared fixture of test_runner.py) and the study it left.


@pytest.mark.ray
def test_study_states_match_the_trials_fates_in_summary_csv(searched_experiment):
    exp_dir, _ = searched_experiment
    run = json.loads((exp_dir / "run.json").read_text())
    study = optuna.load_study(study_name=run["study_name"], storage=journal_storage(exp_dir))
    summary = pd.read_csv(exp_dir / "summary.csv", dtype={"trial_id": str}).set_index("trial_id")
    history = pd.read_csv(exp_dir / "history.csv", dtype={"trial_id": str})
    assert len(study.trials) == len(summary) == run["num_samples"]
    expected_state = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    assert {"completed", "pruned"} <= set(summary["status"])
    for trial in study.trials:
        row = summary.loc[trial.user_attrs["trial_id"]]
        assert trial.state == expected_state[row["status"]]
        epochs = history[history["trial_id"] == trial.user_attrs["trial_id"]]
        # Every epoch's metric, the one the trial stopped at included.
        assert trial.intermediate_values == pytest.approx(
            dict(zip(epochs["epoch"], epochs["val_macro_f1"], strict=True))
        )
        assert max(trial.intermediate_values) == row["epochs"]
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(row["best_val_macro_f1"])
