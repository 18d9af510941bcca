"""Specification tests for the model registry (hpa_tune.models)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from hpa_tune.models import (
    CapsNet,
    PretrainedWeightsNotFoundError,
    adapt_input_conv,
    count_trainable_parameters,
    create_model,
    get_model_info,
    list_models,
)

MODEL_NAMES = [info.name for info in list_models()]
REQUIRED_MODELS = {
    "baseline_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "densenet161",
    "densenet169",
    "capsnet",
}

# Written out independently of the registry: parameter-name prefixes that must train.
_DENSE4 = ("features.denseblock4.", "features.norm5.", "classifier.")
EXPECTED_TRAINABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "baseline": {"head": ("head.",)},
    "resnet": {
        "fc": ("fc.",),
        "layer4": ("layer4.", "fc."),
        "layer3": ("layer3.", "layer4.", "fc."),
    },
    "densenet": {
        "classifier": ("classifier.",),
        "denseblock4": _DENSE4,
        "denseblock3": ("features.denseblock3.", "features.transition3.", *_DENSE4),
    },
    "capsnet": {"routing": ("class_capsules.",)},
}
FREEZE_CASES = [(info.name, level) for info in list_models() for level in info.freeze_levels]


def _batch(channels: int, size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def test_registry_holds_the_study_models_with_consistent_info():
    assert set(MODEL_NAMES) >= REQUIRED_MODELS
    sizes = {"baseline": 64, "resnet": 224, "densenet": 224, "capsnet": 32}
    for info in list_models():
        assert info.native_size == sizes[info.family]
        assert info.freeze_levels[-1] == "none"
        assert set(info.freeze_levels[:-1]) == set(EXPECTED_TRAINABLE[info.family])
        assert get_model_info(info.name) == info


@pytest.mark.parametrize("in_chans", [3, 4])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_forward_backward_at_native_size(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans)
    size = get_model_info(name).native_size
    logits = model(_batch(in_chans, size))
    assert logits.shape == (2, 28)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_accepts_its_minimum_and_a_non_native_size(name):
    info = get_model_info(name)
    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        for size in (info.min_size, info.min_size + 24):
            assert model(_batch(4, size, n=1)).shape == (1, 5)


@pytest.mark.parametrize(("name", "level"), FREEZE_CASES)
def test_freeze_level_trains_exactly_expected_parameters(name, level):
    info = get_model_info(name)
    model = create_model(name, freeze=level)
    expected = EXPECTED_TRAINABLE[info.family].get(level, ("",))  # "none": everything
    names = dict(model.named_parameters())
    trainable = {n for n, p in names.items() if p.requires_grad}
    # RGBY (the default): a frozen stem's yellow filter trains too.
    yellow = {f"{info.stem_conv}.yellow_weight"} if level != "none" else set()
    assert trainable == {n for n in names if n.startswith(expected)} | yellow
    assert trainable, "some parameters must train at every level"
    assert count_trainable_parameters(model) == sum(names[n].numel() for n in trainable)
    # Every BatchNorm outside the trainable part is frozen, every one inside is not.
    for module_name, module in model.named_modules():
        inside = (module_name + ".").startswith(expected)
        if isinstance(module, nn.BatchNorm2d):
            assert inside, module_name
        if isinstance(module, FrozenBatchNorm2d):
            assert not inside, module_name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_frozen_batchnorm_statistics_do_not_change_after_a_training_step(name):
    torch.manual_seed(0)
    info = get_model_info(name)
    level = info.freeze_levels[-2]  # least frozen: has frozen and (mostly) trainable BNs
    trainable_prefixes = EXPECTED_TRAINABLE[info.family][level]
    # CapsNet built for 64 px has a BN stage in its (frozen) front end.
    model = create_model(name, freeze=level, image_size=64)
    model.train()
    before = _running_stats(model)
    frozen_params = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(_batch(4, 64) * 3 + 1).sum().backward()
    optimizer.step()
    model.train()  # a later train() must not undo the freezing either
    model(_batch(4, 64) * 3 + 1)
    after = _running_stats(model)
    frozen = [k for k in before if not k.startswith(trainable_prefixes)]
    live = [k for k in before if k.startswith(trainable_prefixes)]
    assert frozen
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    for key, value in frozen_params.items():
        assert torch.equal(model.get_parameter(key), value), key
    if info.family in ("resnet", "densenet"):  # the others have no BN in the trainable part
        assert any(not torch.equal(after[k], before[k]) for k in live)


def _running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    }


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as err:
        create_model("resnet19")
    for name in MODEL_NAMES:
        assert name in str(err.value)


def test_unknown_freeze_level_lists_the_models_levels():
    with pytest.raises(ValueError, match="unknown freeze level 'layer2'") as err:
        create_model("resnet18", freeze="layer2")
    for level in ("fc", "layer4", "layer3", "none"):
        assert level in str(err.value)


@pytest.mark.parametrize("in_chans", [1, 2, 5])
def test_bad_in_chans_names_the_valid_values(in_chans):
    with pytest.raises(ValueError, match=r"3 \(red, green, blue\) or 4"):
        create_model("baseline_cnn", in_chans=in_chans)


def test_adapt_input_conv_keeps_rgb_and_starts_yellow_at_zero():
    rgb = torch.randn(8, 3, 5, 5)
    rgby = adapt_input_conv(rgb, 4)
    assert rgby.shape == (8, 4, 5, 5)
    assert torch.equal(rgby[:, :3], rgb)
    assert torch.equal(rgby[:, 3], torch.zeros_like(rgb[:, 0]))
    assert adapt_input_conv(rgb, 3) is rgb
    assert torch.equal(adapt_input_conv(rgby, 3), rgb)
    with pytest.raises(ValueError, match="in_chans"):
        adapt_input_conv(rgb, 5)


def _save(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state_dict, path)
    return path


@pytest.mark.parametrize(
    ("name", "stem", "head"),
    [
        ("resnet18", "conv1.weight", "fc"),
        ("densenet121", "features.conv0.weight", "classifier"),
    ],
)
def test_local_pretrained_state_dict_loads(tmp_path, name, stem, head):
    torch.manual_seed(1)
    saved = torchvision.models.get_model(name, weights=None).state_dict()
    path = _save(saved, tmp_path / f"{name}.pth")
    loaded = create_model(name, in_chans=4, pretrained=str(path)).state_dict()
    assert torch.equal(loaded[stem][:, :3], saved[stem])
    assert torch.equal(loaded[stem][:, 3], torch.zeros_like(saved[stem][:, 0]))
    assert loaded[f"{head}.weight"].shape == (28, saved[f"{head}.weight"].shape[1])
    for key, value in saved.items():
        if key != stem and not key.startswith(head + "."):
            assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hpa_tune_state_dict_round_trips(tmp_path, name):
    original = create_model(name, in_chans=4, freeze=get_model_info(name).freeze_levels[0])
    path = _save(original.state_dict(), tmp_path / "model.pt")
    reloaded = create_model(name, in_chans=4, pretrained=path).state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(reloaded[key], value), key


def test_state_dict_with_foreign_keys_is_rejected_naming_keys_and_file(tmp_path):
    state = create_model("baseline_cnn").state_dict()
    state["features.9.conv.weight"] = torch.zeros(1)
    state["features.1.conv.weight"] = torch.zeros(3, 3, 3, 3)
    del state["features.2.bn.bias"]
    path = _save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        create_model("baseline_cnn", pretrained=path)
    message = str(err.value)
    for part in ("bad.pth", "features.9.conv.weight", "features.1.conv.weight", "bn.bias"):
        assert part in message


def test_missing_pretrained_path_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        create_model("resnet18", pretrained=str(missing))


def test_imagenet_for_models_without_imagenet_weights_is_a_value_error():
    with pytest.raises(ValueError, match="no ImageNet weights exist for 'capsnet'"):
        create_model("capsnet", pretrained="imagenet")


def test_imagenet_offline_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HPA_TUNE_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsNotFoundError) as err:
        create_model("resnet18", pretrained="imagenet")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_imagenet_weights_load_from_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HPA_TUNE_OFFLINE", "1")  # any download attempt would fail
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(2)
    fake = torchvision.models.resnet18(weights=None).state_dict()
    _save(fake, cache / os.path.basename(url))
    loaded = create_model("resnet18", in_chans=3, pretrained="imagenet").state_dict()
    for key, value in fake.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert loaded["fc.weight"].shape == (28, 512)


def test_imagenet_densenet_checkpoint_with_legacy_key_names_loads(tmp_path, monkeypatch):
    # torchvision's published DenseNet files name layers "norm.1" where models use "norm1".
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HPA_TUNE_OFFLINE", "1")
    torch.manual_seed(3)
    fresh = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in fresh.items()
    }
    assert legacy.keys() != fresh.keys()
    url = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    _save(legacy, tmp_path / "hub" / "checkpoints" / os.path.basename(url))
    loaded = create_model("densenet121", in_chans=3, pretrained="imagenet").state_dict()
    for key, value in fresh.items():
        if not key.startswith("classifier."):
            assert torch.equal(loaded[key], value), key


def test_failed_imagenet_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("HPA_TUNE_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(PretrainedWeightsNotFoundError, match="network is unreachable") as err:
        create_model("resnet18", pretrained="imagenet")
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in str(err.value)


def test_capsnet_sigmoid_of_output_is_the_capsule_length():
    torch.manual_seed(0)
    model = create_model("capsnet").eval()
    x = _batch(4, 32, n=4)
    with torch.no_grad():
        lengths = model.capsule_lengths(x)
        probabilities = torch.sigmoid(model(x))
    assert ((lengths >= 0) & (lengths < 1)).all()
    torch.testing.assert_close(probabilities, lengths.clamp(1e-6, 1 - 1e-6))
    torch.testing.assert_close(lengths, model.capsules(x).norm(dim=-1))


def test_capsnet_routing_iterations_change_the_output():
    torch.manual_seed(0)
    one = create_model("capsnet", routing_iters=1).eval()
    three = create_model("capsnet", routing_iters=3).eval()
    three.load_state_dict(one.state_dict())
    x = _batch(4, 32)
    with torch.no_grad():
        assert not torch.allclose(one(x), three(x))


def test_capsnet_parameter_count_barely_grows_with_image_size():
    small = create_model("capsnet", image_size=32)
    large = create_model("capsnet", image_size=64)
    larger = create_model("capsnet", image_size=128)
    assert isinstance(large, CapsNet)
    n32, n64, n128 = (count_trainable_parameters(m) for m in (small, large, larger))
    assert n32 < 3_000_000
    assert n64 < 1.25 * n32 and n128 < 1.05 * n64
    for model, size in ((small, 32), (large, 64), (larger, 128)):
        logits = model(_batch(4, size))
        assert logits.shape == (2, 28)
        logits.sum().backward()


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_pretrained_rgby_model_answers_like_the_rgb_model_for_an_empty_normalised_yellow(
    tmp_path, name
):
    torch.manual_seed(2)
    path = _save(torchvision.models.get_model(name, weights=None).state_dict(), tmp_path / "w.pth")
    torch.manual_seed(3)
    rgb_model = create_model(name, in_chans=3, pretrained=str(path)).eval()
    torch.manual_seed(3)  # the same fresh 28-class head in both
    rgby_model = create_model(name, in_chans=4, pretrained=str(path)).eval()
    mean, std = 0.08, 0.12  # a yellow channel's train statistics, as the loader applies them
    x = torch.randn(2, 4, 64, 64)
    x[:, 3] = (0.0 - mean) / std  # an empty (all-zero) yellow channel after normalisation
    with torch.no_grad():
        torch.testing.assert_close(rgby_model(x), rgb_model(x[:, :3]))
        x[:, 3] = torch.randn(2, 64, 64)  # and whatever yellow holds, before training
        torch.testing.assert_close(rgby_model(x), rgb_model(x[:, :3]))


@pytest.fixture(scope="module")
def rgb_state_dict(tmp_path_factory):
    """``path(name)``: an RGB (3-channel) state dict file of model ``name``, written on first
    use: pretrained RGB weights, as ImageNet's are."""
    directory = tmp_path_factory.mktemp("rgb_weights")

    def path(name):
        file = directory / f"{name}.pt"
        if not file.is_file():
            torch.manual_seed(0)
            torch.save(create_model(name, in_chans=3).state_dict(), file)
        return file

    return path


