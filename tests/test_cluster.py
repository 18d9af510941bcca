"""cluster/gpu.yaml and cluster/local.yaml: valid for Ray's own cluster launcher, and their
commands match our CLI."""

import re
from pathlib import Path

import pytest
import yaml

from hpa_tune.cli import main

GPU_YAML = Path(__file__).resolve().parents[1] / "cluster" / "gpu.yaml"
LOCAL_YAML = GPU_YAML.with_name("local.yaml")


@pytest.mark.parametrize("path", [GPU_YAML, LOCAL_YAML], ids=["gpu.yaml", "local.yaml"])
def test_cluster_configs_pass_rays_own_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    # What `ray up` runs first. The fake_multinode provider ships no defaults to merge in, so
    # local.yaml must be complete by itself.
    validate_config(prepare_config(config) if path == GPU_YAML else config)
    gpu_types = [
        t for t in config["available_node_types"].values() if t.get("resources", {}).get("GPU")
    ]
    assert gpu_types and config["available_node_types"][config["head_node_type"]]


def test_the_aws_cluster_has_a_cpu_head_one_and_four_gpu_types_and_a_spot_option():
    config = yaml.safe_load(GPU_YAML.read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not head["resources"].get("GPU") and head["node_config"]["InstanceType"]
    gpus = sorted(t["resources"]["GPU"] for t in types.values() if t["resources"].get("GPU"))
    assert 1 in gpus and 4 in gpus
    spot = [t for t in types.values() if "InstanceMarketOptions" in t["node_config"]]
    assert spot and spot[0]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert (
        config["docker"]["image"].startswith("rayproject/ray:")
        and "-gpu" in config["docker"]["image"]
    )
    assert any("pip install" in c and "~/hpa-tune" in c for c in config["setup_commands"])


def test_every_key_of_the_aws_cluster_file_is_commented():
    lines = GPU_YAML.read_text().splitlines()
    for i, line in enumerate(lines):
        top_key = re.match(r"^(\w+):", line)
        if top_key:
            assert lines[i - 1].startswith("#"), f"{top_key.group(1)} has no comment above it"


def test_ray_validation_would_catch_a_misspelt_key():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(GPU_YAML.read_text())
    config["max_workerz"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_hpa_tune_commands_in_the_cluster_file_use_options_that_exist():
    text = GPU_YAML.read_text().replace("\\\n#", " ")
    # Commands, not prose: `hpa-tune` right after a quote or `&&`.
    used = re.findall(r"(?:\"|&& )(?:[A-Z_]+=\S+ )*hpa-tune (\w+)([^\"\n]*)", text)
    assert {cmd for cmd, _ in used} >= {"run", "tensorboard"}
    for cmd, rest in used:
        command = main.commands[cmd]
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option in re.findall(r"(--[\w-]+)", rest):
            assert option in known, f"hpa-tune {cmd} has no {option}"
