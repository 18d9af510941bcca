"""Old module paths of hpa-tune (before the subpackages), still importable as the moved modules.

Experiments pickle classes and functions by module path: Ray Tune's ``tuner.pkl`` and the searcher
state hold ``hpa_tune.truthful_search.TruthfulOptunaSearch``, ``hpa_tune.asha_state.PersistentASHA``,
``hpa_tune.search_space.DefineByRun``, ``hpa_tune.optuna_study._ExperimentJournal``, the callbacks
(``hpa_tune.tb_callback``, ``hpa_tune.bucket_sync``, ``hpa_tune.progress``) and
``hpa_tune.staging.StagedPath``. So that an experiment saved before the move still resumes, each
old path imports as the module it became: the very same module object, so its classes are the
same classes. No file sits at an old path (the tree shows only the new layout); a finder on
``sys.meta_path``, installed by ``hpa_tune/__init__``, answers for exactly the names below.
``hpa_tune.storage`` and ``hpa_tune.refit`` are now packages of their own and are not aliased
(nothing of theirs is pickled in an experiment).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.abc import Loader
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED: dict[str, str] = {
    "hpa_tune.staging": "hpa_tune.storage.staging",
    "hpa_tune.data.builtin": "hpa_tune.data.builtin_sample.prepared",
    "hpa_tune.data.sample": "hpa_tune.data.builtin_sample.render",
    "hpa_tune.config": "hpa_tune.train.config",
    "hpa_tune.losses": "hpa_tune.train.losses",
    "hpa_tune.engine": "hpa_tune.train.engine",
    "hpa_tune.fast_path": "hpa_tune.train.fast_path",
    "hpa_tune.gpu_memory": "hpa_tune.train.gpu_memory",
    "hpa_tune.trainable": "hpa_tune.train.trainable",
    "hpa_tune.metrics": "hpa_tune.scoring.metrics",
    "hpa_tune.thresholds": "hpa_tune.scoring.thresholds",
    "hpa_tune.threshold_methods": "hpa_tune.scoring.thresholds",
    "hpa_tune.predictor_scores": "hpa_tune.scoring.predictor_scores",
    "hpa_tune.search_space": "hpa_tune.search.space",
    "hpa_tune.optuna_study": "hpa_tune.search.study",
    "hpa_tune.summary": "hpa_tune.search.trial_table",
    "hpa_tune.experiment": "hpa_tune.search.experiment",
    "hpa_tune.tensorboard_log": "hpa_tune.report.tensorboard_events",
    "hpa_tune.report.progress": "hpa_tune.report.curves",
    "hpa_tune.refit_members": "hpa_tune.refit.members",
    "hpa_tune.evaluation": "hpa_tune.refit.evaluation",
    "hpa_tune.ensemble": "hpa_tune.refit.ensemble",
    "hpa_tune.predict": "hpa_tune.refit.predict",
    "hpa_tune.runner": "hpa_tune.ray_layer.runner",
    "hpa_tune.resume": "hpa_tune.ray_layer.resume",
    "hpa_tune.remote_refit": "hpa_tune.ray_layer.remote_refit",
    "hpa_tune.truthful_search": "hpa_tune.ray_layer.truthful_search",
    "hpa_tune.asha_state": "hpa_tune.ray_layer.asha_state",
    "hpa_tune.tb_callback": "hpa_tune.ray_layer.tensorboard_callback",
    "hpa_tune.progress": "hpa_tune.ray_layer.live_table",
    "hpa_tune.faults": "hpa_tune.ray_layer.faults",
    "hpa_tune.trial_errors": "hpa_tune.ray_layer.trial_errors",
    "hpa_tune.ray_cluster": "hpa_tune.ray_layer.cluster",
    "hpa_tune.cluster_resources": "hpa_tune.ray_layer.cluster_resources",
    "hpa_tune.ray_session": "hpa_tune.ray_layer.session",
    "hpa_tune.bucket_sync": "hpa_tune.ray_layer.bucket_sync",
}


class _AliasLoader(Loader):
    """Loads an old path as the already importable module at its new path."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self._own_spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.new_name)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system labelled the module with the old name's spec: give it back its own.
        module.__spec__ = self._own_spec


class MovedModuleFinder:
    """``sys.meta_path`` finder for the old module paths in ``MOVED``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): an old path must never be found as a
    stale file elsewhere (an editable install's finder maps every ``hpa_tune.*`` name to its own
    checkout, where the old modules may still sit)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
