"""``hpa-tune refit``: retrain the best configurations, average them (optionally over the 8
symmetries of each image) with members and weights chosen on val (the winner alone unless an
ensemble beats it there), choose thresholds on val, and score the holdout.

Member training, checkpoint selection and the threshold method all use the val split only; the
holdout split is touched once, at the end, to score the candidate predictors (single model or
ensemble, with or without TTA, under every threshold method) — it never influences a choice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hpa_tune.classes import class_names
from hpa_tune.data.loader import SplitArrays
from hpa_tune.data.node_cache import cached_split
from hpa_tune.data.splits import HOLDOUT, TRAIN, VAL
from hpa_tune.experiment_files import (
    CONFIG_FILE,
    ENSEMBLE_FILE,
    INFO_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    REFIT_DIR,
    REFIT_HISTORY_FILE,
    REFIT_METRICS_FILE,
    THRESHOLDS_FILE,
)
from hpa_tune.refit.ensemble import ensemble_mean, predict_probs
from hpa_tune.refit.members import (
    Candidate,
    Member,
    TrainedMember,
    obtain_members,
    save_members,
    top_distinct_candidates,
)
from hpa_tune.report.tensorboard_events import log_refit, tensorboard_dir
from hpa_tune.scoring.ensemble_selection import EnsembleChoice, select_ensemble
from hpa_tune.scoring.metrics import macro_f1
from hpa_tune.scoring.predictor_scores import (
    DECISION_RULE_RECORD,
    ENSEMBLE,
    ENSEMBLE_TTA,
    SINGLE,
    SINGLE_TTA,
    WEIGHTED,
    WEIGHTED_TTA,
    PredictorScores,
    predictor_name,
    score_predictor,
)
from hpa_tune.search.experiment import read_best, read_run
from hpa_tune.train.fast_path import prediction_amp, prediction_batches
from hpa_tune.train.trial_data import TrialData, load_trial_data

Progress = Callable[[int, int], None]

# Chosen by measurement on the built-in sample (README, "Search and refit defaults"): at the
# demo's budget a 3-member ensemble scored no better than the winner alone and its pruned
# members cost a full retraining each; TTA costs only predictions.
DEFAULT_TOP_K = 1
DEFAULT_TTA = True


@dataclass(frozen=True)
class RefitResult:
    """Where the refit model went and its headline scores."""

    refit_dir: Path
    metrics: dict[str, Any]


def trivial_baselines(
    train_labels: np.ndarray, holdout_labels: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Holdout macro F1 of predictors that ignore the images.

    ``all_positive`` predicts every class for every sample; ``class_prior`` predicts each class
    at random with its train frequency (mean over 20 seeded draws).
    """
    all_positive = macro_f1(holdout_labels, np.ones_like(holdout_labels, dtype=float))
    prior = train_labels.mean(axis=0)
    rng = np.random.default_rng(seed)
    draws = [
        macro_f1(holdout_labels, (rng.random(holdout_labels.shape) < prior).astype(float))
        for _ in range(20)
    ]
    return {"all_positive": all_positive, "class_prior": float(np.mean(draws))}


@dataclass(frozen=True)
class _MemberProbs:
    val: dict[bool, np.ndarray]  # keyed by tta
    holdout: dict[bool, np.ndarray]


def _member_probs(member: Member, data: TrialData, holdout: SplitArrays) -> _MemberProbs:
    """Val and holdout probabilities of one member, plain and with TTA."""
    cfg = member.cfg
    stats = data.channel_stats[cfg.image_size]
    val: dict[bool, np.ndarray] = {}
    hold: dict[bool, np.ndarray] = {}
    for tta in (False, True):
        for split, out in ((data.split(cfg.image_size, VAL), val), (holdout, hold)):
            model, batches = prediction_batches(member.model, cfg, split, stats)
            out[tta] = predict_probs(model, batches, tta, prediction_amp(model, cfg))
    return _MemberProbs(val, hold)


