"""The module paths of hpa-tune before its subpackages still import, as the moved modules."""

import importlib
import pickle
import subprocess
import sys

import pytest

from hpa_tune._moved import MOVED


@pytest.mark.parametrize("old_name", sorted(MOVED))
def test_old_path_imports_as_the_moved_module(old_name):
    old = importlib.import_module(old_name)
    new = importlib.import_module(MOVED[old_name])
    assert old is new
    assert new.__name__ == MOVED[old_name]
    assert new.__spec__.name == MOVED[old_name]  # the alias did not relabel the module


@pytest.mark.parametrize(
    ("old_name", "attr"),
    [
        ("hpa_tune.truthful_search", "TruthfulOptunaSearch"),
        ("hpa_tune.asha_state", "PersistentASHA"),
        ("hpa_tune.search_space", "DefineByRun"),
        ("hpa_tune.optuna_study", "_ExperimentJournal"),
        ("hpa_tune.tb_callback", "TensorBoardTrials"),
        ("hpa_tune.staging", "StagedPath"),
    ],
)
def test_a_class_pickled_at_its_old_path_unpickles_as_the_moved_class(old_name, attr):
    # Protocol 0 names the class by "module\nname", as an old pickle does.
    data = f"c{old_name}\n{attr}\n.".encode()
    assert pickle.loads(data) is getattr(importlib.import_module(MOVED[old_name]), attr)


def test_old_paths_resolve_in_a_fresh_interpreter():
    """Unpickling starts with ``import hpa_tune.truthful_search``: nothing imported before."""
    code = (
        "import pickle; cls = pickle.loads(b'chpa_tune.truthful_search\\nTruthfulOptunaSearch\\n.');"
        "print(cls.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hpa_tune.ray_layer.truthful_search"
