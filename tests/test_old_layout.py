"""An experiment saved before hpa_tune was split into subpackages still works after the move.

``tests/fixtures/old_layout_experiment`` is a real 2-trial search (baseline CNN, 32 px, ASHA,
TPE, refit) written by hpa-tune at 576ff49, when every module sat at the package's top level.
Its ``tuner.pkl`` and searcher state pickle classes and functions by those old module paths
(``hpa_tune.ray_layer.truthful_search.TruthfulOptunaSearch``, ``hpa_tune.ray_layer.asha_state.PersistentASHA``, ...).
Only checkpoints nothing reads were left out (optimizer states of finished trials, non-best
epochs). It was made from the same data the ``sample_shards`` fixture prepares; the paths it
recorded are rewritten to this session's copies, as a user moving an experiment would.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from hpa_tune.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "old_layout_experiment"
SAVED_EXP_DIR = "/tmp/hm_fix/runs/old_layout"  # where the fixture was written
SAVED_DATA_DIR = "/tmp/hm_fix/data/shards"
TRIALS = {"02fa3540", "8ae174a9"}
WINNER = "8ae174a9"


@pytest.fixture
def old_experiment(tmp_path: Path, sample_shards: Path) -> Path:
    """A copy of the fixture whose recorded paths name this copy and this session's shards."""
    exp_dir = tmp_path / "old_layout"
    shutil.copytree(FIXTURE, exp_dir)
    for name in ("run.json", "best.json", "summary.csv"):  # our files; Ray finds its own way
        path = exp_dir / name
        text = path.read_text()
        text = text.replace(SAVED_EXP_DIR, str(exp_dir)).replace(SAVED_DATA_DIR, str(sample_shards))
        path.write_text(text)
    return exp_dir


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_old_experiment_reports(old_experiment: Path, tmp_path: Path):
    _invoke("report", str(old_experiment), "--out", str(tmp_path / "report"))
    assert (tmp_path / "report" / "report.html").is_file()


def test_old_refit_predicts(old_experiment: Path, sample_shards: Path, tmp_path: Path):
    out = tmp_path / "submission.csv"
    _invoke(
        "predict", str(old_experiment / "refit"), "--data", str(sample_shards), "--out", str(out)
    )
    submission = pd.read_csv(out)
    assert list(submission.columns) == ["Id", "Predicted"]
    assert len(submission) > 0


def test_old_experiment_refits(old_experiment: Path):
    (old_experiment / "refit").rename(old_experiment / "refit.saved")
    output = _invoke("refit", str(old_experiment))
    assert f"reuses trial {WINNER}'s checkpoint" in output
    metrics = json.loads((old_experiment / "refit" / "metrics.json").read_text())
    assert metrics["members"] == [WINNER]


@pytest.mark.ray
def test_old_experiment_resumes(ray_runtime, old_experiment: Path):
    """Ray unpickles ``tuner.pkl`` and the searcher state (classes at their old module paths):
    both trials were finished, so they are kept and the search ends as it was."""
    # As a driver that died before writing the results would have left it: a finished search
    # (summary.csv written) is left as it is by resume, without restoring anything.
    (old_experiment / "summary.csv").unlink()
    output = _invoke("resume", str(old_experiment), "--no-refit")
    assert f"best: trial {WINNER}" in output
    summary = pd.read_csv(old_experiment / "summary.csv")
    assert set(summary["trial_id"].astype(str)) == TRIALS
