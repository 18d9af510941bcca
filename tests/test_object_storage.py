"""The bucket workflow end to end on moto's S3 server: prepare -> run -> refit -> predict ->
report, all on ``s3://``; corrupt shards named; no credential ever written; objects the bucket
held before (planted by the test beside and inside every prefix we write) intact after each
command."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.data.node_cache import EVENTS_FILE
from hpa_tune.storage import filesystems as storage
from tests.conftest import (
    FAKE_AWS_KEY_ID,
    FAKE_AWS_SECRET,
    SMALL_SOURCE,
    ForeignFiles,
    files_holding,
    write_kaggle_dir,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY_SPACE = {
    "metric": "val_macro_f1",
    "mode": "max",
    "budget": {"num_samples": 2, "max_epochs": 1},
    "scheduler": {"type": "fifo"},
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    # Two trials at once on this one node: both go through the node's shard cache together.
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
    "fixed": {"image_size": 32, "channels": "rgb", "arch": "baseline_cnn", "batch_size": 16},
    "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
}


@pytest.fixture(scope="module")
def bucket_study(s3_endpoint, ray_runtime, tmp_path_factory):
    """``prepare --out s3://`` then ``run --data s3:// --storage s3://`` (with refit), via the CLI."""
    import boto3

    root = tmp_path_factory.mktemp("bucket-study")
    name = f"hpa-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    write_kaggle_dir(root / "raw", 56, n_test=5, size=SMALL_SOURCE)
    data, runs = f"s3://{name}/shards", f"s3://{name}/runs"
    foreign = ForeignFiles()
    for where in (f"s3://{name}", data, runs, f"{runs}/t-notes"):
        foreign.plant(where)
    foreign.plant(f"s3://{name}", ("shards-v1/manifest.json", "shards.txt", "runs/t.txt"))
    prepared = CliRunner().invoke(
        main, ["prepare", str(root / "raw"), "--out", data, "--sizes", "32", "--workers", "1"]
    )
    assert prepared.exit_code == 0, prepared.output
    foreign.assert_intact()
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    result = CliRunner().invoke(
        main,
        ["run", str(space), "--data", data, "--storage", runs, "--name", "t", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    foreign.assert_intact()
    return name, data, f"{runs}/t", root, foreign


def test_prepare_to_a_bucket_publishes_shards_and_the_manifest(bucket_study):
    _, data, _, _, foreign = bucket_study
    files = storage.list_files(data)
    assert "manifest.json" in files and "rejected.csv" in files
    assert any(f.startswith("size_32/train-") for f in files)
    foreign.assert_intact()


def test_a_search_on_bucket_data_writes_its_results_to_the_bucket(bucket_study):
    _, data, exp, _, foreign = bucket_study
    files = storage.list_files(exp)
    for name in ("run.json", "space.yaml", "summary.csv", "history.csv", "best.json"):
        assert name in files
    assert "refit/model.pt" in files and "refit/metrics.json" in files
    assert any(f.startswith("tensorboard/") for f in files)
    assert any(f.startswith("trial_") and "checkpoint_" in f for f in files)  # written by Ray
    foreign.assert_intact()
    assert yaml.safe_load(storage.read_bytes(f"{exp}/run.json"))["data_dir"] == data


def test_two_concurrent_trials_fetch_and_decode_once_and_map_one_file(bucket_study):
    cache_root = Path(os.environ["HPA_TUNE_SHARD_CACHE"])
    _, data, _, _, foreign = bucket_study
    lines = [line.split() for line in (cache_root / EVENTS_FILE).read_text().splitlines()]
    ours = [line for line in lines if data in " ".join(line)]
    fetched = [line[3] for line in ours if line[2] == "fetched"]
    assert len(fetched) == len(set(fetched))  # every shard fetched once on this node
    assert {f.rsplit("/", 1)[1].split("-")[0] for f in fetched} >= {"train", "val"}
    # "decoded SPLIT@SIZE -> FILE": other tests' data sets decode the same split names elsewhere.
    decoded = [(line[3], line[5]) for line in lines if line[2] == "decoded"]
    assert len(decoded) == len(set(decoded))  # each split of each data set decoded once
    hits = [line for line in ours if line[2] == "hit"]
    assert hits  # later readers (the other trial, the refit) hit the cache
    # This data set's cache entry (other tests' data sets are mapped from entries of their own).
    entry = hashlib.sha256(storage.read_bytes(f"{data}/manifest.json")).hexdigest()[:16]
    train_maps = [
        line for line in lines if line[2] == "mapped" and f"/{entry}-32/train.images" in line[3]
    ]
    trial_pids = {line[1] for line in train_maps}
    assert len(trial_pids) >= 2  # the two trials (and the driver's refit) ...
    assert len({(line[3], line[4]) for line in train_maps}) == 1  # ... mapped one file
    foreign.assert_intact()


def test_refit_predict_and_report_work_on_a_bucket_experiment(bucket_study, tmp_path):
    _, data, exp, _, foreign = bucket_study
    runner = CliRunner()
    refit = runner.invoke(main, ["refit", exp, "--all-trials"])
    assert refit.exit_code == 0, refit.output
    foreign.assert_intact()
    # --all-trials scored each trial's checkpoint, fetched from the bucket where Ray wrote it.
    scores = storage.read_bytes(f"{exp}/trial_scores.csv").decode().splitlines()
    assert len(scores) == 1 + 2
    sub = tmp_path / "submission.csv"
    predict = runner.invoke(main, ["predict", f"{exp}/refit", "--data", data, "--out", str(sub)])
    assert predict.exit_code == 0, predict.output
    foreign.assert_intact()
    assert len(sub.read_text().splitlines()) == 1 + 5
    report = runner.invoke(main, ["report", exp, "--table"])
    assert report.exit_code == 0, report.output
    foreign.assert_intact()
    table = storage.read_bytes(f"{exp}/report/study_table.csv").decode()
    assert table.count("trial checkpoint") == 2  # trial_scores.csv came down with the experiment
    report = runner.invoke(main, ["report", exp])
    assert report.exit_code == 0, report.output
    foreign.assert_intact()
    assert f"{exp}/report/report.html" in report.output
    assert storage.is_file(f"{exp}/report/report.html")


def test_no_credential_appears_in_any_written_file(bucket_study, tmp_path):
    name, _, exp, root, foreign = bucket_study
    CliRunner().invoke(main, ["report", exp, "--table"])
    foreign.assert_intact()
    secrets = (FAKE_AWS_KEY_ID.encode(), FAKE_AWS_SECRET.encode())
    leaks = files_holding(secrets, f"s3://{name}", [root])
    assert storage.list_files(f"s3://{name}")  # the scan saw the bucket
    assert leaks == []


def test_a_corrupt_shard_in_the_bucket_is_a_one_line_error_naming_it(
    bucket_study, tmp_path, monkeypatch
):
    _, data, exp, _, foreign = bucket_study
    shard = next(f for f in storage.list_files(data) if f.startswith("size_32/test-"))
    original = storage.read_bytes(f"{data}/{shard}")
    storage.write_bytes(f"{data}/{shard}", original[:-64] + b"\0" * 64)
    monkeypatch.setenv("HPA_TUNE_SHARD_CACHE", str(tmp_path / "fresh-cache"))
    try:
        result = CliRunner().invoke(
            main, ["predict", f"{exp}/refit", "--data", data, "--out", str(tmp_path / "s.csv")]
        )
    finally:
        storage.write_bytes(f"{data}/{shard}", original)
    foreign.assert_intact()
    assert result.exit_code == 2
    assert f"{data}/{shard}" in result.output and "sha256 does not match" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_tensorboard_reads_the_bucket_experiment_through_a_synced_copy(bucket_study):
    from hpa_tune.storage.staging import local_experiment
    from tests.conftest import load_events

    _, _, exp, _, foreign = bucket_study
    best_trial = yaml.safe_load(storage.read_bytes(f"{exp}/best.json"))["trial_id"]
    with local_experiment(exp, upload=False, only=("tensorboard/",)) as copy:
        assert sorted(p.name for p in copy.iterdir()) == ["tensorboard"]
        run = load_events(copy / "tensorboard" / f"trial_{best_trial}")
        assert "trial/status" in run.Tags()["scalars"]
    assert not copy.exists()  # the copy is gone afterwards
    foreign.assert_intact()


def test_resuming_a_finished_bucket_search_restores_it_from_the_bucket(bucket_study):
    _, _, exp, _, foreign = bucket_study
    before = storage.read_bytes(f"{exp}/summary.csv")
    result = CliRunner().invoke(main, ["resume", exp, "--no-refit"])
    assert result.exit_code == 0, result.output
    foreign.assert_intact()
    assert result.output.strip().splitlines()[-1] == f"experiment: {exp}"
    # Nothing was left to run: the same two trials, the same results, written back to the bucket.
    assert storage.read_bytes(f"{exp}/summary.csv") == before
    trial_dirs = {f.split("/")[0] for f in storage.list_files(exp) if f.startswith("trial_")}
    assert len(trial_dirs - {"trial_scores.csv"}) == 2
