"""Specification of the built-in HPA-like sample (hpa_tune.data.builtin_sample.render)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpa_tune.classes import CHANNELS, NUM_CLASSES, class_names, kaggle_label_sets
from hpa_tune.data.builtin_sample import render as sample
from hpa_tune.data.builtin_sample.render import (
    draw_label_sets,
    render_sample,
    sample_id,
    write_kaggle_sample,
)

KAGGLE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BACKGROUND = 12  # uint8 level above the black background (the dim debris specks aside)


def class_counts(label_sets: list[tuple[int, ...]]) -> Counter[int]:
    return Counter(label for labels in label_sets for label in labels)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def render(labels: list[int], size: int, seed: int) -> dict[str, np.ndarray]:
    return render_sample(labels, size, np.random.default_rng(seed))


# ---------------------------------------------------------------------------- label sets


def test_draw_label_sets_covers_every_class_min_times() -> None:
    label_sets = draw_label_sets(600, seed=0, min_per_class=20)

    counts = class_counts(label_sets)
    assert len(label_sets) == 600
    assert min(counts[c] for c in range(NUM_CLASSES)) >= 20


def test_draw_label_sets_reaches_classes_rarer_than_min_per_class() -> None:
    rods_and_rings = class_names().index("Rods & rings")  # 11 rows in the Kaggle train.csv
    assert sum(rods_and_rings in labels for labels in kaggle_label_sets()) < 20

    assert class_counts(draw_label_sets(560, seed=1, min_per_class=20))[rods_and_rings] >= 20


def test_draw_label_sets_is_deterministic_in_seed() -> None:
    assert draw_label_sets(600, seed=3) == draw_label_sets(600, seed=3)
    assert draw_label_sets(600, seed=3) != draw_label_sets(600, seed=4)


def test_draw_label_sets_only_uses_real_label_sets() -> None:
    assert set(draw_label_sets(2000, seed=5)) <= set(kaggle_label_sets())


def test_draw_label_sets_rejects_impossible_n() -> None:
    with pytest.raises(ValueError, match=r"559 .* 28 \* 20 = 560"):
        draw_label_sets(559, seed=0, min_per_class=20)


# ---------------------------------------------------------------------------- ids


def test_sample_id_is_kaggle_shaped_deterministic_and_unique() -> None:
    ids = [sample_id(seed, index) for seed in range(3) for index in range(3000)]

    assert all(KAGGLE_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert sample_id(7, 42) == sample_id(7, 42)


# ---------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size", [32, 64, 512])
def test_render_sample_returns_four_uint8_channels_of_size(size: int) -> None:
    channels = render([0, 25], size, seed=0)

    assert tuple(channels) == CHANNELS
    for image in channels.values():
        assert image.dtype == np.uint8
        assert image.shape == (size, size)


def test_render_sample_is_deterministic_in_generator_state() -> None:
    first, second = render([2, 21], 64, seed=9), render([21, 2, 2], 64, seed=9)

    for channel in CHANNELS:
        np.testing.assert_array_equal(first[channel], second[channel])


def test_render_sample_rejects_unknown_classes() -> None:
    with pytest.raises(ValueError, match="28"):
        render([3, 28], 64, seed=0)


@pytest.mark.parametrize("label", range(NUM_CLASSES), ids=class_names())
def test_every_class_puts_visible_protein_signal_in_green(label: int) -> None:
    for seed in range(3):
        green = render([label], 64, seed)["green"]
        assert (green > BACKGROUND + 40).sum() >= 4


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return mask


@pytest.mark.parametrize("seed", range(3))
def test_cells_show_nuclei_surrounded_by_microtubules_and_er(seed: int) -> None:
    channels = render([], 128, seed)
    nucleus = channels["blue"] > 60
    around_nucleus = dilate(nucleus, 5) & ~dilate(nucleus, 1)

    assert 0.03 < nucleus.mean() < 0.5
    for channel in ("red", "yellow"):
        assert channels[channel][around_nucleus].mean() > 2 * channels[channel][nucleus].mean()


def test_green_is_flat_background_without_labels() -> None:
    assert (render([], 64, seed=2)["green"] > BACKGROUND + 40).sum() == 0


def green_mass_in_nuclei(label: int, seed: int) -> float:
    channels = render([label], 128, seed)
    green = np.clip(channels["green"].astype(float) - BACKGROUND, 0, None)
    return float(green[channels["blue"] > 30].sum() / green.sum())


def test_nucleoplasm_signal_lies_inside_blue_nuclei() -> None:
    nucleoplasm, cytosol = class_names().index("Nucleoplasm"), class_names().index("Cytosol")

    for seed in range(5):
        assert green_mass_in_nuclei(nucleoplasm, seed) > 0.9
        assert green_mass_in_nuclei(cytosol, seed) < 0.1


def green_features(channels: dict[str, np.ndarray]) -> np.ndarray:
    """Location and texture of the protein signal, relative to the nuclei."""
    green = np.clip(channels["green"].astype(float) - BACKGROUND, 0, None)
    total = green.sum() + 1.0
    brightest = np.sort(green, axis=None)[::-1]
    dy, dx = np.gradient(green)
    return np.array(
        [
            green[channels["blue"] > 40].sum() / total,  # share inside nuclei
            np.log(total),  # amount
            brightest[: brightest.size // 50].sum() / total,  # concentration in a few spots
            (np.abs(dy) + np.abs(dx)).mean() / (green.mean() + 1.0),  # fineness of texture
        ]
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Nucleoplasm", "Cytosol"),
        ("Nucleoli", "Nuclear speckles"),
        ("Nuclear membrane", "Plasma membrane"),
        ("Endoplasmic reticulum", "Peroxisomes"),
        ("Actin filaments", "Mitochondria"),
        ("Cytokinetic bridge", "Mitotic spindle"),
        ("Plasma membrane", "Cell junctions"),
        ("Nuclear bodies", "Microtubule organizing center"),
    ],
)
def test_green_channel_depends_on_labels(first: str, second: str) -> None:
    """A nearest-centroid rule on four green-channel statistics at 64 px tells the two apart."""
    classes = [class_names().index(first), class_names().index(second)]
    features = np.array(
        [[green_features(render([c], 64, seed=1000 * c + i)) for i in range(20)] for c in classes]
    )  # (class, sample, feature)
    train, test = features[:, :10], features[:, 10:]
    mean, std = train.mean(axis=(0, 1)), train.std(axis=(0, 1)) + 1e-9
    centroids = ((train - mean) / std).mean(axis=1)

    distances = np.linalg.norm(((test - mean) / std)[:, :, None] - centroids, axis=-1)
    accuracy = (distances.argmin(axis=-1) == np.arange(2)[:, None]).mean()
    assert accuracy >= 0.85


# ---------------------------------------------------------------------------- Kaggle layout


def test_write_kaggle_sample_layout(tmp_path: Path) -> None:
    out = write_kaggle_sample(
        tmp_path / "hpa", n_train=30, n_test=28, size=32, seed=1, min_per_class=1, workers=1
    )

    assert out == tmp_path / "hpa"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpa"]  # no staging dir left behind
    assert sorted(p.name for p in out.iterdir()) == [
        "sample_submission.csv",
        "test",
        "test_labels.csv",
        "train",
        "train.csv",
    ]
    train, truth = read_csv(out / "train.csv"), read_csv(out / "test_labels.csv")
    submission = read_csv(out / "sample_submission.csv")
    assert train[0] == truth[0] == ["Id", "Target"]
    assert submission[0] == ["Id", "Predicted"]
    assert len(train) == 1 + 30
    assert [row[0] for row in submission[1:]] == [row[0] for row in truth[1:]]
    assert {row[1] for row in submission[1:]} == {"0"}
    for split, rows in (("train", train[1:]), ("test", truth[1:])):
        label_sets = [tuple(int(t) for t in target.split()) for _, target in rows]
        assert set(label_sets) <= set(kaggle_label_sets())
        assert set(class_counts(label_sets)) == set(range(NUM_CLASSES))
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(
            f"{id_}_{channel}.png" for id_, _ in rows for channel in CHANNELS
        )
    ids = [row[0] for row in train[1:] + truth[1:]]
    assert len(set(ids)) == len(ids)
    assert all(KAGGLE_ID.fullmatch(i) for i in ids)
    with Image.open(out / "test" / f"{ids[-1]}_yellow.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (32, 32))


def test_write_kaggle_sample_trains_on_draw_label_sets(tmp_path: Path) -> None:
    out = write_kaggle_sample(tmp_path / "hpa", 56, 28, size=32, seed=3, min_per_class=2, workers=1)

    targets = [tuple(int(t) for t in row[1].split()) for row in read_csv(out / "train.csv")[1:]]
    assert targets == draw_label_sets(56, seed=3, min_per_class=2)


def test_write_kaggle_sample_scales_min_per_class_down_for_the_test_split(tmp_path: Path) -> None:
    out = write_kaggle_sample(tmp_path / "hpa", 84, 56, size=32, min_per_class=3, workers=1)

    rows = read_csv(out / "test_labels.csv")[1:]
    counts = class_counts([tuple(int(t) for t in target.split()) for _, target in rows])
    assert len(rows) == 56
    assert min(counts[c] for c in range(NUM_CLASSES)) >= 2  # 56 // 28, as 3 is unsatisfiable


def test_write_kaggle_sample_is_identical_for_any_worker_count(tmp_path: Path) -> None:
    outputs = [
        write_kaggle_sample(
            tmp_path / f"w{workers}", 30, 28, size=64, seed=5, min_per_class=1, workers=workers
        )
        for workers in (1, 2)
    ]

    files = [sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) for out in outputs]
    assert files[0] == files[1]
    assert len(files[0]) == 3 + 4 * (30 + 28)
    for relative in files[0]:
        assert (outputs[0] / relative).read_bytes() == (outputs[1] / relative).read_bytes()


def test_write_kaggle_sample_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "hpa").mkdir()
    (tmp_path / "hpa" / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match="hpa"):
        write_kaggle_sample(tmp_path / "hpa", 28, 28, size=32, min_per_class=1, workers=1)
    assert [p.name for p in (tmp_path / "hpa").iterdir()] == ["notes.txt"]


def test_interrupted_write_leaves_no_sample_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[object] = []

    def render_then_interrupt(job: object) -> None:
        if rendered:
            raise KeyboardInterrupt
        rendered.append(job)

    monkeypatch.setattr(sample, "_render_job", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_kaggle_sample(tmp_path / "hpa", 28, 28, size=32, min_per_class=1, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_two_processes_preparing_the_sample_at_once_share_one_render(tmp_path: Path) -> None:
    """A second driver (or test worker) that asks for the built-in sample while the first renders
    it waits and reuses the finished sample; it never deletes the first one's work in progress."""
    import os
    import subprocess
    import sys

    code = (
        "from hpa_tune.data.builtin_sample.prepared import BuiltinSample, ensure_builtin_sample\n"
        "s = BuiltinSample(n_train=60, n_test=30, min_per_class=2, sizes=(32,))\n"
        "print(ensure_builtin_sample(s, log=print))\n"
    )
    env = {**os.environ, "HPA_TUNE_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    printed = [out.decode().splitlines() for out, _ in outputs]
    assert printed[0][-1] == printed[1][-1]  # the same prepared directory
    renders = sum(any(line.startswith("rendering") for line in lines) for lines in printed)
    assert renders == 1
    assert (Path(printed[0][-1]) / "manifest.json").is_file()