RGBY_FROZEN_CASES = [(name, level) for name, level in FREEZE_CASES if level != "none"]


@pytest.mark.parametrize(("name", "level"), RGBY_FROZEN_CASES)
def test_a_frozen_rgby_stem_learns_its_yellow_filter_and_keeps_its_rgb_filters(
    name, level, rgb_state_dict
):
    from hpa_tune.train.config import TrialConfig
    from hpa_tune.train.engine import build_optimizer

    info = get_model_info(name)
    stem_key = f"{info.stem_conv}.weight"
    torch.manual_seed(0)
    model = create_model(name, in_chans=4, freeze=level, pretrained=rgb_state_dict(name))
    before = model.state_dict()[stem_key].clone()
    assert torch.count_nonzero(before[:, 3]) == 0  # adapted from RGB: yellow starts at zero
    cfg = TrialConfig(arch=name, optimizer="adamw", lr=0.01, weight_decay=0.1)
    optimizer = build_optimizer(model, cfg)
    x = _batch(4, max(info.min_size, 32))
    model(x).sum().backward()
    optimizer.step()
    after = model.state_dict()[stem_key]
    assert torch.count_nonzero(after[:, 3]) > 0, "the yellow filter must learn"
    assert torch.equal(after[:, :3], before[:, :3]), "the frozen RGB filters must not move"
    # The state dict has the plain stem's keys, and loads back into the split stem.
    assert not any("yellow_weight" in key or "rgb_weight" in key for key in model.state_dict())
    with torch.no_grad():
        model.get_parameter(f"{info.stem_conv}.yellow_weight").zero_()
    model.load_state_dict({**model.state_dict(), stem_key: after})
    assert torch.equal(model.state_dict()[stem_key], after)
