"""What a competent person writes by hand: a plain 4-block CNN trained once, in plain torch.

It uses none of hpa_tune's models, engine or trainable; it reads the prepared shards (the same
train / val / holdout splits ``hpa-tune run`` uses) with hpa_tune's shard reader. Adam lr 1e-3,
batch 32, BCE with pos_weight ln(#neg/#pos) per class, random flips / 90-degree turns, a fixed
number of epochs, the last epoch's model; thresholds chosen on val on a 0.05 grid (one global
threshold, and one per class); macro F1 over the whole holdout.

    python bench/hand_cnn.py SHARDS --epochs 12 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpa_tune.data.loader import load_split

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over all classes of the whole set (a class with no true and no predicted positive
    scores 0, as scikit-learn's ``zero_division=0``)."""
    tp = (y & pred).sum(0)
    fp = (~y & pred).sum(0)
    fn = (y & ~pred).sum(0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1.mean())


def best_global_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """The grid threshold with the highest macro F1 on (y, prob)."""
    scores = [macro_f1(y, prob >= t) for t in GRID]
    return float(GRID[int(np.argmax(scores))])


def best_class_thresholds(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Per class, the grid threshold with the highest F1 of that class on (y, prob)."""
    pred = prob[None] >= GRID[:, None, None]  # (T, N, K)
    tp = (pred & y[None]).sum(1)
    fp = (pred & ~y[None]).sum(1)
    fn = (~pred & y[None]).sum(1)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return GRID[np.argmax(f1, axis=0)]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def hand_cnn(in_channels: int, num_classes: int) -> nn.Module:
    """Four conv blocks (32-64-128-256), global average pooling, dropout, a linear head."""
    return nn.Sequential(
        _block(in_channels, 32),
        _block(32, 64),
        _block(64, 128),
        _block(128, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(256, num_classes),
    )


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    k = int(torch.randint(4, (1,), generator=gen).item())
    return torch.rot90(x, k, dims=(2, 3))


def _predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [torch.sigmoid(model(x[i : i + 256])) for i in range(0, len(x), 256)]
    return torch.cat(out).numpy()


def train_and_score(
    shards: Path, epochs: int = 12, size: int = 64, channels: int = 3, seed: int = 0
) -> dict[str, float]:
    """Train the hand CNN on train, pick thresholds on val, score on holdout."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    splits = {s: load_split(shards, s, size) for s in ("train", "val", "holdout")}
    train_u8 = splits["train"].images[:, :channels].astype(np.float32) / 255.0
    mean = train_u8.mean(axis=(0, 2, 3), keepdims=True)
    std = train_u8.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def tensor(split: str) -> torch.Tensor:
        img = splits[split].images[:, :channels].astype(np.float32) / 255.0
        return torch.from_numpy((img - mean) / std)

    x = {s: tensor(s) for s in splits}
    y = {s: splits[s].labels.astype(bool) for s in splits}
    pos = y["train"].sum(0).clip(min=1)
    neg = len(y["train"]) - pos
    pos_weight = torch.tensor(np.log(neg / pos).clip(min=0.1), dtype=torch.float32)
    model = hand_cnn(channels, y["train"].shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    yt = torch.from_numpy(y["train"].astype(np.float32))
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            opt.zero_grad()
            loss = loss_fn(model(_augment(x["train"][idx], gen)), yt[idx])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - start
    p_val, p_hold = _predict(model, x["val"]), _predict(model, x["holdout"])
    t_global = best_global_threshold(y["val"], p_val)
    t_class = best_class_thresholds(y["val"], p_val)
    return {
        "epochs": epochs,
        "train_s": round(train_s, 1),
        "val_macro_f1_0.5": macro_f1(y["val"], p_val >= 0.5),
        "holdout_macro_f1_0.5": macro_f1(y["holdout"], p_hold >= 0.5),
        "global_threshold": t_global,
        "val_macro_f1_global": macro_f1(y["val"], p_val >= t_global),
        "holdout_macro_f1_global": macro_f1(y["holdout"], p_hold >= t_global),
        "val_macro_f1_per_class": macro_f1(y["val"], p_val >= t_class),
        "holdout_macro_f1_per_class": macro_f1(y["holdout"], p_hold >= t_class),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3, help="3 = rgb, 4 = rgby")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = train_and_score(args.shards, args.epochs, args.size, args.channels, args.seed)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
