"""Peak-memory estimates of a trial and the packing rule built on them."""

from __future__ import annotations

import pytest
import torch
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.errors import HpaTuneError
from hpa_tune.models import create_model
from hpa_tune.ray_layer.cluster_resources import NodeType, resolve_trial_resources
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.gpu_memory import (
    GIB,
    GPU_MEMORY_ENV,
    MemoryEstimate,
    check_configs_fit,
    check_packing,
    config_label,
    costliest_candidates,
    estimate_trial_peak,
    saved_activation_bytes,
    trials_per_gpu,
)
from tests.conftest import SEARCH_SPACE, resnet_freeze_param


def _real_saved_bytes(arch: str, batch: int, size: int) -> int:
    """Bytes autograd saves in a real CPU forward, each storage once, parameters excluded."""
    torch.manual_seed(0)
    model = create_model(arch, in_chans=3, image_size=size).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(batch, 3, size, size))
    return sum(storages.values())


@pytest.mark.parametrize("arch", ["baseline_cnn", "resnet18"])
def test_meta_device_count_equals_a_real_cpu_forward(arch):
    counted, trainable, _ = saved_activation_bytes(arch, 3, 32, 4, "none")
    assert counted == pytest.approx(_real_saved_bytes(arch, 4, 32), rel=0.05)
    model = create_model(arch, in_chans=3)
    assert trainable == sum(p.numel() for p in model.parameters())


def test_estimate_grows_with_batch_and_image_size_and_shrinks_with_bf16():
    small = estimate_trial_peak(TrialConfig(arch="resnet18", image_size=64, batch_size=32))
    bigger_batch = estimate_trial_peak(TrialConfig(arch="resnet18", image_size=64, batch_size=64))
    bigger_image = estimate_trial_peak(TrialConfig(arch="resnet18", image_size=128, batch_size=32))
    fp32 = estimate_trial_peak(
        TrialConfig(arch="resnet18", image_size=64, batch_size=32), amp=False
    )
    assert small.peak < bigger_batch.peak and small.peak < bigger_image.peak
    assert bigger_batch.activations == pytest.approx(2 * small.activations, rel=0.01)
    assert fp32.activations == 2 * small.activations


def test_frozen_layers_need_no_gradients_or_optimiser_state():
    full = estimate_trial_peak(TrialConfig(arch="resnet18", image_size=64))
    frozen = estimate_trial_peak(
        TrialConfig(arch="resnet18", image_size=64, freeze="fc", pretrained="imagenet")
    )
    assert frozen.parameters < full.parameters / 2
    assert frozen.activations < full.activations / 100  # nothing to back-propagate through


def _estimate(peak_gib: float) -> MemoryEstimate:
    peak = int(peak_gib * GIB)
    return MemoryEstimate("densenet161 at 512 px, batch 64", peak, 0, 0, 0, peak)


def test_a_packing_that_cannot_fit_is_refused_with_the_estimate_in_the_message():
    with pytest.raises(HpaTuneError) as err:
        check_packing([_estimate(5.0), _estimate(30.0)], 0.25, 80 * GIB)
    message = str(err.value)
    assert "30.0 GiB" in message and "densenet161 at 512 px, batch 64" in message
    assert "4 trials per GPU" in message and "20.0 GiB" in message


def test_a_packing_that_fits_passes_and_whole_gpus_are_not_checked():
    check_packing([_estimate(19.0)], 0.25, 80 * GIB)
    check_packing([_estimate(500.0)], 1.0, 80 * GIB)


def test_fractional_gpus_per_trial_are_accepted_and_pack_the_expected_number():
    one_gpu_node = [{"CPU": 8.0, "GPU": 1.0}]
    for gpus in (0.5, 0.25):
        assert resolve_trial_resources(2, gpus, one_gpu_node, None).gpus == gpus
        launchable = [NodeType("gpu", {"CPU": 8.0, "GPU": 1.0})]
        assert resolve_trial_resources(2, gpus, [{"CPU": 2.0}], launchable).gpus == gpus
    assert [trials_per_gpu(g) for g in (1.0, 0.5, 0.25, 0.125, 0.3)] == [1, 2, 4, 8, 3]


def test_device_resident_data_counts_only_when_it_fits_its_share(monkeypatch):
    monkeypatch.setenv(GPU_MEMORY_ENV, "16")
    cfg = TrialConfig(arch="baseline_cnn", image_size=64, batch_size=32)
    small_data = check_configs_fit([cfg], 0.5, {64: 1000})[0]
    assert small_data.data > 0
    too_much = check_configs_fit([cfg], 0.5, {64: 10_000_000})[0]
    assert too_much.data == 0  # the trial keeps such arrays on the host (pinned path)


