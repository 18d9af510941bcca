"""The bucket workflow on ``gs://``, against a GCS emulator on loopback reached through
``STORAGE_EMULATOR_HOST``: prepare -> run -> refit -> predict -> report; nothing secret written;
objects the bucket held before intact after each command."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pyarrow.fs as pafs
import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.storage import filesystems as storage
from tests.conftest import (
    FAKE_AWS_KEY_ID,
    FAKE_AWS_SECRET,
    SMALL_SOURCE,
    ForeignFiles,
    files_holding,
    write_kaggle_dir,
)
from tests.test_object_storage import TINY_SPACE

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _create_bucket(endpoint: str, name: str) -> None:
    """Buckets belong to a project: made with pyarrow's GCS client given one (our code never
    creates buckets)."""
    gcs = pafs.GcsFileSystem(
        anonymous=True,
        scheme="http",
        endpoint_override=urlsplit(endpoint).netloc,
        project_id="hpa-tune-test",
    )
    gcs.create_dir(name)


@pytest.fixture(scope="module")
def gcs_study(gcs_endpoint, ray_runtime, tmp_path_factory):
    """``prepare --out gs://`` then ``run --data gs:// --storage gs://`` (with refit), via the CLI."""
    root = tmp_path_factory.mktemp("gcs-study")
    name = f"hpa-{uuid.uuid4().hex[:12]}"
    _create_bucket(gcs_endpoint, name)
    write_kaggle_dir(root / "raw", 56, n_test=5, size=SMALL_SOURCE)
    data, runs = f"gs://{name}/shards", f"gs://{name}/runs"
    foreign = ForeignFiles()
    for where in (f"gs://{name}", data, runs):
        foreign.plant(where)
    foreign.plant(f"gs://{name}", ("shards-v1/manifest.json", "runs/g.txt"))
    prepared = CliRunner().invoke(
        main, ["prepare", str(root / "raw"), "--out", data, "--sizes", "32", "--workers", "1"]
    )
    assert prepared.exit_code == 0, prepared.output
    foreign.assert_intact()
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    result = CliRunner().invoke(
        main, ["run", str(space), "--data", data, "--storage", runs, "--name", "g", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    foreign.assert_intact()
    return name, data, f"{runs}/g", root, foreign


def test_a_search_on_gcs_data_writes_its_results_to_the_bucket(gcs_study):
    _, data, exp, _, foreign = gcs_study
    assert "manifest.json" in storage.list_files(data)
    files = storage.list_files(exp)
    for name in ("run.json", "space.yaml", "summary.csv", "best.json", "refit/model.pt"):
        assert name in files
    assert any(f.startswith("tensorboard/") for f in files)
    assert any(f.startswith("trial_") and "checkpoint_" in f for f in files)  # written by Ray
    assert len(storage.read_bytes(f"{exp}/summary.csv").decode().splitlines()) == 1 + 2
    assert yaml.safe_load(storage.read_bytes(f"{exp}/run.json"))["data_dir"] == data
    foreign.assert_intact()


def test_refit_predict_and_report_work_on_a_gcs_experiment(gcs_study, tmp_path):
    _, data, exp, _, foreign = gcs_study
    runner = CliRunner()
    refit = runner.invoke(main, ["refit", exp])
    assert refit.exit_code == 0, refit.output
    foreign.assert_intact()
    sub = tmp_path / "submission.csv"
    predict = runner.invoke(main, ["predict", f"{exp}/refit", "--data", data, "--out", str(sub)])
    assert predict.exit_code == 0, predict.output
    foreign.assert_intact()
    assert len(sub.read_text().splitlines()) == 1 + 5
    report = runner.invoke(main, ["report", exp, "--table"])
    assert report.exit_code == 0, report.output
    foreign.assert_intact()
    assert storage.is_file(f"{exp}/report/study_table.csv")


def test_no_credential_or_endpoint_appears_in_any_file_we_write(gcs_study, gcs_endpoint):
    name, _, exp, root, foreign = gcs_study
    secrets = (FAKE_AWS_KEY_ID.encode(), FAKE_AWS_SECRET.encode(), gcs_endpoint.encode())
    leaks = files_holding(secrets, f"gs://{name}", [root])
    assert storage.list_files(exp)  # the scan saw the experiment
    assert leaks == []
    foreign.assert_intact()
