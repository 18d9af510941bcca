"""TensorBoard event files written by ``tensorboard_log``, read back with TensorBoard's own
EventAccumulator: per-epoch curves, HParams experiment/session records, refit diagnostics."""

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from hpa_tune.classes import class_names
from hpa_tune.errors import HpaTuneError
from hpa_tune.report.tensorboard_events import (
    EPOCH_SCALARS,
    STATUS_CODES,
    TrialLog,
    class_tag,
    launch_server,
    log_refit,
    tensorboard_dir,
    write_epoch_scalars,
    write_experiment_config,
)
from hpa_tune.search.space import parse_space
from tests.conftest import load_events, resnet_freeze_param

SPACE = parse_space(
    {
        "params": {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "epochs_warmup": {"type": "int", "low": 0, "high": 3, "sets": "warmup_epochs"},
            "arch": {"type": "categorical", "choices": ["baseline_cnn", "resnet18"]},
            "resnet_freeze": resnet_freeze_param("fc", "none"),
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        }
    }
)


def _report(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "val_loss": 1.2 / epoch,
        "train_macro_f1": 0.2 * epoch,
        "val_macro_f1": 0.1 * epoch,
        "train_macro_f1_batch_avg": 0.15 * epoch,
        "val_macro_f1_batch_avg": 0.05 * epoch,
        "val_macro_f1_global": 0.12 * epoch,
        "best_val_macro_f1": 0.1 * epoch,
        "lr": 1e-3,
        "images_per_s": 250.0,
        "image_size": 32,
        "trainable_params": 1234,
        "val_class_f1": {name: k / 100 for k, name in enumerate(class_names())},
    }


def _last(acc: EventAccumulator, tag: str) -> float:
    return acc.Scalars(tag)[-1].value


def _write_trial(log_dir: Path, trial_id: str, params: dict, epochs: int, status: str) -> Path:
    log = TrialLog(log_dir, trial_id)
    log.start(params, SPACE)
    for epoch in range(1, epochs + 1):
        log.epoch(_report(epoch))
    log.end(status)
    return log_dir / f"trial_{trial_id}"


def test_class_tags_are_28_unique_names_under_one_family_in_index_order():
    tags = [class_tag("val_class_f1", k) for k in range(28)]
    assert tags[0] == "val_class_f1/00_Nucleoplasm"
    assert tags[27] == "val_class_f1/27_Rods_rings"
    assert sorted(tags) == tags and len(set(tags)) == 28


def test_trial_run_has_every_epoch_curve_and_per_class_f1(tmp_path):
    run = load_events(
        _write_trial(tmp_path, "a1", {"lr": 1e-3, "arch": "baseline_cnn"}, 3, "completed")
    )
    scalars = set(run.Tags()["scalars"])
    assert set(EPOCH_SCALARS.values()) <= scalars
    assert {"loss/train", "loss/val", "macro_f1/val", "lr", "images_per_s"} <= scalars
    class_tags = {t for t in scalars if t.startswith("val_class_f1/")}
    assert class_tags == {class_tag("val_class_f1", k) for k in range(28)}
    assert [e.step for e in run.Scalars("macro_f1/val")] == [1, 2, 3]
    assert _last(run, "macro_f1/val") == pytest.approx(0.3)
    assert _last(run, "val_class_f1/05_Nuclear_bodies") == pytest.approx(0.05)


