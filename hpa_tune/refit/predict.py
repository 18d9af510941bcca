"""``hpa-tune predict``: a refit model -> a Kaggle submission (``Id,Predicted``).

Input is either prepared shards (their ``test`` split) or a raw Kaggle directory (``test/`` in
``sample_submission.csv`` order). Every test Id appears once with at least one label; an image
that cannot be decoded still gets a row (the train set's most frequent class) and a warning.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hpa_tune.classes import CHANNELS, NUM_CLASSES
from hpa_tune.data.decode import SampleError, decode_sample
from hpa_tune.data.kaggle_layout import index_channel_files, read_submission_ids
from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.shards import MANIFEST_NAME, ShardManifest
from hpa_tune.data.splits import TEST
from hpa_tune.errors import HpaTuneError
from hpa_tune.experiment_files import (
    CONFIG_FILE,
    ENSEMBLE_FILE,
    INFO_FILE,
    MODEL_FILE,
    REFIT_DIR,
    THRESHOLDS_FILE,
)
from hpa_tune.refit.ensemble import ensemble_mean, predict_probs
from hpa_tune.scoring.predictor_scores import submission_labels
from hpa_tune.storage import filesystems as storage
from hpa_tune.train.checkpoint import load_checkpoint_model
from hpa_tune.train.fast_path import prediction_amp, prediction_batches


@dataclass(frozen=True)
class Submission:
    """What was written: rows, and the Ids whose images could not be read."""

    path: Path
    rows: int
    unreadable: list[str]
    fallback_class: int = 0  # what an unreadable Id's row predicts


def _model_dir(path: Path) -> Path:
    needed = (MODEL_FILE, CONFIG_FILE, INFO_FILE, THRESHOLDS_FILE)
    for candidate in (path, path / REFIT_DIR):
        if all((candidate / name).is_file() for name in needed):
            return candidate
    if (path / MODEL_FILE).is_file():
        raise HpaTuneError(
            f"{path}: a trial checkpoint, not a refit model (no {THRESHOLDS_FILE} tuned on val); "
            "run `hpa-tune refit EXPERIMENT_DIR` and pass EXPERIMENT_DIR/refit"
        )
    raise HpaTuneError(
        f"{path}: no {MODEL_FILE} + {CONFIG_FILE} + {THRESHOLDS_FILE}; "
        "pass a refit directory (EXPERIMENT_DIR/refit)"
    )


def _decode_one(files: dict[str, Path], size: int) -> np.ndarray | None:
    try:
        return decode_sample(files, (size,)).images[size]
    except SampleError:
        return None


def _raw_test_arrays(raw_dir: Path, size: int, workers: int) -> tuple[SplitArrays, list[str]]:
    rows, _ = read_submission_ids(raw_dir / "sample_submission.csv")
    index = index_channel_files(raw_dir / "test")
    files = [index.get(r.id, {}) for r in rows]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(partial(_decode_one, size=size), files, chunksize=8))
    images = np.zeros((len(rows), len(CHANNELS), size, size), dtype=np.uint8)
    unreadable = []
    for i, (row, img) in enumerate(zip(rows, decoded, strict=True)):
        if img is None:
            unreadable.append(row.id)
        else:
            images[i] = img
    ids = np.asarray([r.id for r in rows], dtype=object)
    return SplitArrays(ids, images, np.zeros((len(rows), NUM_CLASSES), dtype=np.uint8)), unreadable


def _shard_test_arrays(data: str | Path, size: int) -> tuple[SplitArrays, list[str]]:
    """The prepared test split (through the node cache), in ``sample_submission.csv`` order when
    the manifest keeps it; Ids that ``prepare`` rejected get an empty image and are returned as
    unreadable."""
    manifest = ShardManifest.load(data)
    if TEST not in manifest.splits and not manifest.test_ids:
        raise HpaTuneError(
            f"{data}: no test split was prepared (prepare needs sample_submission.csv and test/)"
        )
    arrays = cached_split(data, TEST, size) if TEST in manifest.splits else None
    if not manifest.test_ids:
        assert arrays is not None
        return arrays, []
    row_of = {sid: i for i, sid in enumerate(arrays.ids)} if arrays is not None else {}
    ids = manifest.test_ids
    images = np.zeros((len(ids), len(CHANNELS), size, size), dtype=np.uint8)
    unreadable = []
    for i, sid in enumerate(ids):
        if sid in row_of:
            images[i] = arrays.images[row_of[sid]]  # type: ignore[union-attr]
        else:
            unreadable.append(sid)
    labels = np.zeros((len(ids), NUM_CLASSES), dtype=np.uint8)
    return SplitArrays(np.asarray(ids, dtype=object), images, labels), unreadable


def load_test_arrays(
    data: str | Path, size: int, workers: int = 0
) -> tuple[SplitArrays, list[str]]:
    """Test images from prepared shards (local, ``s3://``, ``gs://``) or a raw Kaggle directory;
    also the unreadable Ids."""
    if storage.is_file(storage.join(data, MANIFEST_NAME)):
        return _shard_test_arrays(data, size)
    data = Path(data)
    if (data / "sample_submission.csv").is_file() and (data / "test").is_dir():
        return _raw_test_arrays(data, size, workers or os.cpu_count() or 1)
    raise HpaTuneError(
        f"{data}: neither prepared shards (manifest.json) nor a Kaggle layout with sample_submission.csv and test/"
    )


def _members(
    model_dir: Path,
) -> tuple[list[tuple[Path, dict[str, list[float]] | None, float]], bool]:
    """(member directory, its channel stats or None for model_info's, its weight) of every
    member with a weight, and the TTA flag.

    A refit directory with ``ensemble.json`` is the ensemble it describes: members the refit's
    selection gave weight 0 are not loaded, and an older ``ensemble.json`` without weights is an
    equal-weight mean. One without ``ensemble.json`` (an older refit, or a bare model directory)
    is its single model.
    """
    index_path = model_dir / ENSEMBLE_FILE
    if not index_path.is_file():
        return [(model_dir, None, 1.0)], False
    index = json.loads(index_path.read_text())
    members = []
    for entry in index["members"]:
        weight = float(entry.get("weight", 1.0))
        if weight == 0:
            continue
        cfg = json.loads((model_dir / entry["dir"] / CONFIG_FILE).read_text())
        stats = index["channel_stats"][str(cfg["image_size"])]
        members.append((model_dir / entry["dir"], stats, weight))
    return members, bool(index["tta"])


def predict_submission(
    model_path: Path, data: str | Path, out: Path, workers: int = 0
) -> Submission:
    """Write a Kaggle submission for the test images in ``data`` with what the refit produced
    (its ensemble members, their weights and TTA setting, or a single model) and its thresholds."""
    model_dir = _model_dir(Path(model_path))
    info = json.loads((model_dir / INFO_FILE).read_text())
    thresholds = np.asarray(json.loads((model_dir / THRESHOLDS_FILE).read_text())["thresholds"])
    members, tta = _members(model_dir)
    member_probs, arrays_by_size = [], {}
    unreadable: list[str] = []
    for member_dir, stats, _ in members:
        model, cfg = load_checkpoint_model(member_dir)
        stats = stats or {"mean": info["mean"], "std": info["std"]}
        if cfg.image_size not in arrays_by_size:
            arrays_by_size[cfg.image_size], unreadable = load_test_arrays(
                data, cfg.image_size, workers
            )
        arrays = arrays_by_size[cfg.image_size]
        model, batches = prediction_batches(model, cfg, arrays, (stats["mean"], stats["std"]))
        member_probs.append(predict_probs(model, batches, tta, prediction_amp(model, cfg)))
    probs = ensemble_mean(member_probs, [weight for _, _, weight in members])
    labels = submission_labels(probs, thresholds)  # the rule the refit's metrics score
    fallback = int(np.argmax(info["train_positives"]))
    bad = set(unreadable)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "Predicted"])
        for sample_id, row in zip(arrays.ids, labels, strict=True):
            chosen = [fallback] if sample_id in bad else np.flatnonzero(row).tolist()
            writer.writerow([sample_id, " ".join(map(str, chosen))])
    return Submission(out, len(arrays), unreadable, fallback)
