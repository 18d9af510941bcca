"""The 28 HPA 2018 localisation classes and the channel order used everywhere in hpa-tune."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources

NUM_CLASSES = 28

# Stored channel order of every prepared image: the first three form the study's RGB input
# (red = microtubules, green = protein, blue = nucleus); yellow (ER) is the optional 4th.
CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
CHANNEL_SETS: dict[str, tuple[str, ...]] = {"rgb": CHANNELS[:3], "rgby": CHANNELS}


def channel_indices(channels: str) -> list[int]:
    """Indices into CHANNELS for a channel set name (``rgb`` or ``rgby``)."""
    if channels not in CHANNEL_SETS:
        raise ValueError(f"unknown channels {channels!r}; expected one of {sorted(CHANNEL_SETS)}")
    return [CHANNELS.index(c) for c in CHANNEL_SETS[channels]]


@dataclass(frozen=True)
class ClassInfo:
    """One localisation class as listed in the Kaggle competition."""

    index: int
    name: str
    train_count: int
    train_frac: float
    probe_ratio: float


@cache
def class_table() -> tuple[ClassInfo, ...]:
    """The 28 classes with their Kaggle train counts and the public-LB probe ratios."""
    text = resources.files("hpa_tune.resources").joinpath("hpa2018_classes.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return tuple(
        ClassInfo(
            index=int(r["index"]),
            name=r["name"],
            train_count=int(r["train_count"]),
            train_frac=float(r["train_frac"]),
            probe_ratio=float(r["bestfitting_public_lb_probe_ratio"]),
        )
        for r in rows
    )


@cache
def class_names() -> tuple[str, ...]:
    """Class names in index order."""
    return tuple(c.name for c in class_table())


@cache
def kaggle_label_sets() -> tuple[tuple[int, ...], ...]:
    """The label set of every row of the real Kaggle train.csv (31,072 rows), in file order."""
    path = resources.files("hpa_tune.resources").joinpath("hpa2018_label_sets.txt.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    return tuple(tuple(sorted(int(t) for t in ln.split())) for ln in lines)
