"""Joining a cluster with Ray's token authentication, and the device a Ray worker trains on."""

import logging
from pathlib import Path

from hpa_tune.ray_layer.cluster import join_auth_mode, token_source, trial_device


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
