"""TensorBoard event files of a search: per-trial curves, the HParams table, refit diagnostics.

Layout under ``EXP/tensorboard/`` (the ``--logdir`` of ``hpa-tune tensorboard``):

- ``.`` (the root run): the HParams experiment config, i.e. every parameter of the space with
  its domain (conditional ones included) and the four table metrics.
- ``trial_<id>/``: one run and one HParams session per trial. Per-epoch scalars (``loss/*``,
  ``macro_f1/*``, ``macro_f1_batch_avg/*``, ``lr``, ``images_per_s``, ``image_size`` and the 28
  ``val_class_f1/NN_Class_name`` tags), the session start with the trial's sampled values and
  the session end when it stops. A conditional parameter whose ``when`` did not hold is absent
  from the session (an empty cell in the table), never a placeholder value.
- ``refit/``: the refit's curves, per-class precision-recall curves on val (``pr/NN_Class_name``)
  and a few val images with their true and predicted labels.

HParams metrics, read by TensorBoard as each tag's last value: ``macro_f1/best_val`` (best val
macro F1), ``macro_f1/val`` (last val macro F1), ``trial/epochs`` (epochs run) and
``trial/status``, coded by ``STATUS_CODES``: -1 running, 0 completed, 1 pruned, 2 error. The
code is a metric rather than an hparam because it is only known when the trial ends; filter
pruned trials with the metric's min/max 1..1. The session's own status is SUCCESS for completed
and pruned trials (both ended as the scheduler intended) and FAILURE for errors.
"""

from __future__ import annotations

import re
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from hpa_tune.classes import CHANNELS, channel_indices, class_names
from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import REFIT_RUN, TENSORBOARD_DIR
from hpa_tune.search.space import ParamSpec, SpaceSpec
from hpa_tune.search.trial_table import COMPLETED, ERROR, PRUNED

RUNNING = "running"
STATUS_CODES = {RUNNING: -1, COMPLETED: 0, PRUNED: 1, ERROR: 2}
_SESSION_STATUS = {
    COMPLETED: api_pb2.STATUS_SUCCESS,
    PRUNED: api_pb2.STATUS_SUCCESS,
    ERROR: api_pb2.STATUS_FAILURE,
}
# Reported metric -> scalar tag (the families group train and val of one quantity).
EPOCH_SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_macro_f1": "macro_f1/train",
    "val_macro_f1": "macro_f1/val",
    "best_val_macro_f1": "macro_f1/best_val",
    "val_macro_f1_global": "macro_f1_global_threshold/val",
    "train_macro_f1_batch_avg": "macro_f1_batch_avg/train",
    "val_macro_f1_batch_avg": "macro_f1_batch_avg/val",
    "lr": "lr",
    "images_per_s": "images_per_s",
    "image_size": "image_size",  # changes at the rungs of a resolution fidelity
}
CLASS_F1 = "val_class_f1"
EPOCHS_TAG, STATUS_TAG = "trial/epochs", "trial/status"
HPARAMS_METRICS = (
    hp.Metric("macro_f1/best_val", display_name="best val macro F1"),
    hp.Metric("macro_f1/val", display_name="last val macro F1"),
    hp.Metric(EPOCHS_TAG, display_name="epochs"),
    hp.Metric(
        STATUS_TAG,
        display_name="status",
        description="-1 running, 0 completed, 1 pruned, 2 error",
    ),
)


def tensorboard_dir(exp_dir: Path) -> Path:
    """The ``--logdir`` of an experiment."""
    return Path(exp_dir) / TENSORBOARD_DIR


@cache
def class_tag(family: str, index: int) -> str:
    """``family/NN_Class_name``: zero-padded so the 28 classes sort in index order."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", class_names()[index]).strip("_")
    return f"{family}/{index:02d}_{slug}"


def _discrete_kind(choices: list[Any]) -> type:
    """The one Python type TensorBoard will store a categorical's values as."""
    if all(isinstance(c, bool) for c in choices):
        return bool
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return int
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return float
    return str  # mixed types (or None) become strings


