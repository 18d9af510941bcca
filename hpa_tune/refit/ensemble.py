"""Probabilities of an ensemble of models, optionally averaged over the 8 symmetries of a square
(test-time augmentation, TTA).

Microscopy fields have no orientation, so a model's prediction of a rotated or flipped image is
as good an estimate as of the original; averaging all eight (the dihedral group D4) cancels part
of the model's orientation-dependent error. An ensemble's probability is the mean of its
members' probabilities, weighted as the refit chose on val (``scoring.ensemble_selection``);
each member reads its own batches (members may differ in image size and channels) over the
same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from hpa_tune.data.symmetry import DIHEDRAL_CODES, dihedral
from hpa_tune.train.engine import autocast_context


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    tta: bool = False,
    amp: bool | None = None,
) -> np.ndarray:
    """Sigmoid probabilities (N, K) over ``batches`` in eval mode; with ``tta`` the mean over the
    8 dihedral views of each batch. ``amp``: bf16 autocast (``None``: on CUDA only); pass the
    trial's resolved ``FastPath.amp`` so that ``fast_path: off`` predicts in fp32."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for x, _ in batches:
        views = DIHEDRAL_CODES if tta else (0,)
        total = None
        for code in views:
            with autocast_context(device, amp):
                logits = model(dihedral(x, code))
            p = torch.sigmoid(logits.float())
            total = p if total is None else total + p
        assert total is not None
        out.append((total / len(views)).cpu().numpy())
    return np.concatenate(out)


def ensemble_mean(
    member_probs: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """The ensemble's probabilities: the mean of its members' (all of one shape), weighted by
    ``weights`` (normalised; ``None``: equal weights, as in an ``ensemble.json`` without them)."""
    if not member_probs:
        raise ValueError("an ensemble needs at least one member")
    shapes = {np.shape(p) for p in member_probs}
    if len(shapes) != 1:
        raise ValueError(f"members' probabilities differ in shape: {sorted(shapes)}")
    w = np.ones(len(member_probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(member_probs),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"weights {list(w)} must be one non-negative number per member, not all zero"
        )
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_probs])
    return np.tensordot(w / w.sum(), stacked, axes=1)
