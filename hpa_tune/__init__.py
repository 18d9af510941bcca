"""hpa-tune: distributed hyperparameter search for HPA protein-localisation classifiers.

Kept import-light on purpose (the CLI starts fast); import submodules for the APIs:
``hpa_tune.data``, ``hpa_tune.models``, ``hpa_tune.train.losses``, ``hpa_tune.scoring.metrics``,
``hpa_tune.search.space``, ``hpa_tune.ray_layer.runner``. The modules' paths before the
subpackages still import (``_moved``), for experiments that pickled them.
"""

from hpa_tune import _moved

_moved.install()

__version__ = "0.1.0"
__all__ = ["__version__"]
