"""Resources per trial, resolved against what the cluster has and what its autoscaler can add."""

from pathlib import Path

import pytest
import yaml

from hpa_tune.errors import HpaTuneError
from hpa_tune.ray_layer.cluster_resources import (
    NodeType,
    fits,
    node_types_from_config,
    resolve_cpus,
    resolve_gpus,
    resolve_trial_resources,
)

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
CPU_HEAD = {"CPU": 8.0, "memory": 3e10}  # the head that is up: CPUs, no GPU
GPU_TYPES = [
    NodeType("ray.worker.gpu", {"CPU": 4, "GPU": 1}, max_workers=4),
    NodeType("ray.worker.4gpu", {"CPU": 48, "GPU": 4}, max_workers=2),
]


def test_gpus_auto_uses_a_gpu_only_where_a_node_has_one():
    assert resolve_gpus("auto", 0.0) == 0.0
    assert resolve_gpus("auto", 8.0) == 1.0
    assert resolve_gpus(0.5, 1.0) == 0.5
    with pytest.raises(HpaTuneError, match="has 0 GPU"):
        resolve_gpus(1, 0.0)


def test_cpus_per_trial_is_capped_at_one_node_so_trials_can_start():
    assert resolve_cpus(4, 2.0) == 2.0
    assert resolve_cpus(1, 16.0) == 1.0
    assert resolve_cpus(0.5, 2.0) == 0.5


def test_a_trial_fits_a_node_with_at_least_its_cpus_and_gpus():
    assert fits(4, 1, {"CPU": 4, "GPU": 1})
    assert not fits(4, 2, {"CPU": 48, "GPU": 1})
    assert not fits(5, 0, {"CPU": 4})


def test_a_gpu_trial_on_a_cpu_head_fits_a_gpu_type_the_autoscaler_can_launch():
    got = resolve_trial_resources(2, 1, [CPU_HEAD], GPU_TYPES)
    assert (got.cpus, got.gpus, got.notes) == (2, 1, ())


def test_gpus_auto_is_one_when_any_node_type_has_a_gpu_even_with_none_up():
    assert resolve_trial_resources(1, "auto", [CPU_HEAD], GPU_TYPES).gpus == 1
    assert resolve_trial_resources(1, "auto", [CPU_HEAD], []).gpus == 0


def test_a_request_no_node_type_can_ever_fit_is_an_error_naming_the_types():
    with pytest.raises(HpaTuneError) as err:
        resolve_trial_resources(1, 8, [CPU_HEAD], GPU_TYPES)
    message = str(err.value)
    assert "1 CPU and 8 GPU" in message
    assert "ray.worker.gpu (4 CPU, 1 GPU, up to 4)" in message
    assert "ray.worker.4gpu (48 CPU, 4 GPU, up to 2)" in message
    assert "\n" not in message


def test_cpus_are_capped_at_the_largest_node_that_has_the_gpus_asked_for():
    got = resolve_trial_resources(16, 1, [CPU_HEAD], GPU_TYPES[:1])
    assert (got.cpus, got.gpus) == (4, 1)
    assert "cpus_per_trial 16 > the 4 CPUs" in got.notes[0]
    assert resolve_trial_resources(16, 2, [CPU_HEAD], GPU_TYPES).cpus == 16  # the 4-GPU type


def test_without_an_autoscaler_a_trial_is_checked_against_the_largest_node_up_not_the_sum():
    two_nodes = [{"CPU": 2.0}, {"CPU": 3.0, "GPU": 1.0}]
    got = resolve_trial_resources(8, "auto", two_nodes, None)
    assert (got.cpus, got.gpus) == (3, 1)  # the GPU node's 3 CPUs, not the cluster's 5
    assert "cpus_per_trial 8 > the 3 CPUs of the largest node" in got.notes[0]
    assert resolve_trial_resources(8, 0, two_nodes, None).cpus == 3
    with pytest.raises(HpaTuneError, match="has 0 GPU"):
        resolve_trial_resources(1, 1, [CPU_HEAD], None)


def test_two_eight_cpu_nodes_do_not_hold_a_sixteen_cpu_trial():
    got = resolve_trial_resources(16, 0, [{"CPU": 8.0}, {"CPU": 8.0}], None)
    assert (got.cpus, got.gpus) == (8, 0)
    assert got.notes == ("cpus_per_trial 16 > the 8 CPUs of the largest node: using 8",)


def test_two_one_gpu_nodes_refuse_a_two_gpu_trial_in_one_line():
    one_gpu_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    with pytest.raises(HpaTuneError) as err:
        resolve_trial_resources(1, 2, one_gpu_nodes, None)
    message = str(err.value)
    assert "gpus_per_trial is 2" in message and "largest node" in message and "has 1 GPU" in message
    assert "\n" not in message
    assert resolve_trial_resources(1, 1, one_gpu_nodes, None).gpus == 1


def test_cpus_are_capped_at_the_largest_node_up_that_has_the_gpus_asked_for():
    nodes = [{"CPU": 32.0}, {"CPU": 4.0, "GPU": 1.0}]
    got = resolve_trial_resources(16, 1, nodes, None)
    assert (got.cpus, got.gpus) == (4, 1)


def test_node_types_of_an_autoscaling_config_leave_out_the_head_and_types_never_launched():
    config = {
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 2}, "max_workers": 0},
            "gpu": {"resources": {"CPU": 2, "GPU": 1}, "min_workers": 0, "max_workers": 3},
            "off": {"resources": {"CPU": 64}, "max_workers": 0},
        },
    }
    assert node_types_from_config(config) == [NodeType("gpu", {"CPU": 2, "GPU": 1}, 3)]


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_the_shipped_cluster_configs_can_run_a_one_gpu_trial(name):
    types = node_types_from_config(yaml.safe_load((CLUSTER / name).read_text()))
    got = resolve_trial_resources(1, "auto", [{"CPU": 2.0}], types)
    assert got.gpus == 1 and any(t.resources.get("GPU") for t in types)
