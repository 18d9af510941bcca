"""The cluster path on one machine: Ray's autoscaler (``fake_multinode``, from cluster/local.yaml)
adds GPU worker nodes for 1-GPU trials, the trials and the refit run on them (a refit's members
each as a Ray task of its own, at once), and the driver joins with only ``RAY_ADDRESS`` and a
token file (Ray's token authentication)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpa_tune.search.experiment import write_run
from hpa_tune.search.planning import RunOptions, plan_run
from hpa_tune.search.results import write_results
from hpa_tune.search.trial_table import TrialRecord
from tests.conftest import SEARCH_SPACE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOCAL_YAML = Path(__file__).resolve().parents[1] / "cluster" / "local.yaml"
SPACES = LOCAL_YAML.parents[1] / "search_spaces"
HEAD_NODE_ID = "f" * 51 + "00000"  # what Ray's fake provider calls the head


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _python(code: str, env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """Stop this test's head and every node its autoscaler started: only our processes (the head's
    process group, then any process whose command line names our private temp dir)."""
    import ray  # noqa: F401, I001  (puts Ray's bundled psutil on the path)
    import psutil

    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(head.pid, sig)
            head.wait(wait)
            break
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A head (1 CPU, no GPU) started with Ray's own command from cluster/local.yaml, on private
    ports and a private temp dir, token authentication on; yields (address, driver env)."""
    import ray

    tmp_path = tmp_path_factory.mktemp("fake-cluster")
    temp_dir = tempfile.mkdtemp(prefix="hpa-fc-", dir="/tmp")  # short: Ray's socket paths
    ip = ray._private.services.get_node_ip_address()
    port = _free_port()
    config = yaml.safe_load(LOCAL_YAML.read_text())
    config["provider"]["gcs_address"] = f"{ip}:{port}"  # the fake nodes join this head, not :6379
    config_path = tmp_path / "local.yaml"
    config_path.write_text(yaml.safe_dump(config))
    token = tmp_path / "auth_token"
    token.write_text("hpa" * 11)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    head_env = {
        **base,
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--autoscaling-config={config_path}",
            f"--port={port}",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--num-cpus=1",
            "--num-gpus=0",
            "--object-store-memory=300000000",
            "--disable-usage-stats",
        ],
        env=head_env,
        stdout=(tmp_path / "head.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped without touching other Rays
    )
    # The driver gets the address and where the token is; RAY_AUTH_MODE is left to hpa-tune.
    driver_env = {**base, "RAY_ADDRESS": f"{ip}:{port}", "RAY_AUTH_TOKEN_PATH": str(token)}
    try:
        yield f"{ip}:{port}", driver_env
    finally:
        _stop_head(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


NODES = """
import json, os, ray
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "gpus": n["Resources"].get("GPU", 0)} for n in ray.nodes()]))
"""


def test_gpu_trials_make_the_autoscaler_add_gpu_nodes_and_run_there_with_the_refit(
    fake_cluster, sample_shards, tmp_path
):
    _, env = fake_cluster
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump({**SEARCH_SPACE, "scheduler": {"type": "fifo"}, "resources": {}})
    )
    started = time.monotonic()
    run = subprocess.run(
        [
            *(sys.executable, "-m", "hpa_tune.cli", "run", str(space)),
            *("--data", str(sample_shards), "--storage", str(tmp_path / "runs"), "--name", "c"),
            *("--num-samples", "3", "--max-epochs", "1", "--max-concurrent", "3"),
            *("--cpus-per-trial", "1", "--gpus-per-trial", "1", "--quiet"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"search + refit: {time.monotonic() - started:.0f}s\n{run.stdout}")
    exp = tmp_path / "runs" / "c"
    nodes = json.loads(_python(NODES, {**env, "RAY_AUTH_MODE": "token"}).strip().splitlines()[-1])
    gpu_nodes = {n["id"] for n in nodes if n["gpus"] >= 1}
    # The head has no GPU: every GPU node is one the autoscaler added for the waiting trials.
    assert HEAD_NODE_ID in {n["id"] for n in nodes} and HEAD_NODE_ID not in gpu_nodes
    assert len(gpu_nodes) >= 2

    summary = pd.read_csv(exp / "summary.csv")
    assert len(summary) == 3 and set(summary["status"]) == {"completed"}
    trial_nodes = set(summary["node_id"])
    # Every trial ran on a GPU node the autoscaler added. How many distinct nodes depends on
    # timing: with actor reuse a short trial's worker may take the next trial before the other
    # added nodes are up.
    assert trial_nodes <= gpu_nodes and len(trial_nodes) >= 1
    history = pd.read_csv(exp / "history.csv")
    assert set(history["node_id"]) == trial_nodes

    info = json.loads((exp / "refit" / "model_info.json").read_text())
    assert info["node_id"] in gpu_nodes
    assert json.loads((exp / "run.json").read_text())["gpus_per_trial"] == 1
    # A logical GPU without CUDA: the refit trained on the CPU and said so, once.
    assert run.stdout.count("no CUDA; training on the CPU") == 1


def test_joining_without_the_token_says_in_one_line_what_is_missing(
    fake_cluster, sample_shards, tmp_path
):
    _, env = fake_cluster
    home = tmp_path / "home"  # no ~/.ray/auth_token here
    home.mkdir()
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"HOME": str(home)}
    run = subprocess.run(
        [
            *(sys.executable, "-m", "hpa_tune.cli", "run", str(SPACES / "demo_space.yaml")),
            *("--data", str(sample_shards), "--storage", str(tmp_path), "--set", "image_size=32"),
            *("--num-samples", "1", "--max-epochs", "1", "--no-refit", "--quiet"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: RAY_ADDRESS=") and "no Ray auth token found" in last
    assert "ray get-auth-token" in last


# Two learning rates that learn, and one so absurd that SGD's loss is non-finite in epoch 1.
STEADY, OTHER, DIVERGES = 1e-3, 3e-3, 1e30


def _hand_made_experiment(tmp_path: Path, sample_shards: Path) -> Path:
    """A finished 1-GPU-per-trial experiment written from hand-made trial records (no search, no
    checkpoints: the refit retrains every member), ranked steady, other, lucky."""
    space = {
        "metric": "val_macro_f1",
        "mode": "max",
        "budget": {"num_samples": 3, "max_epochs": 2},
        "scheduler": {"type": "fifo"},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1},
        "fixed": {
            "image_size": 32,
            "channels": "rgb",
            "arch": "baseline_cnn",
            "batch_size": 16,
            "optimizer": "sgd",
        },
        "params": {"lr": {"type": "categorical", "choices": [STEADY, OTHER, DIVERGES]}},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    plan = plan_run(
        RunOptions(space_path=path, storage=tmp_path / "runs", name="members"),
        sample_shards,
        builtin_sample=False,
    )
    plan.exp_dir.mkdir(parents=True)
    write_run(plan.exp_dir, plan.record, plan.spec)
    records = [
        TrialRecord(
            trial_id,
            {"lr": lr},
            "baseline_cnn",
            [
                {"epoch": e, "val_macro_f1": v, "val_loss": 1.0, "train_loss": 1.0}
                for e, v in enumerate(scores, start=1)
            ],
        )
        for trial_id, lr, scores in (
            ("steady", STEADY, [0.3, 0.5]),
            ("other", OTHER, [0.3, 0.45]),
            ("lucky", DIVERGES, [0.2, 0.4]),
        )
    ]
    write_results(plan, records)
    return plan.exp_dir


def test_refit_members_train_at_once_as_ray_tasks_and_one_that_diverges_is_skipped(
    fake_cluster, sample_shards, tmp_path
):
    _, env = fake_cluster
    exp = _hand_made_experiment(tmp_path, sample_shards)
    run = subprocess.run(
        [sys.executable, "-m", "hpa_tune.cli", "refit", str(exp), "--top-k", "3", "--no-tta"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout)
    assert "refit: 3 members retrain as Ray tasks of their own, each with 1 CPU and 1 GPU" in (
        run.stdout
    )
    # The same warning as when the members train one after another in one process.
    assert (
        "warning: refit: member 3/3 skipped, retraining trial lucky failed: "
        "non-finite train loss at epoch 1" in run.stdout
    )
    metrics = json.loads((exp / "refit" / "metrics.json").read_text())
    assert metrics["candidates"] == ["steady", "other"]
    tasks = metrics["member_tasks"]
    assert sorted(tasks) == ["other", "steady"]
    a, b = tasks["steady"], tasks["other"]
    # Each member trained on a GPU node of its own, or at least at the same time as the other.
    assert HEAD_NODE_ID not in {a["node_id"], b["node_id"]}
    overlap = a["started"] < b["ended"] and b["started"] < a["ended"]
    assert a["node_id"] != b["node_id"] or overlap, tasks
    ensemble = json.loads((exp / "refit" / "ensemble.json").read_text())
    assert [m["ray_task"] for m in ensemble["members"]] == [a, b]
