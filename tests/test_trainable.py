"""One trial without Ray: a report per epoch, checkpoints that resume, whole-set val F1."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from hpa_tune.experiment_files import MODEL_FILE, STATE_FILE
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.trainable import run_epochs, train_trial
from hpa_tune.train.trial_data import load_trial_data

CFG = TrialConfig(arch="baseline_cnn", image_size=32, max_epochs=2, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def data(sample_shards):
    return load_trial_data(sample_shards, [32])


def test_train_trial_reports_every_epoch_with_the_metrics_the_search_needs(data):
    reports = []

    def report(metrics, checkpoint_dir):
        files = sorted(p.name for p in __import__("pathlib").Path(checkpoint_dir).iterdir())
        reports.append((metrics, files))

    train_trial(CFG, data, report)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    expected = {
        "train_loss",
        "train_macro_f1",
        "val_loss",
        "val_macro_f1",
        "val_macro_f1_batch_avg",
        "val_macro_f1_global",
        "val_global_threshold",
        "lr",
        "images_per_s",
        "trainable_params",
        "best_val_macro_f1",
        "image_size",
    }
    assert expected <= set(reports[0][0])
    assert len(reports[0][0]["val_class_f1"]) == 28
    assert {MODEL_FILE, STATE_FILE} <= set(reports[0][1])
    assert reports[1][0]["best_val_macro_f1"] == max(m["val_macro_f1"] for m, _ in reports)


def test_val_macro_f1_is_sklearns_over_every_val_sample(data):
    outcome = next(run_epochs(CFG, data))
    val = data.split(32, "val")
    assert len(outcome.val.probs) == len(val)
    expected = f1_score(val.labels, outcome.val.probs >= 0.5, average="macro", zero_division=0)
    assert outcome.metrics["val_macro_f1"] == pytest.approx(expected)


def test_val_macro_f1_global_is_the_best_single_threshold_over_every_val_sample(data):
    outcome = next(run_epochs(CFG, data))
    val = data.split(32, "val")
    threshold = outcome.metrics["val_global_threshold"]
    at_threshold = f1_score(
        val.labels, outcome.val.probs >= threshold, average="macro", zero_division=0
    )
    assert outcome.metrics["val_macro_f1_global"] == pytest.approx(at_threshold)
    assert outcome.metrics["val_macro_f1_global"] >= outcome.metrics["val_macro_f1"] - 1e-12


def test_resuming_from_a_checkpoint_continues_at_the_next_epoch(data, tmp_path):
    from hpa_tune.train.checkpoint import save_checkpoint

    first = next(run_epochs(CFG, data))
    save_checkpoint(tmp_path, CFG, first)
    resumed = list(run_epochs(CFG, data, restore_dir=str(tmp_path)))
    assert [o.epoch for o in resumed] == [2]
    fresh = list(run_epochs(CFG, data))[1]
    # Same seed, same data order: resuming reproduces the uninterrupted run.
    np.testing.assert_allclose(resumed[0].val.probs, fresh.val.probs, atol=1e-5)


def test_training_learns_the_sample_better_than_chance(data):
    cfg = CFG.model_copy(update={"max_epochs": 6, "loss_weighting": "ln"})
    torch.manual_seed(0)
    last = list(run_epochs(cfg, data))[-1]
    assert (
        last.metrics["train_loss"]
        < next(iter(run_epochs(cfg.model_copy(update={"max_epochs": 1}), data))).metrics[
            "train_loss"
        ]
    )
    assert last.metrics["val_macro_f1"] > 0.05


# Resolution as a fidelity: 16 px for epoch 1 (the first ASHA rung), then 32 px.
SCHEDULED = CFG.model_copy(update={"max_epochs": 3, "size_schedule": ((1, 16), (3, 32))})


@pytest.fixture(scope="module")
def two_sizes(fidelity_shards):
    return load_trial_data(fidelity_shards, SCHEDULED.training_sizes())


@pytest.mark.parametrize("fast_path", ["off", "on"])
def test_each_epoch_trains_and_is_scored_at_its_scheduled_size(two_sizes, fast_path):
    cfg = SCHEDULED.model_copy(update={"fast_path": fast_path})
    outcomes = list(run_epochs(cfg, two_sizes))
    assert [o.metrics["image_size"] for o in outcomes] == [16, 32, 32]
    n_val = len(two_sizes.split(32, "val").labels)
    assert all(o.val.probs.shape[0] == n_val for o in outcomes)


def test_a_trial_continues_at_the_next_size_from_the_previous_epochs_weights(two_sizes, tmp_path):
    from hpa_tune.train.checkpoint import save_checkpoint

    uninterrupted = run_epochs(SCHEDULED, two_sizes)
    first = next(uninterrupted)
    save_checkpoint(tmp_path, SCHEDULED, first)
    second = next(uninterrupted)  # the same model and optimiser, now at 32 px
    # A trial restored from its 16 px checkpoint trains epoch 2 at 32 px: it loaded the epoch-1
    # weights, so matching the uninterrupted run shows that run went on from them too.
    restored = next(run_epochs(SCHEDULED, two_sizes, restore_dir=str(tmp_path)))
    assert (restored.epoch, restored.metrics["image_size"]) == (2, 32)
    assert restored.metrics["train_loss"] == pytest.approx(second.metrics["train_loss"], rel=1e-5)
    np.testing.assert_allclose(restored.val.probs, second.val.probs, atol=1e-5)