def _candidate_predictors(
    probs: list[_MemberProbs], choice: EnsembleChoice
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(val, holdout) probabilities of every candidate predictor: the winner, the equal-weight
    mean of all members (2+), and the weighted ensemble when selection on val chose one."""
    out = {
        SINGLE: (probs[0].val[False], probs[0].holdout[False]),
        SINGLE_TTA: (probs[0].val[True], probs[0].holdout[True]),
    }
    ensembles: list[tuple[str, str, np.ndarray | None]] = []
    if len(probs) > 1:
        ensembles.append((ENSEMBLE, ENSEMBLE_TTA, None))
    if choice.is_ensemble:
        ensembles.append((WEIGHTED, WEIGHTED_TTA, choice.weights))
    for plain, with_tta, weights in ensembles:
        for name, tta in ((plain, False), (with_tta, True)):
            out[name] = (
                ensemble_mean([p.val[tta] for p in probs], weights),
                ensemble_mean([p.holdout[tta] for p in probs], weights),
            )
    return out


def _select_members(
    members: list[Member], probs: list[_MemberProbs], val_targets: np.ndarray, tta: bool, log: Any
) -> EnsembleChoice:
    """Members' weights chosen on val (``scoring.ensemble_selection``), said in the output."""
    choice = select_ensemble(val_targets, [p.val[tta] for p in probs], seed=members[0].cfg.seed)
    if choice.is_ensemble:
        kept = [
            f"{m.trial_id} {w:.2f}" for m, w in zip(members, choice.weights, strict=True) if w > 0
        ]
        log(f"ensemble selection: weighted ensemble of trials {', '.join(kept)}; {choice.reason}")
    elif len(members) > 1:
        log(f"ensemble selection: the winner {members[0].trial_id} alone; {choice.reason}")
    return choice


def _same_samples(data: TrialData, holdouts: dict[int, SplitArrays], sizes: set[int]) -> None:
    """Members of several image sizes must see the same samples in the same order."""
    first = min(sizes)
    for size in sizes:
        if list(data.split(size, VAL).ids) != list(data.split(first, VAL).ids) or list(
            holdouts[size].ids
        ) != list(holdouts[first].ids):
            raise ValueError(f"val/holdout samples differ between sizes {first} and {size}")


def refit_candidates(exp_dir: Path, top_k: int | None = None) -> list[Candidate]:
    """The ``top_k`` (default ``DEFAULT_TOP_K``) best distinct configurations a refit of
    ``exp_dir`` ensembles, the winner first (``needs_retraining`` says which it must train).

    Raises:
        ValueError: ``top_k`` < 1.
    """
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    record, spec = read_run(exp_dir)
    return top_distinct_candidates(exp_dir, spec, record.constants, read_best(exp_dir), top_k)


def refit(
    exp_dir: Path,
    data: TrialData | None = None,
    log: Any = print,
    progress: Progress | None = None,
    node_id: str | None = None,
    *,
    top_k: int | None = None,
    tta: bool | None = None,
    trained: Mapping[str, TrainedMember] | None = None,
) -> RefitResult:
    """Refit the ``top_k`` best distinct configurations of ``exp_dir`` and score the holdout.

    Args:
        exp_dir: an experiment directory with ``run.json``, ``space.yaml``, ``summary.csv`` and
            ``best.json``.
        data: the train/val data if already in memory (``hpa-tune run`` passes its own).
        log: where progress lines go.
        progress: called as ``progress(epochs_done, epochs_total)`` after each epoch (a bar).
        node_id: the Ray node this runs on (``remote_refit``), kept in ``model_info.json``.
        top_k: ensemble size (default ``DEFAULT_TOP_K``; 1 = the winner alone).
        tta: average the 8 flips/rotations of each image (default ``DEFAULT_TTA``).
        trained: members already retrained elsewhere, by trial id (on a cluster, each a Ray
            task of its own: ``ray_layer.remote_members``); the others are reused or retrained
            here, one after another.

    Returns:
        The refit directory and its metrics (also written to ``refit/metrics.json``).
    """
    exp_dir = Path(exp_dir)
    tta = DEFAULT_TTA if tta is None else tta
    candidates = refit_candidates(exp_dir, top_k)
    record, spec = read_run(exp_dir)
    data_dir = record.data_dir
    sizes = {c.cfg.image_size for c in candidates}  # members are scored at their full size
    needed = sizes | {s for c in candidates for s in c.cfg.training_sizes()}
    if data is None or not needed <= set(data.arrays):
        data = load_trial_data(data_dir, sorted(needed))
    log(
        f"refit: {len(candidates)} member(s) (trials {', '.join(c.trial_id for c in candidates)}), "
        f"TTA {'on' if tta else 'off'}"
    )
    members = obtain_members(
        exp_dir, candidates, data, log, progress, spec.metric, spec.mode, trained
    )
    holdouts = {size: cached_split(data_dir, HOLDOUT, size) for size in sizes}
    _same_samples(data, holdouts, sizes)
    probs = [_member_probs(m, data, holdouts[m.cfg.image_size]) for m in members]
    first = members[0].cfg.image_size
    val_targets = data.split(first, VAL).labels
    holdout_targets = holdouts[first].labels
    train_rates = data.train_positives / max(data.n_train, 1)
    # Members and weights chosen on val; the winner alone unless an ensemble beats it there.
    choice = _select_members(members, probs, val_targets, tta, log)
    predictors = _candidate_predictors(probs, choice)
    scores = {
        name: score_predictor(val_targets, v, holdout_targets, h, train_rates, members[0].cfg.seed)
        for name, (v, h) in predictors.items()
    }
    final_name = predictor_name(choice.is_ensemble, tta)
    final = scores[final_name]
    final_val, final_holdout = predictors[final_name]
    metrics = _metrics(
        members, final_name, final, scores, data, val_targets, final_val, holdout_targets
    )
    metrics["members"] = [m.trial_id for m, w in zip(members, choice.weights, strict=True) if w > 0]
    metrics["candidates"] = [m.trial_id for m in members]
    metrics["ensemble_selection"] = choice.record(metrics["candidates"])
    tasks = {m.trial_id: m.task for m in members if m.task}
    if tasks:  # members trained as Ray tasks of their own: on which node, from when to when
        metrics["member_tasks"] = tasks
    metrics["holdout_samples"] = len(holdout_targets)
    metrics["trivial_holdout_macro_f1"] = trivial_baselines(
        data.split(first, TRAIN).labels, holdout_targets, members[0].cfg.seed
    )
    out = exp_dir / REFIT_DIR
    _write_refit(out, members, data, final_name, final, metrics, tta, node_id, choice.weights)
    np.savez_compressed(
        out / PREDICTIONS_FILE,
        val_probs=final_val,
        val_targets=val_targets,
        holdout_probs=final_holdout,
        holdout_targets=holdout_targets,
        holdout_ids=np.asarray(holdouts[first].ids, dtype=str),
    )
    val_split = data.split(first, VAL)
    log_refit(
        tensorboard_dir(exp_dir),
        members[0].history,
        final_val,
        val_targets,
        final.thresholds,
        val_split.images,
        val_split.ids,
    )
    return RefitResult(out, metrics)


def _metrics(
    members: list[Member],
    final_name: str,
    final: PredictorScores,
    scores: dict[str, PredictorScores],
    data: TrialData,
    val_targets: np.ndarray,
    final_val: np.ndarray,
    holdout_targets: np.ndarray,
) -> dict[str, Any]:
    """``metrics.json``: the final predictor's headline, then every predictor and method."""
    names = class_names()
    winner = members[0]
    return {
        "trial_id": winner.trial_id,
        "arch": winner.cfg.arch,
        "epochs": winner.cfg.max_epochs,
        "best_epoch": winner.best_epoch,
        "predictor": final_name,
        "threshold_method": final.method,
        "members": [m.trial_id for m in members],
        "val_macro_f1@0.5": macro_f1(val_targets, final_val),
        "val_macro_f1_tuned": float(final.val_class_f1.mean()),
        "holdout_macro_f1@0.5": float(final.holdout_class_f1_05.mean()),
        "holdout_macro_f1_tuned": float(final.holdout_class_f1.mean()),
        "decision_rule": DECISION_RULE_RECORD,
        "predictors": {name: s.summary() for name, s in scores.items()},
        "per_class": [
            {
                "index": k,
                "name": names[k],
                "threshold": float(final.thresholds[k]),
                "holdout_f1@0.5": float(final.holdout_class_f1_05[k]),
                "holdout_f1": float(final.holdout_class_f1[k]),
                "val_f1_tuned": float(final.val_class_f1[k]),
                "train_positives": int(data.train_positives[k]),
                "holdout_positives": int(holdout_targets[:, k].sum()),
            }
            for k in range(len(names))
        ],
    }


def _write_refit(
    out: Path,
    members: list[Member],
    data: TrialData,
    final_name: str,
    final: PredictorScores,
    metrics: dict[str, Any],
    tta: bool,
    node_id: str | None,
    weights: np.ndarray,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    winner = members[0]
    # The winner alone at the top level, as before; the whole predictor in ensemble.json.
    torch.save(winner.model.state_dict(), out / MODEL_FILE)
    (out / CONFIG_FILE).write_text(winner.cfg.model_dump_json(indent=2) + "\n")
    stats = {str(s): {"mean": m, "std": d} for s, (m, d) in data.channel_stats.items()}
    entries = save_members(out, members)
    for entry, weight in zip(entries, weights, strict=True):
        entry["weight"] = float(weight)  # predict's weighted mean; 0: trained, not used
    ensemble = {"predictor": final_name, "tta": tta, "members": entries, "channel_stats": stats}
    (out / ENSEMBLE_FILE).write_text(json.dumps(ensemble, indent=2) + "\n")
    thresholds = {
        "thresholds": [float(t) for t in final.thresholds],
        "method": final.method,
        "classes": list(class_names()),
        "tuned_on": VAL,
    }
    (out / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2) + "\n")
    (out / REFIT_METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    mean, std = data.channel_stats[winner.cfg.image_size]
    info = {
        "image_size": winner.cfg.image_size,
        "channels": winner.cfg.channels,
        "mean": mean,
        "std": std,
        "class_names": list(class_names()),
        "train_positives": [int(c) for c in data.train_positives],
        "node_id": node_id,
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    pd.DataFrame(winner.history).to_csv(out / REFIT_HISTORY_FILE, index=False)
