"""The command line a user meets first: help with examples, `check`, `models`, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpa_tune.cli import main
from hpa_tune.models import list_models

SPACES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["prepare"],
        ["run"],
        ["resume"],
        ["status"],
        ["refit"],
        ["predict"],
        ["check"],
        ["models"],
    ],
)
def test_help_of_every_command_gives_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "hpa-tune " in result.output.split("Options:")[0]


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.name)
def test_check_prints_every_parameter_its_condition_and_sampled_configs(space):
    result = invoke("check", str(space), "-n", "2")
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load(space.read_text())
    for name, param in spec.get("params", {}).items():
        line = next(li for li in result.output.splitlines() if li.strip().startswith(f"{name}"))
        if "when" in param:
            assert "when" in line
    assert result.output.count("  sample: ") == 2
    assert result.output.rstrip().endswith("ok")


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"params": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "params.lr"),
        (
            {
                "params": {
                    "freeze": {"type": "categorical", "choices": ["fc"], "when": {"arch": "x"}}
                }
            },
            "params.freeze.when",
        ),
        ({"budget": {"num_epochs": 3}}, "budget.num_epochs"),
    ],
)
def test_check_on_a_broken_space_prints_file_key_and_problem_and_exits_2(tmp_path, raw, key):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = invoke("check", str(path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert str(path) in result.output and key in result.output


def test_models_lists_every_registered_model_with_size_and_freeze_levels():
    result = invoke("models")
    assert result.exit_code == 0
    for info in list_models():
        line = next(li for li in result.output.splitlines() if li.startswith(info.name + " "))
        assert f"{info.native_size}px" in line
        assert all(level in line for level in info.freeze_levels)


def test_unknown_set_key_is_an_error_listing_the_valid_keys(tmp_path):
    result = invoke("run", str(SPACES[0]), "--set", "learning_rate=0.1", "--storage", str(tmp_path))
    assert result.exit_code == 2
    assert "learning_rate" in result.output and "lr" in result.output.split("valid keys:")[1]


@pytest.mark.parametrize(
    "fixed",
    [
        {"arch": "resnet18", "pretrained": "none", "freeze": "layer3"},
        {"arch": "densenet121", "pretrained": "none", "freeze": "classifier"},
    ],
)
def test_check_refuses_frozen_layers_without_pretrained_weights_in_one_line(tmp_path, fixed):
    path = tmp_path / "nonsense.yaml"
    path.write_text(yaml.safe_dump({"fixed": fixed}))
    result = invoke("check", str(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]  # check prints the space's header, then this
    assert "nonsense" in error and "frozen random weights" in error and fixed["freeze"] in error


# `hpa-tune run` in a fresh interpreter; at exit it prints whether torch or Ray were imported.
RUN_AND_LIST_IMPORTS = """
import sys
from hpa_tune.cli import main
try:
    main(["run", *sys.argv[1:]])
finally:
    print("imported:", sorted({"torch", "ray"} & set(sys.modules)))
"""


@pytest.mark.parametrize("problem", ["missing", "not YAML"])
def test_run_reports_a_bad_space_file_before_importing_torch_or_ray(tmp_path, problem):
    space = tmp_path / "space.yaml"
    if problem == "not YAML":
        space.write_text("params: [unclosed\n")
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_IMPORTS, str(space), "--storage", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and str(space) in done.stderr
    assert "imported: []" in done.stdout
