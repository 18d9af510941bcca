"""The fast path computes what the plain path computes (within bf16 tolerance), and chooses its
loaders by the documented rule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hpa_tune.data.device_loader import DeviceArrayLoader, PinnedPrefetchLoader
from hpa_tune.data.loader import BatchLoader
from hpa_tune.data.splits import TRAIN, VAL
from hpa_tune.train.build import build_loss, build_model
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import build_optimizer, predict, train_one_epoch
from hpa_tune.train.fast_path import (
    FastPath,
    arrays_on_device,
    predict_split,
    prepare_model,
    resolve_fast_path,
    trial_loaders,
)
from hpa_tune.train.trainable import run_epochs

CPU = torch.device("cpu")
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


@pytest.fixture(scope="module")
def trial_data(sample_shards):
    from hpa_tune.train.trial_data import load_trial_data

    return load_trial_data(sample_shards, [32])


def test_auto_is_the_fast_path_on_cuda_and_the_plain_path_on_a_cpu():
    auto = TrialConfig()
    assert resolve_fast_path(auto, torch.device("cuda")).enabled
    assert not resolve_fast_path(auto, CPU).enabled
    assert resolve_fast_path(TrialConfig(fast_path="on"), CPU).enabled
    assert not resolve_fast_path(TrialConfig(fast_path="off"), torch.device("cuda")).enabled


def test_compile_is_off_by_default_and_only_applies_on_the_fast_path():
    assert not resolve_fast_path(TrialConfig(fast_path="on"), CPU).compile
    assert resolve_fast_path(TrialConfig(fast_path="on", compile=True), CPU).compile
    assert not resolve_fast_path(TrialConfig(fast_path="off", compile=True), CPU).compile


def test_arrays_live_on_the_device_only_within_their_share_of_the_trials_memory():
    fast = FastPath(True, True, True, False, device_data_share=0.25, gpu_fraction=0.5)
    assert arrays_on_device(125, 1000, fast)  # 0.25 x 0.5 x 1000 = 125
    assert not arrays_on_device(126, 1000, fast)
    plain = FastPath(False, None, False, False, device_data_share=1.0)
    assert not arrays_on_device(1, 1000, plain)


def test_trial_loaders_pick_device_arrays_or_pinned_buffers_by_the_rule(trial_data):
    args = (trial_data.split(32, TRAIN), trial_data.split(32, VAL), trial_data.channel_stats[32])
    on = TrialConfig(fast_path="on", image_size=32, batch_size=16)
    train, val = trial_loaders(on, *args, CPU, resolve_fast_path(on, CPU))
    assert isinstance(train, DeviceArrayLoader) and isinstance(val, DeviceArrayLoader)
    assert val.batch_size == 4 * train.batch_size  # evaluation in larger batches
    tight = on.model_copy(update={"device_data_share": 0.0})
    train, val = trial_loaders(tight, *args, CPU, resolve_fast_path(tight, CPU))
    assert isinstance(train, PinnedPrefetchLoader) and isinstance(val, PinnedPrefetchLoader)
    off = on.model_copy(update={"fast_path": "off"})
    train, _ = trial_loaders(off, *args, CPU, resolve_fast_path(off, CPU))
    assert isinstance(train, BatchLoader)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["baseline_cnn", "resnet18"])
def test_fast_path_loss_equals_the_plain_path_within_bf16_tolerance(arch, device, trial_data):
    cfg = TrialConfig(arch=arch, image_size=32, batch_size=32, channels="rgb", fast_path="on")
    dev = torch.device(device)
    split = trial_data.split(32, TRAIN)
    mean, std = trial_data.channel_stats[32]
    torch.manual_seed(0)
    plain_model = build_model(cfg).to(dev)
    fast_model = prepare_model(copy.deepcopy(plain_model), resolve_fast_path(cfg, dev))
    assert fast_model.state_dict().keys() == plain_model.state_dict().keys()
    loss_fn = build_loss(cfg, trial_data).to(dev)
    kw = {"channels": "rgb", "mean": mean, "std": std, "device": dev}
    plain_batch = [next(iter(BatchLoader(split, 32, **kw)))]
    fast_batch = [next(iter(DeviceArrayLoader(split, 32, **kw)))]
    assert torch.equal(plain_batch[0][0], fast_batch[0][0])

    plain = train_one_epoch(
        plain_model, plain_batch, loss_fn, build_optimizer(plain_model, cfg), cfg, 0, 1, amp=False
    )
    fast = train_one_epoch(
        fast_model, fast_batch, loss_fn, build_optimizer(fast_model, cfg), cfg, 0, 1, amp=True
    )
    assert fast.loss == pytest.approx(plain.loss, rel=2e-2)
    # after one step each, both models predict the same batch alike
    after_plain = predict(plain_model, plain_batch, loss_fn, amp=False)
    after_fast = predict(fast_model, fast_batch, loss_fn, amp=True)
    assert after_fast.loss == pytest.approx(after_plain.loss, rel=3e-2)
    assert np.abs(after_fast.probs - after_plain.probs).max() < 0.05


def test_a_trial_on_the_fast_path_trains_and_its_checkpoint_loads_into_a_plain_model(trial_data):
    cfg = TrialConfig(
        image_size=32, batch_size=32, channels="rgb", max_epochs=2, fast_path="on", augment=True
    )
    outcomes = list(run_epochs(cfg, trial_data, device=CPU))
    assert [o.epoch for o in outcomes] == [1, 2]
    assert all(np.isfinite(o.metrics["val_loss"]) for o in outcomes)
    plain = build_model(cfg.model_copy(update={"fast_path": "off"}))
    plain.load_state_dict(outcomes[-1].model.state_dict())
    fast_val = outcomes[-1].val
    again = predict_split(
        plain,
        cfg.model_copy(update={"fast_path": "off"}),
        trial_data.split(32, VAL),
        trial_data.channel_stats[32],
        build_loss(cfg, trial_data),
    )
    assert again.loss == pytest.approx(fast_val.loss, rel=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_cuda_auto_trains_on_the_fast_path_with_data_on_the_gpu(trial_data):
    cfg = TrialConfig(image_size=32, batch_size=32, channels="rgb", max_epochs=1, augment=True)
    cuda = torch.device("cuda")
    fast = resolve_fast_path(cfg, cuda)
    assert fast.enabled and fast.amp and not fast.compile
    args = (trial_data.split(32, TRAIN), trial_data.split(32, VAL), trial_data.channel_stats[32])
    train, _ = trial_loaders(cfg, *args, cuda, fast)
    assert isinstance(train, DeviceArrayLoader) and train.images.is_cuda
    (outcome,) = run_epochs(cfg, trial_data, device=cuda)
    assert np.isfinite(outcome.metrics["val_loss"])


def test_refit_and_predict_batches_take_the_fast_path_and_give_the_plain_paths_probabilities(
    trial_data,
):
    from hpa_tune.refit.ensemble import predict_probs
    from hpa_tune.train.fast_path import prediction_batches

    cfg = TrialConfig(image_size=32, batch_size=16, channels="rgb", fast_path="on")
    split, stats = trial_data.split(32, VAL), trial_data.channel_stats[32]
    torch.manual_seed(0)
    model = build_model(cfg)
    plain_model, plain = prediction_batches(
        copy.deepcopy(model), cfg.model_copy(update={"fast_path": "off"}), split, stats
    )
    fast_model, fast = prediction_batches(copy.deepcopy(model), cfg, split, stats)
    assert isinstance(plain, BatchLoader) and plain.batch_size == 16
    assert isinstance(fast, PinnedPrefetchLoader) and fast.batch_size == 64
    for tta in (False, True):
        expected = predict_probs(plain_model, plain, tta)
        np.testing.assert_allclose(predict_probs(fast_model, fast, tta), expected, atol=1e-4)
