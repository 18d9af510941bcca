"""cluster/gpu.yaml: valid for Ray's own cluster launcher, and its commands match our CLI."""

import re
from pathlib import Path

import pytest
import yaml

from hpa_tune.cli import main

GPU_YAML = Path(__file__).resolve().parents[1] / "cluster" / "gpu.yaml"


def test_gpu_cluster_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(GPU_YAML.read_text())
    validate_config(prepare_config(config))  # what `ray up` runs first; raises on a bad key
    assert config["available_node_types"]["ray.worker.gpu"]["node_config"]["InstanceType"]


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
    used = re.findall(r"(?:\"|&& )hpa-tune (\w+)([^\"\n]*)", text)
    assert {cmd for cmd, _ in used} >= {"run", "tensorboard"}
    for cmd, rest in used:
        command = main.commands[cmd]
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option in re.findall(r"(--[\w-]+)", rest):
            assert option in known, f"hpa-tune {cmd} has no {option}"
