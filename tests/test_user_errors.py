"""Every user error is one line and exit 2, found before any work starts; nothing is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.errors import HpaTuneError
from hpa_tune.models import create_model
from hpa_tune.models.pretrained import PretrainedWeightsNotFoundError
from hpa_tune.search.experiment import RunRecord, write_run
from hpa_tune.search.planning import RunOptions, plan_run
from hpa_tune.search.space import parse_space
from tests.conftest import SEARCH_SPACE


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result) -> str:
    """The single line a user error prints (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SEARCH_SPACE))
    return path


def _run(space: Path, tmp_path: Path, *extra: object):
    """``run`` on data that does not exist: an error about anything else was found first."""
    return _cli(
        "run", space, "--data", tmp_path / "no-such-data", "--storage", tmp_path / "r", *extra
    )


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--num-samples", "0", "'--num-samples': 0 is not in the range x>=1"),
        ("--num-samples", "-1", "'--num-samples': -1 is not in the range x>=1"),
        ("--max-epochs", "0", "'--max-epochs': 0 is not in the range x>=1"),
        ("--max-concurrent", "0", "'--max-concurrent': 0 is not in the range x>=1"),
    ],
)
def test_non_positive_budgets_are_refused_before_any_work(space, tmp_path, option, value, expected):
    line = one_line_error(_run(space, tmp_path, option, value))
    assert expected in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("pair", ["lr=[1", "arch=@x", "batch_size={a: 1"])
def test_a_set_value_that_is_not_yaml_is_one_line(space, tmp_path, pair):
    line = one_line_error(_run(space, tmp_path, "--set", pair))
    assert f"--set {pair}: the value is not valid YAML" in line


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x00\x01\x02binary\xff\xfe", "not UTF-8 text (byte 0xff)"),
        ("metric: val_macro_f1\nfixed: {arch: caf\xe9}\n".encode("latin-1"), "line 2: not UTF-8"),
        (b"\x00\x01\x02\x03", "not valid YAML"),
        (b"params:\n  lr: {type: float, low: 1\n  x: [\n", "not valid YAML: line"),
        (b"params: [unclosed\n", "not valid YAML: line"),
    ],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_broken_space_file_is_one_line(space, tmp_path, content, expected, command):
    space.write_bytes(content)
    result = _cli(command, space) if command == "check" else _run(space, tmp_path)
    line = one_line_error(result)
    assert str(space) in line and expected in line


