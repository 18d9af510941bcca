"""A real trial on a CUDA device: render a small HPA-like sample, prepare it, train, evaluate (needs a GPU).

What a GPU trial of ``hpa-tune run`` does, minus Ray (which schedules, but does not change, the
training): ``train_trial`` with ``device=cuda`` on prepared shards, per-epoch whole-set metrics,
then the refit-style evaluation (thresholds fitted on val, holdout scored). Prints one line per
epoch and a summary; exits non-zero if a metric is not finite or the model does not beat the
all-positive predictor on the holdout.

Run: ``python bench/check_trial_cuda.py [--n 1400] [--size 64] [--epochs 4] [--arch resnet18]``
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hpa_tune.data.builtin_sample.render import write_kaggle_sample
from hpa_tune.data.loader import BatchLoader, load_split
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.splits import HOLDOUT
from hpa_tune.scoring.metrics import macro_f1, per_class_f1
from hpa_tune.scoring.thresholds import ClassThresholds
from hpa_tune.train.build import build_loss
from hpa_tune.train.config import TrialConfig
from hpa_tune.train.engine import predict
from hpa_tune.train.trainable import run_epochs
from hpa_tune.train.trial_data import load_trial_data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--arch", nargs="+", default=["resnet18", "densenet121"])
    parser.add_argument("--device", default="cuda", help="cpu only to try the script itself")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_kaggle_sample(root / "raw", args.n, 28, size=256, seed=1, min_per_class=8)
        prepare(
            root / "raw",
            root / "shards",
            PrepareOptions(sizes=(args.size,), expected_size=256, seed=1),
        )
        print(f"rendered + prepared {args.n} samples in {time.perf_counter() - t0:.1f} s")
        data = load_trial_data(root / "shards", [args.size])
        holdout = load_split(root / "shards", HOLDOUT, args.size)
        ok = True
        for arch in args.arch:
            cfg = TrialConfig(
                arch=arch,
                image_size=args.size,
                max_epochs=args.epochs,
                batch_size=64,
                lr=1e-3,
                augment=True,
                loss_weighting="ln",
            )
            model = None
            for outcome in run_epochs(cfg, data, device=device):
                m = outcome.metrics
                print(
                    f"{arch} epoch {m['epoch']}: train loss {m['train_loss']:.4f} F1 {m['train_macro_f1']:.4f}, "
                    f"val loss {m['val_loss']:.4f} F1 {m['val_macro_f1']:.4f}, {m['images_per_s']:.0f} img/s"
                )
                ok &= all(math.isfinite(m[k]) for k in ("train_loss", "val_loss", "val_macro_f1"))
                model = outcome.model
            assert model is not None and next(model.parameters()).device.type == device.type
            # The refit recipe (hpa_tune.refit.evaluation, which also needs optuna): thresholds fitted
            # on val, holdout scored at 0.5 and at them.
            loss_fn = build_loss(cfg, data).to(device)
            mean, std = data.channel_stats[cfg.image_size]
            batches = BatchLoader(
                holdout, 64, channels=cfg.channels, mean=mean, std=std, device=device
            )
            held = predict(model, batches, loss_fn)
            thresholds = ClassThresholds().fit(outcome.val.targets, outcome.val.probs).thresholds_
            head = {
                "holdout_macro_f1@0.5": held.macro_f1,
                "holdout_macro_f1_tuned": float(
                    per_class_f1(held.targets, held.probs, thresholds).mean()
                ),
            }
            all_pos = macro_f1(holdout.labels, np.ones_like(holdout.labels, dtype=float))
            print(
                f"{arch}: holdout macro F1 @0.5 {head['holdout_macro_f1@0.5']:.4f}, tuned "
                f"{head['holdout_macro_f1_tuned']:.4f}, all-positive {all_pos:.4f}"
            )
            ok &= head["holdout_macro_f1_tuned"] > all_pos
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
