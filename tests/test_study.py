"""The study's models inside real searches: CapsNet and frozen ResNet trials, and the study's
six-configuration table run end to end on the built-in sample."""

from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main

pytestmark = pytest.mark.ray
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

MIXED = {
    "budget": {"num_samples": 2, "max_epochs": 1},
    "scheduler": {"type": "fifo"},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "fixed": {"image_size": 32, "pretrained": "none", "channels": "rgby"},
    "params": {
        "arch": {"type": "categorical", "choices": ["capsnet", "resnet18"]},
        "resnet_freeze": {
            "type": "categorical",
            "choices": ["fc"],
            "when": {"arch": "resnet18"},
            "sets": "freeze",
        },
        "capsnet_loss": {
            "type": "categorical",
            "choices": ["margin"],
            "when": {"arch": "capsnet"},
            "sets": "loss",
        },
    },
    "points_to_evaluate": [
        {"arch": "capsnet", "capsnet_loss": "margin"},
        {"arch": "resnet18", "resnet_freeze": "fc"},
    ],
}


def test_capsnet_and_frozen_resnet_trials_run_inside_a_real_search(
    ray_runtime, sample_shards, tmp_path
):
    # Frozen layers need pretrained weights (frozen random ones are refused): a local weights file.
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    space = tmp_path / "mixed.yaml"
    resnet_pretrained = {
        "type": "categorical",
        "choices": [str(weights)],
        "when": {"arch": "resnet18"},
        "sets": "pretrained",
    }
    space.write_text(
        yaml.safe_dump(
            {**MIXED, "params": {**MIXED["params"], "resnet_pretrained": resnet_pretrained}}
        )
    )
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(space),
            "--data",
            str(sample_shards),
            "--storage",
            str(tmp_path),
            "--name",
            "mixed",
            "--no-refit",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "mixed" / "summary.csv").set_index("param:arch")
    assert set(summary.index) == {"capsnet", "resnet18"}
    assert (summary["status"] == "completed").all()
    # Frozen ResNet18 trains its fc (512 inputs x 28 classes + 28 biases) and, on RGBY input, the
    # stem's yellow filter (64 x 7 x 7), which must learn although the stem is frozen.
    assert summary.loc["resnet18", "trainable_params"] == 512 * 28 + 28 + 64 * 7 * 7
    assert summary.loc["capsnet", "trainable_params"] > 100_000


def test_study_table_runs_end_to_end_on_the_builtin_sample(ray_runtime, builtin_sample, tmp_path):
    # 1 epoch at 32 px (a prepared size of the sample) keeps six models incl. two DenseNet161s CPU-sized.
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(SPACES / "study_table.yaml"),
            "--max-epochs",
            "1",
            "--set",
            "image_size=32",
            "--storage",
            str(tmp_path),
            "--name",
            "study",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no --data given" in result.output
    exp = tmp_path / "study"
    summary = pd.read_csv(exp / "summary.csv")
    assert len(summary) == 6 and (summary["status"] == "completed").all()
    scores = pd.read_csv(exp / "trial_scores.csv")
    assert sorted(scores["trial_id"].astype(str)) == sorted(summary["trial_id"].astype(str))
    assert scores[["holdout_macro_f1@0.5", "holdout_macro_f1_tuned"]].notna().all().all()

    # The study's Table 1, reproduced: six rows, every column filled (Test F1 for every row).
    report = CliRunner().invoke(main, ["report", str(exp), "--table"])
    assert report.exit_code == 0, report.output
    assert len([line for line in report.output.splitlines() if line.startswith("| ")]) == 1 + 6
    table = pd.read_csv(exp / "report" / "study_table.csv", dtype={"trial_id": str})
    assert len(table) == 6 and table.notna().all().all(), table.to_string()
    assert set(table["test_from"]) == {"trial checkpoint"}
