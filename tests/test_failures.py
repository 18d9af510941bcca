"""When things go wrong in a search or a submission: the real cause in one line, nothing left out."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.errors import HpaTuneError
from hpa_tune.ray_layer.trial_errors import error_summary
from tests.conftest import SEARCH_SPACE
from tests.test_prepare import png_claiming


def test_error_summary_keeps_our_error_not_the_last_line_of_the_chain():
    try:
        try:
            raise RuntimeError("invalid load key, 'x'.\n\nPlease file an issue with this trace")
        except RuntimeError as exc:
            raise HpaTuneError("cannot read pretrained weights from /w.pth: invalid key") from exc
    except HpaTuneError as err:
        chained = err
    wrapper = type("RayTaskError(HpaTuneError)", (HpaTuneError,), {})("ray::ImplicitFunc.train()")
    wrapper.cause = chained  # as Ray's RayTaskError carries the original
    expected = "HpaTuneError: cannot read pretrained weights from /w.pth: invalid key"
    assert error_summary(chained) == expected
    assert error_summary(wrapper) == expected
    assert error_summary(ValueError("first\nsecond")) == "ValueError: first"
    assert error_summary(None) is None


def test_every_trial_failing_keeps_the_real_cause_and_quiet_prints_no_traceback(
    ray_runtime, sample_shards, tmp_path, capfd
):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"this is not a state dict")
    space = tmp_path / "space.yaml"
    budget = {"num_samples": 2, "max_epochs": 1}
    fixed = {**SEARCH_SPACE["fixed"], "pretrained": str(weights)}
    space.write_text(yaml.safe_dump({**SEARCH_SPACE, "budget": budget, "fixed": fixed}))
    result = CliRunner().invoke(
        main,
        [
            *("run", str(space), "--data", str(sample_shards)),
            *("--storage", str(tmp_path / "r"), "--name", "failing", "--quiet"),
        ],
    )
    console = result.output + capfd.readouterr().err
    assert result.exit_code == 2, console
    assert "Traceback" not in console
    last = result.output.strip().splitlines()[-1]
    cause = f"cannot read pretrained weights from {weights}"
    assert (
        last.startswith("error: no trial reported val_macro_f1; every trial failed")
        and cause in last
    )
    summary = pd.read_csv(tmp_path / "r" / "failing" / "summary.csv")
    assert (summary["status"] == "error").all() and summary["error"].str.contains(cause).all()


def _sample_raw_copy(sample_shards: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    raw = tmp_path / "raw"
    shutil.copytree(sample_shards.parent / "raw", raw)
    with (raw / "sample_submission.csv").open(newline="") as f:
        ids = [row["Id"] for row in csv.DictReader(f)]
    return raw, ids


def _submission(path: Path) -> list[str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(row["Predicted"].strip() for row in rows)
    return [row["Id"] for row in rows]


def test_predict_from_shards_writes_every_test_id_including_ones_prepare_rejected(
    searched_experiment, sample_shards, tmp_path
):
    exp, _ = searched_experiment
    raw, ids = _sample_raw_copy(sample_shards, tmp_path)
    (raw / "test" / f"{ids[3]}_green.png").write_bytes(b"truncated")
    prepare(raw, tmp_path / "shards", PrepareOptions(sizes=(32,), workers=1, expected_size=64))
    out = tmp_path / "sub.csv"
    result = CliRunner().invoke(
        main, ["predict", str(exp / "refit"), "--data", str(tmp_path / "shards"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert _submission(out) == ids  # every Id, in sample_submission order
    assert f"warning: 1 of {len(ids)} test Id(s) have no readable image" in result.output
    assert ids[3] in result.output and "most frequent class" in result.output


def test_predict_from_raw_survives_a_decompression_bomb(
    searched_experiment, sample_shards, tmp_path
):
    exp, _ = searched_experiment
    raw, ids = _sample_raw_copy(sample_shards, tmp_path)
    (raw / "test" / f"{ids[0]}_red.png").write_bytes(png_claiming(30000, 30000))
    out = tmp_path / "sub.csv"
    result = CliRunner().invoke(
        main,
        ["predict", str(exp / "refit"), "--data", str(raw), "--out", str(out), "--workers", "1"],
    )
    assert result.exit_code == 0, result.output
    assert _submission(out) == ids
    assert f"warning: 1 of {len(ids)} test Id(s)" in result.output and ids[0] in result.output
