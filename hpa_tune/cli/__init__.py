"""The ``hpa-tune`` command line: prepare, run, resume, status, refit, report, predict, tensorboard, models, check.

Each command lives in a small module; this one only assembles the group.
"""

from __future__ import annotations

import click

from hpa_tune.cli._common import OneLineErrors
from hpa_tune.cli.data_commands import predict, prepare
from hpa_tune.cli.inspect_commands import check, models, report, status, tensorboard_cmd
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
    Where a search stands, from another shell (or machine that can read its files):
      hpa-tune status results/densenet_space-20261125-101500 --watch
    Compare trials (curves, HParams table, refit PR curves) while it runs or after:
      hpa-tune tensorboard results/densenet_space-20261125-101500
    """
    from hpa_tune.ray_layer.faults import install_stop_handlers
    from hpa_tune.ray_layer.session import end_dead_sessions

    install_stop_handlers()  # Ctrl-C/SIGTERM: stop once, cleanly; a second one aborts quietly
    end_dead_sessions()  # processes a killed driver's local Ray left running (see ray_session)


for _command in (
    prepare,
    run,
    resume,
    status,
    refit,
    report,
    predict,
    tensorboard_cmd,
    models,
    check,
):
    main.add_command(_command)
