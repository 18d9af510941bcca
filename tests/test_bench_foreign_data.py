"""The foreign benchmark data: a valid Kaggle layout that ``prepare`` accepts, with real label sets;
the hand CNN's threshold arithmetic."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from bench.foreign_data import CHANNELS, generate, load_label_sets
from bench.hand_cnn import GRID, best_class_thresholds, best_global_threshold, macro_f1
from hpa_tune.data.prepare import PrepareOptions, prepare
from hpa_tune.data.shards import ShardManifest
from hpa_tune.scoring.metrics import macro_f1 as product_macro_f1


def test_foreign_data_writes_a_kaggle_layout_that_prepare_accepts_without_rejections(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, n=24, seed=3, size=64)
    rows = list(csv.DictReader((raw / "train.csv").open()))
    assert [*rows[0]] == ["Id", "Target"] and len(rows) == 24
    real = {" ".join(map(str, s)) for s in load_label_sets()}
    assert all(r["Target"] in real for r in rows)
    for name in CHANNELS:
        img = Image.open(raw / "train" / f"{rows[0]['Id']}_{name}.png")
        assert img.mode == "L" and img.size == (64, 64)
    result = prepare(
        raw, tmp_path / "shards", PrepareOptions(sizes=(32,), workers=1, expected_size=64)
    )
    assert not result.rejected
    manifest = ShardManifest.load(tmp_path / "shards")
    assert sum(manifest.splits.values()) == 24


def test_foreign_data_is_reproducible_from_its_seed(tmp_path):
    generate(tmp_path / "a", n=3, seed=5, size=64)
    generate(tmp_path / "b", n=3, seed=5, size=64)
    assert (tmp_path / "a" / "train.csv").read_text() == (tmp_path / "b" / "train.csv").read_text()
    sid = (tmp_path / "a" / "train.csv").read_text().splitlines()[1].split(",")[0]
    a = np.asarray(Image.open(tmp_path / "a" / "train" / f"{sid}_green.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "train" / f"{sid}_green.png"))
    assert np.array_equal(a, b)


def test_hand_cnn_macro_f1_and_grid_thresholds_agree_with_the_product_metric():
    rng = np.random.default_rng(0)
    y = rng.random((60, 5)) < 0.3
    prob = np.clip(y * 0.3 + rng.random((60, 5)) * 0.7, 0, 1)
    t = best_global_threshold(y, prob)
    assert t in GRID
    assert np.isclose(macro_f1(y, prob >= t), product_macro_f1(y, prob, t))
    assert all(macro_f1(y, prob >= t) >= product_macro_f1(y, prob, g) - 1e-12 for g in GRID)
    per = best_class_thresholds(y, prob)
    assert macro_f1(y, prob >= per) >= macro_f1(y, prob >= t) - 1e-12