def test_run_refuses_a_packing_that_cannot_fit_before_any_trial_starts(
    sample_shards, tmp_path, monkeypatch
):
    monkeypatch.setenv(GPU_MEMORY_ENV, "1")
    space = tmp_path / "space.yaml"
    heavy = {**SEARCH_SPACE, "fixed": {**SEARCH_SPACE["fixed"], "arch": "resnet18"}}
    heavy["params"] = {
        **SEARCH_SPACE["params"],
        "batch_size": {"type": "categorical", "choices": [64]},
    }
    space.write_text(yaml.safe_dump(heavy))
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(space),
            "--data",
            str(sample_shards),
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "packed",
            "--gpus-per-trial",
            "0.125",
            "--quiet",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "8 trials per GPU" in result.output and "GiB" in result.output
    assert "resnet18 at 32 px, batch 64" in result.output
    assert not list((tmp_path / "runs" / "packed").glob("trial_*"))


def test_only_configurations_no_other_outgrows_in_every_cost_are_estimated():
    def cfg(**kw):
        return TrialConfig(**{"arch": "resnet18", "pretrained": "imagenet", **kw})

    configs = [
        cfg(batch_size=16, channels="rgby", optimizer="adam", freeze="none"),
        cfg(batch_size=64, channels="rgby", optimizer="adam", freeze="none"),
        cfg(batch_size=64, channels="rgb", optimizer="adam", freeze="none"),
        cfg(batch_size=64, channels="rgby", optimizer="sgd", freeze="none"),
        cfg(batch_size=64, channels="rgby", optimizer="adamw", freeze="none"),  # ties adam
        cfg(batch_size=64, channels="rgby", optimizer="adam", freeze="layer4"),
        cfg(arch="baseline_cnn", pretrained="none", batch_size=16),  # another architecture
    ]
    kept = costliest_candidates([(c, 0) for c in configs])
    assert [config_label(c) for c, _ in kept] == [
        "resnet18 at 64 px, batch 64, rgby, freeze none, adam",
        "baseline_cnn at 64 px, batch 16, rgb, freeze none, adam",
    ]
    # Data kept on the device is a cost too: a larger image whose data stays on the host does
    # not outgrow a smaller one whose data is on the GPU.
    small, large = cfg(image_size=32), cfg(image_size=64)
    assert len(costliest_candidates([(small, 10**9), (large, 0)])) == 2


def test_run_checks_the_costliest_configuration_of_the_space_not_a_random_sample(
    sample_shards, tmp_path, monkeypatch
):
    # One configuration in 1024 is the costliest; 24 random samples would almost never meet it.
    space = {
        **SEARCH_SPACE,
        "fixed": {"image_size": 32, "pretrained": "imagenet", "fast_path": "off"},
        "params": {
            "arch": {"type": "categorical", "choices": ["baseline_cnn", "resnet18"]},
            "resnet_freeze": resnet_freeze_param("fc", "none"),
            "batch_size": {"type": "int", "low": 1, "high": 64},
            "channels": {"type": "categorical", "choices": ["rgb", "rgby"]},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        },
    }

    def peak(**kw):
        values = {"arch": "resnet18", "image_size": 32, "batch_size": 64, "channels": "rgby"}
        # fast_path off: the run estimates these in fp32 (no autocast)
        return estimate_trial_peak(TrialConfig(**{**values, **kw}), data_bytes=0, amp=False).peak

    worst = peak()
    runner_up = max(peak(batch_size=63), peak(channels="rgb"), peak(optimizer="sgd"))
    assert runner_up < worst
    share = (worst + runner_up) / 2  # only the costliest configuration does not fit
    monkeypatch.setenv(GPU_MEMORY_ENV, str(2 * share / GIB))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    result = CliRunner().invoke(
        main,
        [
            *("run", str(tmp_path / "space.yaml"), "--data", str(sample_shards)),
            *("--storage", str(tmp_path / "runs"), "--name", "packed"),
            *("--gpus-per-trial", "0.5", "--quiet"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert (
        "the costliest configuration, resnet18 at 32 px, batch 64, rgby, freeze none, adam"
        in result.output
    )
    assert "2 trials per GPU" in result.output


def test_a_trial_with_the_fast_path_off_is_estimated_in_fp32(monkeypatch):
    monkeypatch.setenv(GPU_MEMORY_ENV, "16")
    bf16 = TrialConfig(arch="baseline_cnn", image_size=64, batch_size=32)
    fp32 = bf16.model_copy(update={"fast_path": "off"})
    [fast], [plain] = check_configs_fit([bf16], 0.5, {}), check_configs_fit([fp32], 0.5, {})
    assert plain.activations == 2 * fast.activations  # fast_path off: no bf16 autocast
