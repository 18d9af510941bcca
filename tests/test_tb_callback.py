"""The TensorBoard Ray callback, driven by hand the way Tune's controller calls it (no Ray
runtime needed): a session per trial, pruned vs completed vs error, and picklability."""

import pickle
from pathlib import Path
from types import SimpleNamespace

from tensorboard.plugins.hparams import metadata

from hpa_tune.ray_layer.tensorboard_callback import TensorBoardTrials
from hpa_tune.search.space import parse_space
from tests.conftest import load_events

SPACE = parse_space({"params": {"lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True}}})
CONSTANTS = {"max_epochs": 3, "seed": 0, "image_size": 32}


def _trial(trial_id: str, lr: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"lr": lr, **CONSTANTS})


def _run(callback: TensorBoardTrials, trial: SimpleNamespace, epochs: int) -> None:
    callback.on_trial_start(0, [], trial)
    for epoch in range(1, epochs + 1):
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "val_macro_f1": 0.1 * epoch})


def _status_code(exp_dir: Path, trial_id: str) -> float:
    run = load_events(exp_dir / "tensorboard" / f"trial_{trial_id}")
    return run.Scalars("trial/status")[-1].value


def test_trials_stopped_early_are_pruned_finished_ones_completed_raised_ones_errors(tmp_path):
    callback = TensorBoardTrials(tmp_path, SPACE, max_epochs=3)
    callback.setup(num_samples=3)
    for trial_id, epochs in (("full", 3), ("short", 1), ("bad", 2)):
        _run(callback, _trial(trial_id, 1e-3), epochs)
    callback.on_trial_complete(0, [], _trial("full", 1e-3))
    callback.on_trial_complete(0, [], _trial("short", 1e-3))
    callback.on_trial_error(0, [], _trial("bad", 1e-3))
    assert [_status_code(tmp_path, t) for t in ("full", "short", "bad")] == [0, 1, 2]
    assert callback.trials == {}  # every file closed


def test_session_start_has_only_sampled_params_not_constants(tmp_path):
    callback = TensorBoardTrials(tmp_path, SPACE, max_epochs=3)
    _run(callback, _trial("a", 3e-4), 1)
    acc = load_events(tmp_path / "tensorboard" / "trial_a")
    content = acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    start = metadata.parse_session_start_info_plugin_data(content)
    assert dict(start.hparams).keys() == {"lr"}


def test_setup_writes_the_hparams_experiment_in_the_root_run(tmp_path):
    TensorBoardTrials(tmp_path, SPACE, max_epochs=3).setup()
    assert metadata.EXPERIMENT_TAG in load_events(tmp_path / "tensorboard").Tags()["tensors"]


def test_pickles_without_its_open_writers(tmp_path):
    callback = TensorBoardTrials(tmp_path, SPACE, max_epochs=3)
    _run(callback, _trial("a", 1e-3), 1)
    copy = pickle.loads(pickle.dumps(callback))
    assert copy.trials == {} and copy.log_dir == callback.log_dir
    callback.on_trial_complete(0, [], _trial("a", 1e-3))


def test_experiment_end_closes_cut_off_trials_as_pruned(tmp_path):
    callback = TensorBoardTrials(tmp_path, SPACE, max_epochs=3)
    _run(callback, _trial("cut", 1e-3), 2)
    callback.on_experiment_end([])
    assert _status_code(tmp_path, "cut") == 1
    assert callback.trials == {}
