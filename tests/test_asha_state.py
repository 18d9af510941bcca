"""ASHA's rungs outlive the driver: written to asha_state.json, read back by a new scheduler."""

import json

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from hpa_tune.ray_layer.asha_state import PersistentASHA, restore_rungs, rungs_state


def _asha(path):
    return PersistentASHA(
        state_path=path, time_attr="epoch", metric="f1", mode="max", max_t=4, grace_period=1,
        reduction_factor=2,
    )  # fmt: skip


def _trial(trial_id):
    trial = Trial("fake", stub=True)
    trial.trial_id = trial_id
    return trial


def test_rungs_round_trip_through_plain_json_state():
    rungs = [[(2.0, {"a": 0.5}), (1.0, {"a": 0.4, "b": 0.1})]]
    state = rungs_state(rungs, {"a": 0}, {"b"}, 1)
    empty = [[(2.0, {}), (1.0, {})]]
    restore_rungs(empty, state)
    assert empty == rungs
    assert state["ended"] == ["b"] and state["trial_bracket"] == {"a": 0}


def test_state_of_other_rungs_is_refused():
    state = rungs_state([[(4.0, {"a": 0.5})]], {}, set(), 0)
    with pytest.raises(ValueError, match="other rungs"):
        restore_rungs([[(2.0, {}), (1.0, {})]], state)


def test_a_new_scheduler_judges_against_the_rungs_the_old_one_recorded(tmp_path):
    path = tmp_path / "asha_state.json"
    old = _asha(path)
    for trial_id, score in (("a", 0.8), ("b", 0.9)):
        old.on_trial_add(None, _trial(trial_id))
        assert old.on_trial_result(None, _trial(trial_id), {"epoch": 1, "f1": score}) == "CONTINUE"

    fresh, resumed = _asha(tmp_path / "none.json"), _asha(path)
    for scheduler in (fresh, resumed):
        scheduler.on_trial_add(None, _trial("c"))
    weak = {"epoch": 1, "f1": 0.1}
    # Without the saved rungs a weak trial passes rung 1; with them it is stopped there.
    assert fresh.on_trial_result(None, _trial("c"), weak) == TrialScheduler.CONTINUE
    assert resumed.on_trial_result(None, _trial("c"), weak) == TrialScheduler.STOP
    assert json.loads(path.read_text())["ended"] == ["c"]  # a later resume will not run it on
