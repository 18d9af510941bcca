"""The function Ray Tune runs in a worker for each trial: resolve the trial's configuration, map its
data through this node's shard cache, and hand over to the Ray-free loop (``train.trainable``),
reporting each epoch with ``tune.report`` and a checkpoint ranked so that Ray keeps the best one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hpa_tune.errors import HpaTuneError, NotRetryableError
from hpa_tune.experiment_files import BEST_SO_FAR_FILE
from hpa_tune.ray_layer.faults import fail_fast_on_retry
from hpa_tune.search.space import SpaceSpec, resolve_config, split_trial_config
from hpa_tune.search.trial_table import checkpoint_rank
from hpa_tune.train.size_schedule import FULL_SIZE
from hpa_tune.train.trainable import train_trial
from hpa_tune.train.trial_data import load_trial_data


# The name is part of a saved experiment: Ray records it in ``tuner.pkl`` and ``Tuner.restore``
# refuses a trainable of another name, so ``resume`` of an existing search needs this one.
def _tune_trainable(
    config: dict[str, Any], spec: SpaceSpec, data_uri: str, threads: int, gpus: float = 1.0
) -> None:
    """The Ray Tune function trainable: resolve the config, map its data through this node's
    shard cache (its image sizes, train + val), then hand over to ``train_trial``."""
    from ray import tune

    from hpa_tune.ray_layer.cluster import assigned_device, current_node_id

    def reporter(restore_dir: str | None) -> Any:
        best = {"value": _read_best_so_far(restore_dir)}  # of the epochs before the restore

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            value = metrics.get(spec.metric)
            rank = float("-inf")
            if value is not None and metrics.get(FULL_SIZE, True):  # ``ranking_reports``
                rank = checkpoint_rank(float(value), best["value"], spec.mode)
                best["value"] = float(value) if rank > float("-inf") else best["value"]
            checkpoint = None
            if checkpoint_dir:
                Path(checkpoint_dir, BEST_SO_FAR_FILE).write_text(json.dumps(best["value"]))
                checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
            metrics = {**metrics, "node_id": node_id, CHECKPOINT_RANK: rank}
            tune.report(metrics, checkpoint=checkpoint)

        return report

    # A retry of a trial that failed in a way a retry cannot change (a non-finite loss, a bad
    # configuration, a missing or corrupt shard) fails again at once, before any work.
    with fail_fast_on_retry(tune.get_context().get_trial_dir()):
        params, constants = split_trial_config(spec, config)
        try:
            cfg = resolve_config(spec, params, constants)
        except HpaTuneError as err:
            raise NotRetryableError(str(err)) from None
        torch.set_num_threads(threads)

        device = torch.device(assigned_device())  # CPU (logged once) on a GPU without CUDA
        node_id = current_node_id()  # recorded per epoch: summary.csv/history.csv say where it ran
        data = load_trial_data(data_uri, cfg.training_sizes())

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            train_trial(cfg, data, reporter(None), device=device, gpu_fraction=gpus)
            return
        with checkpoint.as_directory() as restore_dir:
            train_trial(
                cfg,
                data,
                reporter(restore_dir),
                restore_dir=restore_dir,
                device=device,
                gpu_fraction=gpus,
            )


# Ray ranks a trial's checkpoints by this reported value (``summary.checkpoint_rank``), so the
# one it keeps is the epoch summary.csv names, also on ties; the trial's best score so far
# travels in each checkpoint for a restore.
CHECKPOINT_RANK = "checkpoint_rank"


def _read_best_so_far(restore_dir: str | None) -> float | None:
    path = Path(restore_dir, BEST_SO_FAR_FILE) if restore_dir else None
    if path is None or not path.is_file():
        return None
    value = json.loads(path.read_text())
    return None if value is None else float(value)