def test_several_problems_in_a_space_are_reported_on_one_line(tmp_path):
    with pytest.raises(HpaTuneError) as err:
        parse_space({"budget": {"num_samples": 0, "max_epochs": 0}, "oops": 1}, "s.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "budget.num_samples" in message and "budget.max_epochs" in message
    assert "unknown key 'oops'" in message


def test_storage_under_a_file_is_refused_before_loading_data(space, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error(
        _cli("run", space, "--data", tmp_path / "nope", "--storage", tmp_path / "afile" / "r")
    )
    assert "--storage" in line and "is a file" in line


def test_read_only_storage_is_refused_before_loading_data(space, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a read-only fs
        storage = Path("/sys/hpa-tune-results")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        storage = tmp_path / "ro" / "results"
    line = one_line_error(_cli("run", space, "--data", tmp_path / "nope", "--storage", storage))
    assert f"--storage {storage}: cannot write there" in line


def test_an_existing_experiment_name_is_refused_naming_resume(space, tmp_path):
    exp = tmp_path / "r" / "taken"
    exp.mkdir(parents=True)
    (exp / "summary.csv").write_text("old results")
    line = one_line_error(_run(space, tmp_path, "--name", "taken"))
    assert f"hpa-tune resume {exp}" in line and "another --name" in line
    assert (exp / "summary.csv").read_text() == "old results"


def test_run_json_records_the_data_directory_as_an_absolute_path(space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_run(RunOptions(space_path=space), Path("shards"), builtin_sample=False)
    assert plan.record.data_dir == str(tmp_path / "shards")


@pytest.mark.parametrize("pretrained", [False, None, "none"])
def test_create_model_accepts_false_for_random_init(pretrained):
    model = create_model("baseline_cnn", pretrained=pretrained)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_create_model_reads_true_as_imagenet(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HPA_TUNE_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsNotFoundError, match="ImageNet weights for resnet18"):
        create_model("resnet18", pretrained=True)


def test_predict_given_a_trial_checkpoint_is_one_line(tmp_path):
    trial = tmp_path / "trial_abc" / "checkpoint_000002"
    trial.mkdir(parents=True)
    (trial / "model.pt").write_bytes(b"weights")
    (trial / "config.json").write_text("{}")
    line = one_line_error(_cli("predict", trial, "--data", tmp_path, "--out", tmp_path / "sub.csv"))
    assert "a trial checkpoint, not a refit model" in line and "hpa-tune refit" in line


def test_report_on_an_experiment_where_every_trial_failed_is_one_line(tmp_path):
    exp = tmp_path / "exp"
    spec = parse_space(SEARCH_SPACE, "space.yaml").model_copy(update={"name": "s"})
    write_run(exp, RunRecord("s.yaml", str(tmp_path), False, {}, 2, 2, 0, [32]), spec)
    cause = "HpaTuneError: cannot read pretrained weights from /w.pth"
    pd.DataFrame(
        [
            {"trial_id": t, "arch": "baseline_cnn", "epochs": 0, "status": "error", "error": cause}
            for t in ("a", "b")
        ]
    ).to_csv(exp / "summary.csv", index=False)
    pd.DataFrame().to_csv(exp / "history.csv", index=False)
    for extra in ([], ["--table"]):
        line = one_line_error(_cli("report", exp, *extra))
        assert "no trial reported an epoch" in line and cause in line
    assert json.loads((exp / "run.json").read_text())["num_samples"] == 2


def _run_on(sample_shards: Path, space: Path, tmp_path: Path, *extra: object):
    return _cli(
        *("run", space, "--data", sample_shards, "--storage", tmp_path / "r", "--name", "x"),
        *("--no-refit", "--quiet", *extra),
    )


def test_an_image_size_the_shards_were_not_prepared_at_is_refused_before_ray(
    space, sample_shards, tmp_path
):
    line = one_line_error(_run_on(sample_shards, space, tmp_path, "--set", "image_size=48"))
    assert "image size 48 was not prepared; prepared sizes: [32]" in line
    assert str(sample_shards) in line
    assert not list((tmp_path / "r").glob("x/trial_*"))


def _read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a read-only fs
        return Path("/sys")
    (tmp_path / "ro").mkdir(mode=0o555)
    return tmp_path / "ro"


@pytest.mark.parametrize("where", ["file", "read-only", "under a file"])
def test_a_shard_cache_that_cannot_be_written_is_refused_before_ray_naming_the_variable(
    space, sample_shards, tmp_path, monkeypatch, where
):
    (tmp_path / "afile").write_text("x")
    cache = {
        "file": tmp_path / "afile",
        "read-only": _read_only_dir(tmp_path),
        "under a file": tmp_path / "afile" / "cache",
    }[where]
    monkeypatch.setenv("HPA_TUNE_SHARD_CACHE", str(cache))
    line = one_line_error(_run_on(sample_shards, space, tmp_path))
    assert f"HPA_TUNE_SHARD_CACHE={cache}:" in line
    assert ("not a directory" if where == "file" else "cannot write the shard cache") in line
    assert not list((tmp_path / "r").glob("x/trial_*"))


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_shard_cache_limit_that_is_not_a_number_of_gb_names_the_variable(
    space, sample_shards, tmp_path, monkeypatch, value
):
    monkeypatch.setenv("HPA_TUNE_SHARD_CACHE_GB", value)
    line = one_line_error(_run_on(sample_shards, space, tmp_path))
    assert f"HPA_TUNE_SHARD_CACHE_GB='{value}': expected a number of GB" in line
