"""``--warm-start``: earlier studies' trials mapped onto a new space, and a run that starts from them."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from hpa_tune.cli import main
from hpa_tune.errors import HpaTuneError
from hpa_tune.search.experiment import BestTrial, RunRecord, read_run
from hpa_tune.search.space import parse_space
from hpa_tune.search.study import load_study
from hpa_tune.search.warm_start import (
    FROM_EXPERIMENT_ATTR,
    FROM_TRIAL_ATTR,
    EarlierStudy,
    fit_params,
    plan_warm_start,
)
from tests.conftest import SEARCH_SPACE

SPACE = {
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64]},
        "loss_weighting": {"type": "categorical", "choices": ["none", "ln"]},
    }
}


def _space(**changes):
    raw = json.loads(json.dumps(SPACE))
    for name, param in changes.items():
        if param is None:
            raw["params"].pop(name)
        else:
            raw["params"][name] = param
    return parse_space(raw)


def _trial(params, state=TrialState.COMPLETE, values=(0.3, 0.4), trial_id="a"):
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-6, 1.0, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64]),
        "loss_weighting": optuna.distributions.CategoricalDistribution(["none", "full", "ln"]),
        "weight_decay": optuna.distributions.FloatDistribution(0.0, 0.5),
    }
    return optuna.trial.create_trial(
        state=state,
        value=max(values) if state == TrialState.COMPLETE else None,
        params=params,
        distributions={k: dists[k] for k in params},
        intermediate_values=dict(enumerate(values, start=1)),
        user_attrs={"trial_id": trial_id},
    )


def _earlier(trials, best="GOOD", metric="val_macro_f1", mode="max", location="runs/old"):
    return EarlierStudy(location, metric, mode, trials, _best(GOOD) if best == "GOOD" else best)


def _best(params, value=0.5, trial_id="w"):
    return BestTrial(trial_id, params, {}, "val_macro_f1", "max", value, 2, None)


GOOD = {"lr": 1e-3, "batch_size": 32, "loss_weighting": "ln"}


def test_shared_params_carried_with_state_values_and_provenance():
    earlier = _earlier(
        [
            _trial(GOOD, trial_id="a"),
            _trial({**GOOD, "lr": 2e-3}, state=TrialState.PRUNED, values=(0.2,), trial_id="b"),
        ]
    )
    warm = plan_warm_start([earlier], _space(), {})
    assert [t.state for t in warm.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    first = warm.trials[0]
    assert first.params == GOOD and first.value == 0.4
    assert first.intermediate_values == {1: 0.3, 2: 0.4}
    assert first.distributions["batch_size"].choices == (32, 64)  # the new space's
    assert first.user_attrs == {FROM_EXPERIMENT_ATTR: "runs/old", FROM_TRIAL_ATTR: "a"}
    assert warm.notes == []
    study = optuna.create_study(direction="maximize")
    warm.add_to(study)
    assert len(study.trials) == 2


def test_a_value_outside_a_changed_range_skips_the_trial_with_a_note():
    earlier = _earlier(
        [_trial(GOOD), _trial({**GOOD, "lr": 0.1}), _trial({**GOOD, "batch_size": 16})]
    )
    warm = plan_warm_start([earlier], _space(), {})
    assert [t.params for t in warm.trials] == [GOOD]
    assert len(warm.notes) == 2
    assert (
        "1 trial(s) skipped: lr = 0.1 outside the new range [0.0001, 0.01] (log)" in warm.notes[0]
    )
    assert "batch_size = 16 outside the new choices [32, 64]" in warm.notes[1]


def test_a_parameter_the_new_space_lacks_is_dropped_and_the_trial_kept():
    earlier = _earlier(
        [_trial({**GOOD, "weight_decay": 0.2}), _trial({**GOOD, "weight_decay": 0.3})]
    )
    warm = plan_warm_start([earlier], _space(), {})
    assert [t.params for t in warm.trials] == [GOOD, GOOD]
    assert warm.notes == [
        "warm start from runs/old: parameter weight_decay dropped from 2 trial(s): the new space "
        "does not sample it"
    ]


def test_a_parameter_only_the_new_space_has_is_left_out_of_the_carried_trial():
    fitted = fit_params(_space(), {"lr": 1e-3, "batch_size": 64})
    assert fitted.params == {"lr": 1e-3, "batch_size": 64} and fitted.outside is None


def test_a_conditional_parameter_whose_condition_no_longer_holds_is_dropped():
    space = _space(
        weight_decay={"type": "float", "low": 0.0, "high": 0.5, "when": {"batch_size": 64}}
    )
    assert fit_params(space, {**GOOD, "weight_decay": 0.2}).dropped == ["weight_decay"]
    assert fit_params(space, {**GOOD, "batch_size": 64, "weight_decay": 0.2}).dropped == []


def test_fail_and_unfinished_trials_are_skipped_with_a_note():
    failed = _trial(GOOD, state=TrialState.FAIL, values=())
    warm = plan_warm_start([_earlier([failed, _trial(GOOD)])], _space(), {})
    assert len(warm.trials) == 1
    assert warm.notes == ["warm start from runs/old: 1 FAIL trial(s) skipped (no score to carry)"]


def test_the_first_point_is_the_best_winner_that_fits_the_new_space():
    worse = _earlier([], _best(GOOD, 0.4, "x"), location="runs/a")
    better = _earlier(
        [], _best({**GOOD, "batch_size": 64, "weight_decay": 0.1}, 0.6, "y"), location="runs/b"
    )
    warm = plan_warm_start([worse, better], _space(), {})
    assert warm.start_point == {**GOOD, "batch_size": 64}
    assert warm.start_from["experiment"] == "runs/b" and warm.start_from["trial_id"] == "y"
    assert warm.start_space(_space()).points_to_evaluate == [{**GOOD, "batch_size": 64}]
    outside = _earlier([], _best({**GOOD, "lr": 0.5}, 0.9, "z"), location="runs/c")
    warm = plan_warm_start([outside, worse], _space(), {})
    assert warm.start_from["trial_id"] == "x"
    assert any("its winner (trial z) not used: lr = 0.5 outside" in n for n in warm.notes)
    assert warm.record_fields() == {
        "warm_start_from": ["runs/c", "runs/a"],
        "warm_start_trials": 0,
        "start_point_from": warm.start_from,
    }


def test_without_a_fitting_winner_the_space_keeps_its_own_first_point():
    warm = plan_warm_start([_earlier([], _best({"lr": 0.5}))], _space(), {})
    assert warm.start_point is None and warm.start_space(_space()) == _space()


def test_another_metric_or_mode_is_refused_in_one_line():
    with pytest.raises(
        HpaTuneError,
        match="runs/old: its study minimises val_loss, this space maximises val_macro_f1",
    ):
        plan_warm_start([_earlier([], metric="val_loss", mode="min")], _space(), {})


def test_run_json_without_the_warm_start_fields_still_loads():
    old = {
        "space_path": "s.yaml",
        "data_dir": "/d",
        "builtin_sample": False,
        "constants": {},
        "num_samples": 2,
        "max_epochs": 1,
        "seed": 0,
        "sizes": [32],
    }
    record = RunRecord(**old)
    assert record.warm_start_from == [] and record.warm_start_trials == 0
    assert record.start_point_from is None


def test_run_warm_started_from_an_earlier_experiment(searched_experiment, sample_shards, tmp_path):
    exp, _ = searched_experiment
    earlier_record, _ = read_run(exp)
    earlier = load_study(exp, earlier_record.study_name)
    finished = [t for t in earlier.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    best = json.loads((exp / "best.json").read_text())
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    args = ["run", str(space), "--data", str(sample_shards), "--storage", str(tmp_path / "runs")]
    args += ["--name", "warm", "--num-samples", "2", "--max-epochs", "1", "--no-refit", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--warm-start", str(exp)])
    assert result.exit_code == 0, result.output
    assert f"warm start: {len(finished)} earlier trial(s) carried into the study" in result.output

    new_exp = tmp_path / "runs" / "warm"
    record, spec = read_run(new_exp)
    assert record.warm_start_from == [str(exp)]
    assert record.warm_start_trials == len(finished)
    assert record.start_point_from["trial_id"] == best["trial_id"]
    assert record.start_point_from["experiment"] == str(exp)
    assert spec.points_to_evaluate == [best["params"]]
    study = load_study(new_exp, record.study_name)
    carried, new = study.trials[: len(finished)], study.trials[len(finished) :]
    assert all(t.user_attrs[FROM_EXPERIMENT_ATTR] == str(exp) for t in carried)
    assert [t.params for t in carried] == [t.params for t in finished]
    assert len(new) == 2 and new[0].params == best["params"]


def test_warm_start_from_another_metric_exits_2(searched_experiment, tmp_path):
    exp, _ = searched_experiment
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**SEARCH_SPACE, "metric": "val_loss", "mode": "min"}))
    result = CliRunner().invoke(
        main, ["run", str(space), "--storage", str(tmp_path / "runs"), "--warm-start", str(exp)]
    )
    assert result.exit_code == 2
    assert "maximises val_macro_f1, this space minimises val_loss" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_an_earlier_experiment_on_object_storage_reads_as_a_local_one(
    searched_experiment, s3_endpoint
):
    import boto3

    from hpa_tune.search.earlier_studies import read_earlier
    from hpa_tune.storage import filesystems as storage

    exp, _ = searched_experiment
    boto3.client("s3").create_bucket(Bucket="warm-start")
    for name in ("run.json", "space.yaml", "best.json", "optuna.journal"):
        storage.write_bytes(f"s3://warm-start/runs/t/{name}", (exp / name).read_bytes())
    remote, local = read_earlier("s3://warm-start/runs/t"), read_earlier(str(exp))
    assert remote.location == "s3://warm-start/runs/t"
    assert [t.params for t in remote.trials] == [t.params for t in local.trials]
    assert remote.best == local.best and (remote.metric, remote.mode) == (local.metric, local.mode)
    with pytest.raises(HpaTuneError, match=r"s3://warm-start/nothing: no run\.json"):
        read_earlier("s3://warm-start/nothing")


def test_the_new_study_holds_the_carried_trials_before_its_own():
    warm = plan_warm_start([_earlier([_trial(GOOD), _trial(GOOD)])], _space(), {})
    storage = optuna.storages.InMemoryStorage()
    warm.start_study(storage, "new", "min")
    study = optuna.load_study(study_name="new", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert len(study.trials) == 2 and study.ask().number == 2


def test_status_leaves_carried_trials_out_of_the_search_it_shows():
    from hpa_tune.report.experiment_status import state_from_study

    warm = plan_warm_start([_earlier([_trial(GOOD)])], _space(), {})
    study = warm.start_study(optuna.storages.InMemoryStorage(), "new", "max")
    own = study.ask()
    own.set_user_attr("trial_id", "own")
    study.tell(own, 0.1)
    state = state_from_study(study.trials, num_samples=2, max_epochs=2, mode="max")
    assert list(state.trials) == ["own"]