def hparam_value(p: ParamSpec, value: Any) -> bool | int | float | str:
    """A sampled value as its HParams domain stores it."""
    if p.type == "categorical":
        return _discrete_kind(list(p.choices or []))(value)
    return value if isinstance(value, int | float) else str(value)


def hparam_domains(spec: SpaceSpec) -> list[hp.HParam]:
    """Every parameter of the space (conditional ones included) with its domain."""
    out = []
    for name, p in spec.params.items():
        domain: hp.Domain
        if p.type == "categorical":
            kind = _discrete_kind(list(p.choices or []))
            domain = hp.Discrete([kind(c) for c in p.choices or []], dtype=kind)
        elif p.type == "int":
            domain = hp.IntInterval(int(p.low or 0), int(p.high or 0))
        else:
            domain = hp.RealInterval(float(p.low or 0.0), float(p.high or 0.0))
        when = f"only when {p.when}" if p.when else ""
        out.append(hp.HParam(name, domain, description=when or None))
    return out


def write_experiment_config(log_dir: Path, spec: SpaceSpec) -> None:
    """The HParams experiment (parameters with domains, the four metrics) in the root run."""
    with SummaryWriter(str(log_dir)) as writer:
        config = hp.hparams_config_pb(hparam_domains(spec), HPARAMS_METRICS, time.time())
        _add_summary(writer, config, 0)


def _add_summary(writer: SummaryWriter, summary: summary_pb2.Summary, step: int) -> None:
    # SummaryWriter has no public call for a ready-made Summary; its own add_hparams does this.
    writer._get_file_writer().add_summary(summary, step)


def _session_end_pb(status: str, end_time_secs: float) -> summary_pb2.Summary:
    info = plugin_data_pb2.SessionEndInfo(
        status=_SESSION_STATUS[status], end_time_secs=end_time_secs
    )
    content = plugin_data_pb2.HParamsPluginData(session_end_info=info)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(content),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


def write_epoch_scalars(writer: SummaryWriter, metrics: dict[str, Any], step: int) -> None:
    """The per-epoch curves of one report (nested or Ray-flattened ``val_class_f1``)."""
    for key, tag in EPOCH_SCALARS.items():
        if metrics.get(key) is not None:
            writer.add_scalar(tag, float(metrics[key]), step)
    nested = metrics.get(CLASS_F1) or {}
    for k, name in enumerate(class_names()):
        value = nested.get(name, metrics.get(f"{CLASS_F1}/{name}"))
        if value is not None:
            writer.add_scalar(class_tag(CLASS_F1, k), float(value), step)


class TrialLog:
    """One trial's run and HParams session; every write is flushed at once."""

    def __init__(self, log_dir: Path, trial_id: str):
        self.trial_id = trial_id
        self.writer = SummaryWriter(str(Path(log_dir) / f"trial_{trial_id}"))
        self.last_epoch = 0

    def start(self, params: dict[str, Any], spec: SpaceSpec) -> None:
        """Open the session with the trial's sampled values (``split_trial_config``'s params); it
        shows as running (-1) with 0 epochs."""
        values = {k: hparam_value(spec.params[k], v) for k, v in params.items()}
        _add_summary(self.writer, hp.hparams_pb(values, trial_id=self.trial_id), 0)
        self.writer.add_scalar(EPOCHS_TAG, 0, 0)
        self.writer.add_scalar(STATUS_TAG, STATUS_CODES[RUNNING], 0)
        self.writer.flush()

    def epoch(self, metrics: dict[str, Any]) -> None:
        """Write one epoch's report at step ``metrics['epoch']``."""
        self.last_epoch = int(metrics.get("epoch", self.last_epoch + 1))
        write_epoch_scalars(self.writer, metrics, self.last_epoch)
        self.writer.add_scalar(EPOCHS_TAG, self.last_epoch, self.last_epoch)
        self.writer.flush()

    def end(self, status: str) -> None:
        """Close the session as ``completed``, ``pruned`` or ``error`` and the file."""
        step = self.last_epoch  # trial/epochs already holds it (0 from start, else the epoch's)
        self.writer.add_scalar(STATUS_TAG, STATUS_CODES[status], step)
        _add_summary(self.writer, _session_end_pb(status, time.time()), step)
        self.writer.close()


