"""Joining a cluster with Ray's token authentication, and the device a Ray worker trains on."""

import logging
from pathlib import Path

import pytest

from hpa_tune.ray_layer.cluster import init_ray, join_auth_mode, token_source, trial_device


def test_a_token_is_found_where_ray_looks_env_then_path_then_home(tmp_path: Path):
    home = tmp_path / "home"
    assert token_source({}, home) is None
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("t" * 32)
    assert token_source({}, home) == str(home / ".ray" / "auth_token")
    custom = tmp_path / "token"
    custom.write_text("u" * 32)
    assert token_source({"RAY_AUTH_TOKEN_PATH": str(custom)}, home) == str(custom)
    assert token_source({"RAY_AUTH_TOKEN": "v" * 32}, home) == "$RAY_AUTH_TOKEN"


def test_a_driver_joining_by_address_uses_the_token_unless_a_mode_was_chosen():
    assert join_auth_mode({}, "/root/.ray/auth_token") == "token"
    assert join_auth_mode({}, None) is None  # nothing to send: Ray's own error, with our hint
    assert join_auth_mode({"RAY_AUTH_MODE": "disabled"}, "/t") is None


def test_a_logical_gpu_without_cuda_falls_back_to_the_cpu_with_a_warning():
    device, warning = trial_device([0], cuda_available=False)
    assert device == "cpu" and "GPU 0" in warning and "no CUDA" in warning
    assert trial_device([0], cuda_available=True) == ("cuda", None)
    assert trial_device([], cuda_available=False) == ("cpu", None)


def test_the_cpu_fallback_is_logged_once_per_process(monkeypatch, caplog):
    import ray

    import hpa_tune.ray_layer.cluster as rc

    monkeypatch.setattr(rc, "_cpu_fallback_logged", False)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="hpa_tune.ray_layer.cluster"):
        assert [rc.assigned_device() for _ in range(3)] == ["cpu"] * 3
    assert sum("no CUDA" in r.message for r in caplog.records) == 1


# What ray/_private/process_watcher.py publishes to every driver when a node's raylet dies.
RAYLET_DIED = (
    "Raylet is terminated. Termination is unexpected. Possible reasons include: (1) SIGKILL by "
    "the user or system OOM killer, (2) Invalid memory access from Raylet causing SIGSEGV or "
    "SIGBUS, (3) Other termination signals. Last 20 lines of the Raylet logs:\n"
    "    [2026-12-07 00:00:00,000 I 1 1] (raylet) node_manager.cc:1: [state-dump] NodeManager:\n"
    "    [2026-12-07 00:00:00,000 I 1 1] (raylet) node_manager.cc:1: [state-dump] Pool: 2\n"
)


@pytest.mark.ray
def test_a_lost_nodes_raylet_log_stays_out_of_the_driver_console(ray_runtime, capsys):
    import ray._private.worker as ray_worker

    init_ray()  # Ray is up (the fixture): joins nothing, but sets up the driver's console
    ray_worker.print_to_stdstream(
        {"lines": [RAYLET_DIED], "pid": "raylet", "is_err": False}, ignore_prefix=False
    )

    out = capsys.readouterr().out
    assert "Raylet is terminated. Termination is unexpected." in out
    assert "[state-dump]" not in out and len(out.strip().splitlines()) == 1
