"""A real TensorBoard, started by ``hpa-tune tensorboard`` on loopback over the shared search,
asked through its own HTTP data API what a user's browser would show: every trial in the
HParams table with its values and four metrics, pruned ones included, and the per-class curves."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.report.tensorboard_events import STATUS_CODES

pytestmark = pytest.mark.ray

HOST_PORT = ("--host", "127.0.0.1", "--port")
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
METRICS = {
    "macro_f1/best_val": "best_val_macro_f1",
    "macro_f1/val": "val_macro_f1",
    "trial/epochs": "epochs",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _session_groups(url: str, **request: object) -> list[dict]:
    body = {"startIndex": 0, "sliceSize": 1000, "allowedStatuses": ALL_STATUSES, **request}
    return _post(f"{url}data/plugin/hparams/session_groups", body)["sessionGroups"]


def _table_loaded(url: str, n_trials: int) -> bool:
    """TensorBoard loads event files in the background: wait for every session and metric."""
    groups = _session_groups(url)
    return len(groups) == n_trials and all(
        len(g["sessions"][0]["metricValues"]) == 4 for g in groups
    )


def _wait_until(check, timeout_s: float, proc: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tensorboard exited with {proc.returncode} before {what}"
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(1)
    raise AssertionError(f"tensorboard: no {what} after {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def summary(searched_experiment) -> pd.DataFrame:
    return pd.read_csv(searched_experiment[0] / "summary.csv", dtype={"trial_id": str})


@pytest.fixture(scope="module")
def tensorboard(searched_experiment, summary, tmp_path_factory):
    """``hpa-tune tensorboard EXP`` on 127.0.0.1 and a free port, once every trial is loaded;
    yields (base URL, printed lines). Stopped with Ctrl-C (SIGINT), killed if it lingers."""
    exp_dir, _ = searched_experiment
    port = _free_port()
    log = tmp_path_factory.mktemp("tensorboard") / "stdout.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpa_tune.cli",
                "tensorboard",
                str(exp_dir),
                *HOST_PORT,
                str(port),
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until(lambda: "TensorBoard at" in log.read_text(), 60, proc, "URL printed")
        _wait_until(lambda: _table_loaded(url, len(summary)), 120, proc, "complete HParams table")
        yield url, log.read_text().splitlines()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_cli_prints_the_url_it_serves(tensorboard):
    url, lines = tensorboard
    assert lines[0] == f"TensorBoard at {url} (Ctrl-C to stop)"


def test_hparams_experiment_declares_the_searched_params_and_four_metrics(tensorboard):
    url, _ = tensorboard
    experiment = _post(f"{url}data/plugin/hparams/experiment", {"experimentName": ""})
    assert {h["name"] for h in experiment["hparamInfos"]} == {"lr", "batch_size", "loss_weighting"}
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == [
        "macro_f1/best_val",
        "macro_f1/val",
        "trial/epochs",
        "trial/status",
    ]


def test_every_trial_is_a_session_with_its_hyperparameters_and_four_metrics(tensorboard, summary):
    url, _ = tensorboard
    groups = {g["name"]: g for g in _session_groups(url)}
    assert set(groups) == set(summary["trial_id"])
    for _, row in summary.iterrows():
        group = groups[row["trial_id"]]
        assert group["hparams"]["lr"] == pytest.approx(row["param:lr"])
        assert group["hparams"]["batch_size"] == row["param:batch_size"]
        assert group["hparams"]["loss_weighting"] == row["param:loss_weighting"]
        metrics = {m["name"]["tag"]: m["value"] for m in group["sessions"][0]["metricValues"]}
        for tag, column in METRICS.items():
            assert metrics[tag] == pytest.approx(row[column], rel=1e-6), (row["trial_id"], tag)
        assert metrics["trial/status"] == STATUS_CODES[row["status"]]


def test_pruned_trials_are_listed_and_a_status_filter_finds_exactly_them(tensorboard, summary):
    url, _ = tensorboard
    pruned = set(summary.loc[summary["status"] == "pruned", "trial_id"])
    assert pruned, "the shared search is meant to prune some trials"
    status_is_pruned = {
        "metric": {"group": "", "tag": "trial/status"},
        "filterInterval": {"minValue": 1, "maxValue": 1},
    }
    found = _session_groups(url, colParams=[status_is_pruned])
    assert {g["name"] for g in found} == pruned
    assert all(g["sessions"][0]["status"] == "STATUS_SUCCESS" for g in found)


def test_each_trial_run_has_28_per_class_f1_curves_and_the_epoch_curves(tensorboard, summary):
    url, _ = tensorboard
    tags = _get(f"{url}data/plugin/scalars/tags")
    for _, row in summary.iterrows():
        run = f"trial_{row['trial_id']}"
        class_tags = [t for t in tags[run] if t.startswith("val_class_f1/")]
        assert len(class_tags) == 28, run
        assert {"loss/train", "loss/val", "macro_f1/val", "lr", "images_per_s"} <= set(tags[run])
        query = f"run={run}&tag=val_class_f1/00_Nucleoplasm"
        series = _get(f"{url}data/plugin/scalars/scalars?{query}")
        assert [point[1] for point in series] == list(range(1, row["epochs"] + 1))


def test_refit_run_has_per_class_pr_curves_and_labelled_val_images(tensorboard):
    url, _ = tensorboard
    assert len(_get(f"{url}data/plugin/pr_curves/tags")["refit"]) == 28
    images = _get(f"{url}data/plugin/images/tags")["refit"]
    assert {t.rsplit("/", 1)[1] for t in images} == {"rgb", "yellow"} and len(images) == 16
    assert _get(f"{url}data/plugin/text/tags")["refit"] == ["val_images/labels/text_summary"]


def test_cli_on_a_directory_without_logs_prints_one_line_and_exits_2(tmp_path: Path):
    result = CliRunner().invoke(main, ["tensorboard", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'missing' / 'tensorboard'}: no TensorBoard logs; "
        "expected an experiment directory written by hpa-tune run"
    ]