def _label_names(row: np.ndarray) -> str:
    names = class_names()
    return ", ".join(names[k] for k in np.flatnonzero(row)) or "-"


def _write_val_images(
    writer: SummaryWriter, images: np.ndarray, ids: np.ndarray, true: np.ndarray, pred: np.ndarray
) -> None:
    """Each image as an RGB composite and its yellow (ER) channel, plus one table of labels."""
    rgb, yellow = channel_indices("rgb"), CHANNELS.index("yellow")
    rows = ["| # | id | true | predicted (tuned thresholds) |", "|---|---|---|---|"]
    for i, image in enumerate(images):
        writer.add_image(f"val_images/{i:02d}/rgb", image[rgb], 0, dataformats="CHW")
        plane = image[yellow]
        tinted = np.stack([plane, plane, np.zeros_like(plane)])  # drawn in yellow, as HPA does
        writer.add_image(f"val_images/{i:02d}/yellow", tinted, 0, dataformats="CHW")
        rows.append(f"| {i:02d} | {ids[i]} | {_label_names(true[i])} | {_label_names(pred[i])} |")
    writer.add_text("val_images/labels", "\n".join(rows), 0)


def log_refit(
    log_dir: Path,
    history: list[dict[str, Any]],
    val_probs: np.ndarray,
    val_targets: np.ndarray,
    thresholds: np.ndarray,
    val_images: np.ndarray,
    val_ids: np.ndarray,
    n_images: int = 8,
) -> Path:
    """The refit run: its curves, per-class PR curves on val and ``n_images`` labelled val images.

    Args:
        log_dir: the experiment's TensorBoard directory.
        history: the refit's per-epoch reports.
        val_probs: (N, 28) val probabilities of the refit model.
        val_targets: (N, 28) val labels, in the order of ``val_images``.
        thresholds: per-class thresholds fitted on val (predicted = prob >= threshold).
        val_images: (N, 4, S, S) uint8 val images in ``CHANNELS`` order.
        val_ids: (N,) sample ids.
        n_images: how many val images to show.

    Returns:
        The refit run directory; event files of an earlier refit there are replaced.
    """
    assert len(val_images) == len(val_probs) == len(val_targets), "val arrays out of step"
    run_dir = Path(log_dir) / REFIT_RUN
    for old in run_dir.glob("events.out.tfevents.*"):
        old.unlink()
    with SummaryWriter(str(run_dir)) as writer:
        for report in history:
            write_epoch_scalars(writer, report, int(report["epoch"]))
        for k in range(val_targets.shape[1]):
            writer.add_pr_curve(class_tag("pr", k), val_targets[:, k] > 0, val_probs[:, k], 0)
        n = min(n_images, len(val_images))
        pred = np.asarray(val_probs[:n]) >= np.asarray(thresholds)
        _write_val_images(writer, val_images[:n], val_ids[:n], val_targets[:n], pred)
    return run_dir


def launch_server(exp_dir: Path, host: str = "127.0.0.1", port: int = 6006) -> str:
    """Serve the experiment's TensorBoard logs from a background thread; returns the URL.

    Raises:
        HpaTuneError: ``exp_dir`` has no ``tensorboard/`` folder, or the port cannot be used.
    """
    from tensorboard import program

    log_dir = tensorboard_dir(exp_dir)
    if not log_dir.is_dir():
        raise HpaTuneError(
            f"{log_dir}: no TensorBoard logs; expected an experiment directory written by hpa-tune run"
        )
    board = program.TensorBoard()
    board.configure(logdir=str(log_dir), host=host, port=port)
    try:
        return str(board.launch())
    except program.TensorBoardServerException as err:
        raise HpaTuneError(f"cannot serve TensorBoard on {host}:{port}: {err.msg}") from None
