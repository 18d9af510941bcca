"""A restored search agrees with Ray's restored trials, whichever of Ray's snapshot files a
killed driver managed to upload: the trials (``experiment_state-*.json``) or the searcher
(``search_gen_state-*.json``, ``searcher-state-*.pkl``) may be one snapshot ahead.

The generator, limiter and searcher are Ray's and ours, driven with the calls Tune makes; the
trials file is written in Ray's layout with only the fields a restore reads here."""

import json

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter

from hpa_tune.ray_layer.aligned_search import AlignedSearchGenerator, snapshot_trials
from hpa_tune.ray_layer.truthful_search import TruthfulOptunaSearch
from hpa_tune.search.space import define_by_run, parse_space
from hpa_tune.search.study import journal_storage, load_study

SPACE = parse_space(
    {"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}}, "test"
)
NUM_SAMPLES = 3


def _generator(exp_dir) -> AlignedSearchGenerator:
    searcher = TruthfulOptunaSearch(
        max_epochs=1,
        storage=journal_storage(exp_dir),
        study_name="s",
        space=define_by_run(SPACE, {}),
        metric="val_macro_f1",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    generator = AlignedSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=2))
    generator._total_samples = NUM_SAMPLES  # what Tune sets from num_samples
    return generator


def _ask(generator, trial_id):
    """What ``SearchGenerator.next_trial`` does for one new trial."""
    config = generator.searcher.suggest(trial_id)
    assert config is not None
    generator._counter += 1
    return config


def _finish(generator, trial_id, score=0.5):
    generator.searcher.on_trial_result(trial_id, {"epoch": 1, "val_macro_f1": score})
    generator.searcher.on_trial_complete(trial_id, {"epoch": 1, "val_macro_f1": score})


def _ray_trials(exp_dir, statuses: dict[str, str]) -> None:
    """Ray's snapshot of its trials, as ``TuneController.save_to_dir`` lays it out."""
    data = [[json.dumps({"trial_id": t, "status": s}), json.dumps({})] for t, s in statuses.items()]
    (exp_dir / "experiment_state-2026-12-07_00-00-00.json").write_text(
        json.dumps({"trial_data": data})
    )


def _restored(exp_dir) -> AlignedSearchGenerator:
    generator = _generator(exp_dir)
    generator.restore_from_dir(str(exp_dir))
    return generator


def _study(exp_dir):
    study = load_study(exp_dir, "s")
    assert study is not None
    return study


def test_searcher_a_trial_ahead_of_ray_gives_that_trial_to_the_next_one_ray_asks_for(tmp_path):
    generator = _generator(tmp_path)
    _ask(generator, "a")
    _ask(generator, "b")
    _finish(generator, "a")
    _ray_trials(tmp_path, {"a": "TERMINATED", "b": "RUNNING"})
    lost = _ask(generator, "c")  # asked after Ray's trials reached the bucket, not before
    generator.save_to_dir(str(tmp_path), session_str="2026-12-07_00-00-00")

    restored = _restored(tmp_path)
    assert not restored.is_finished()  # the counter says 2 trials, not 3: one more is asked
    assert restored.searcher.live_trials == {"b"}  # no slot held for the trial Ray never ran
    assert _ask(restored, "d") == pytest.approx(lost)  # the Optuna trial "c" was given
    _finish(restored, "b")
    _finish(restored, "d")
    assert restored.is_finished()
    study = _study(tmp_path)
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["a", "b", "d"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_ray_a_trial_ahead_of_the_searcher_runs_it_and_tells_the_study_how_it_ended(tmp_path):
    generator = _generator(tmp_path)
    _ask(generator, "a")
    _ask(generator, "b")
    generator.save_to_dir(str(tmp_path), session_str="2026-12-07_00-00-00")
    _finish(generator, "a")
    _ask(generator, "c")  # Ray's trials reached the bucket; the searcher's files did not
    _ray_trials(tmp_path, {"a": "TERMINATED", "b": "RUNNING", "c": "PENDING"})

    restored = _restored(tmp_path)
    assert restored.is_finished()  # all 3 trials exist: no fourth is asked
    assert restored.searcher.live_trials == {"b", "c"}
    _finish(restored, "b")
    _finish(restored, "c", score=0.7)
    study = _study(tmp_path)
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["a", "b", "c"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.trials[2].value == pytest.approx(0.7)


def test_snapshot_trials_reads_the_newest_experiment_state(tmp_path):
    assert snapshot_trials(tmp_path) is None
    _ray_trials(tmp_path, {"a": "TERMINATED"})
    newer = tmp_path / "experiment_state-2026-12-08_00-00-00.json"
    newer.write_text(
        json.dumps({"trial_data": [[json.dumps({"trial_id": "b", "status": "ERROR"}), "{}"]]})
    )
    assert snapshot_trials(tmp_path) == {"b": "ERROR"}