def test_ray_flattened_class_f1_keys_are_written_like_the_nested_dict(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        write_epoch_scalars(writer, {"epoch": 1, "val_class_f1/Nucleoplasm": 0.7}, 1)
    assert _last(load_events(tmp_path), "val_class_f1/00_Nucleoplasm") == pytest.approx(0.7)


def _plugin_content(acc: EventAccumulator, tag: str) -> bytes:
    return acc.SummaryMetadata(tag).plugin_data.content


def test_session_start_holds_sampled_values_and_leaves_out_inactive_conditionals(tmp_path):
    resnet = {"lr": 1e-3, "arch": "resnet18", "resnet_freeze": "fc", "batch_size": 32}
    baseline = {"lr": 1e-4, "arch": "baseline_cnn", "batch_size": 64}
    starts = {}
    for trial_id, params in (("r", resnet), ("b", baseline)):
        acc = load_events(_write_trial(tmp_path, trial_id, params, 1, "pruned"))
        content = _plugin_content(acc, metadata.SESSION_START_INFO_TAG)
        starts[trial_id] = metadata.parse_session_start_info_plugin_data(content)
    assert starts["r"].group_name == "r"
    assert starts["r"].hparams["resnet_freeze"].string_value == "fc"
    assert starts["r"].hparams["batch_size"].number_value == 32
    assert starts["r"].hparams["lr"].number_value == pytest.approx(1e-3)
    assert "resnet_freeze" not in starts["b"].hparams  # its `when` did not hold
    assert starts["b"].hparams["arch"].string_value == "baseline_cnn"


@pytest.mark.parametrize(
    ("status", "epochs", "session_status"),
    [
        ("completed", 4, api_pb2.STATUS_SUCCESS),
        ("pruned", 1, api_pb2.STATUS_SUCCESS),
        ("error", 0, api_pb2.STATUS_FAILURE),
    ],
)
def test_session_end_records_status_code_and_epochs_run(tmp_path, status, epochs, session_status):
    acc = load_events(_write_trial(tmp_path, "t", {"lr": 1e-3}, epochs, status))
    end = metadata.parse_session_end_info_plugin_data(
        _plugin_content(acc, metadata.SESSION_END_INFO_TAG)
    )
    assert end.status == session_status
    assert _last(acc, "trial/status") == STATUS_CODES[status]
    assert _last(acc, "trial/epochs") == epochs


def test_a_running_trial_shows_status_minus_one_and_its_epochs_so_far(tmp_path):
    log = TrialLog(tmp_path, "live")
    log.start({"lr": 1e-3}, SPACE)
    log.epoch(_report(1))  # flushed: readable before the trial ends
    acc = load_events(tmp_path / "trial_live")
    assert _last(acc, "trial/status") == -1
    assert _last(acc, "trial/epochs") == 1
    assert metadata.SESSION_END_INFO_TAG not in acc.Tags()["tensors"]
    log.end("completed")


def test_experiment_config_lists_every_parameter_with_its_domain_and_four_metrics(tmp_path):
    write_experiment_config(tmp_path, SPACE)
    acc = load_events(tmp_path)
    experiment = metadata.parse_experiment_plugin_data(
        _plugin_content(acc, metadata.EXPERIMENT_TAG)
    )
    infos = {h.name: h for h in experiment.hparam_infos}
    assert set(infos) == set(SPACE.params)  # the conditional resnet_freeze included
    assert infos["lr"].domain_interval.min_value == pytest.approx(1e-5)
    assert infos["lr"].domain_interval.max_value == pytest.approx(1e-2)
    assert infos["epochs_warmup"].domain_interval.max_value == 3
    assert list(infos["resnet_freeze"].domain_discrete) == ["fc", "none"]
    assert "resnet18" in infos["resnet_freeze"].description
    assert list(infos["batch_size"].domain_discrete) == [32, 64]
    assert infos["batch_size"].type == api_pb2.DATA_TYPE_FLOAT64
    assert [m.name.tag for m in experiment.metric_infos] == [
        "macro_f1/best_val",
        "macro_f1/val",
        "trial/epochs",
        "trial/status",
    ]


@pytest.mark.parametrize(
    ("choices", "data_type", "domain"),
    [
        ([0, 0.5], api_pb2.DATA_TYPE_FLOAT64, [0.0, 0.5]),
        ([0.9, "off"], api_pb2.DATA_TYPE_STRING, ["0.9", "off"]),
        ([True, False], api_pb2.DATA_TYPE_BOOL, [False, True]),
    ],
)
def test_categorical_domain_takes_one_type_and_mixed_choices_become_strings(
    tmp_path, choices, data_type, domain
):
    spec = parse_space({"params": {"momentum": {"type": "categorical", "choices": choices}}})
    write_experiment_config(tmp_path, spec)
    experiment = metadata.parse_experiment_plugin_data(
        _plugin_content(load_events(tmp_path), metadata.EXPERIMENT_TAG)
    )
    assert experiment.hparam_infos[0].type == data_type
    assert list(experiment.hparam_infos[0].domain_discrete) == domain


def _refit(log_dir: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    probs = rng.random((n, 28))
    targets = np.zeros((n, 28), dtype=np.uint8)
    targets[np.arange(n), np.arange(n) % 28] = 1
    images = rng.integers(0, 256, (n, 4, 16, 16), dtype=np.uint8)
    ids = np.array([f"id{i:02d}" for i in range(n)])
    history = [_report(1) | {"val_class_f1": {}}, _report(2) | {"val_class_f1": {}}]
    return log_refit(log_dir, history, probs, targets, np.full(28, 0.5), images, ids)


def test_refit_run_has_a_pr_curve_per_class_labelled_val_images_and_its_curves(tmp_path):
    run_dir = _refit(tmp_path)
    assert run_dir == tmp_path / "refit"
    acc = load_events(run_dir)
    tensors = set(acc.Tags()["tensors"])
    assert {class_tag("pr", k) for k in range(28)} <= tensors
    assert set(acc.Tags()["images"]) == {
        f"val_images/{i:02d}/{kind}" for i in range(8) for kind in ("rgb", "yellow")
    }
    yellow = acc.Images("val_images/00/yellow")[0]
    assert (yellow.width, yellow.height) == (16, 16)
    table = acc.Tensors("val_images/labels/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| 00 | id00 | Nucleoplasm |" in table and len(table.splitlines()) == 2 + 8
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]


def test_refit_again_replaces_the_earlier_refit_events(tmp_path):
    _refit(tmp_path)
    _refit(tmp_path)
    assert len(list((tmp_path / "refit").glob("events.out.tfevents.*"))) == 1


def test_serving_a_directory_without_logs_names_the_missing_folder(tmp_path):
    with pytest.raises(HpaTuneError, match=str(tensorboard_dir(tmp_path))):
        launch_server(tmp_path, port=0)
