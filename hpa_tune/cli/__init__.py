"""The ``hpa-tune`` command line: prepare, run, resume, refit, report, predict, tensorboard, models, check.

Each command lives in a small module; this one only assembles the group.
"""

from __future__ import annotations

import click

from hpa_tune.cli._common import OneLineErrors
from hpa_tune.cli.data_commands import predict, prepare
from hpa_tune.cli.inspect_commands import check, models, report, tensorboard_cmd
from hpa_tune.cli.search_commands import refit, resume, run

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpa-tune")
def main() -> None:
    """Hyperparameter search for HPA protein-localisation classifiers.

    \b
    Quick start (built-in HPA-like sample, CPU, a few minutes):
      hpa-tune run search_spaces/demo_space.yaml
    On the Kaggle data:
      hpa-tune prepare ~/kaggle/hpa --out ~/hpa-shards --sizes 64,224
      hpa-tune run search_spaces/densenet_space.yaml --data ~/hpa-shards
      hpa-tune predict results/densenet-*/refit --data ~/kaggle/hpa --out submission.csv
    Compare trials (curves, HParams table, refit PR curves) while it runs or after:
      hpa-tune tensorboard results/densenet_space-20261125-101500
    """
    from hpa_tune.ray_layer.session import end_dead_sessions

    end_dead_sessions()  # processes a killed driver's local Ray left running (see ray_session)


for _command in (prepare, run, resume, refit, report, predict, tensorboard_cmd, models, check):
    main.add_command(_command)
