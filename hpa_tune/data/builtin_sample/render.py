"""The built-in HPA-like sample: real Kaggle label sets rendered as cell-like four-channel images.

The tool has to run without the 2018 Kaggle download, so this module draws label sets from the
real train.csv rows and renders each as a field of a few cells: nuclei (blue), microtubules (red),
endoplasmic reticulum (yellow) and a protein channel (green) that sums one location pattern per
label, different enough in compartment and texture for a small CNN to learn at 64 px.

Scenes are drawn on a fixed 128 px canvas with vectorised numpy (dots and filaments are splatted,
then blurred) and resized with Pillow: a 512 px sample renders in milliseconds, and the scene does
not depend on the output size.
"""

from __future__ import annotations

import csv
import hashlib
import math
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from hpa_tune.classes import CHANNELS, NUM_CLASSES, kaggle_label_sets

_CANVAS = 128
_TAU = 2 * math.pi
_LINE_STEP = 0.8  # filament sample spacing; the blur (sigma >= 0.6) leaves no beading
# Split codes mixed into per-sample seeds; not 0: SeedSequence([seed, 0, 0]) == SeedSequence(seed).
_TRAIN_CODE, _TEST_CODE = 1, 2
_PNG_COMPRESS_LEVEL = 1
_PNG_STRATEGY = 3  # zlib Z_RLE: faster than the default strategy at level 1, and smaller


# ---------------------------------------------------------------------------- label sets


@cache
def _rows_by_class() -> tuple[np.ndarray, ...]:
    rows: list[list[int]] = [[] for _ in range(NUM_CLASSES)]
    for row, labels in enumerate(kaggle_label_sets()):
        for label in labels:
            rows[label].append(row)
    return tuple(np.asarray(r, dtype=np.int64) for r in rows)


def draw_label_sets(n: int, seed: int, min_per_class: int = 20) -> list[tuple[int, ...]]:
    """Draw label sets from the real Kaggle rows, rebalanced so that every class is present.

    For every class, ``min_per_class`` real rows containing it are picked (with replacement for
    classes with fewer rows than that), the rest are uniform draws of real rows, and the result
    is shuffled.

    Args:
        n: Number of label sets.
        seed: Seed of the draw; the same seed gives the same list.
        min_per_class: Fewest label sets each of the 28 classes must appear in.

    Returns:
        ``n`` label sets, each a sorted tuple of class indices taken from ``kaggle_label_sets()``.

    Raises:
        ValueError: If ``n < 28 * min_per_class`` or an argument is negative.
    """
    return _draw_label_sets(n, np.random.default_rng(seed), min_per_class)


def _draw_label_sets(n: int, rng: np.random.Generator, min_per_class: int) -> list[tuple[int, ...]]:
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    required = NUM_CLASSES * min_per_class
    if n < required:
        raise ValueError(
            f"cannot draw {n} label sets with each of the {NUM_CLASSES} classes in at least "
            f"{min_per_class} of them: n must be >= {NUM_CLASSES} * {min_per_class} = {required}"
        )
    real = kaggle_label_sets()
    picks = [
        rng.choice(rows, size=min_per_class, replace=len(rows) < min_per_class)
        for rows in _rows_by_class()
    ]
    picks.append(rng.integers(0, len(real), size=n - required))
    return [real[row] for row in rng.permutation(np.concatenate(picks))]


# ---------------------------------------------------------------------------- ids

_ID_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so index -> timestamp is a bijection modulo 2**60


def sample_id(seed: int, index: int) -> str:
    """A Kaggle-style Id (a version-1 UUID such as ``00070df0-bbc3-11e8-b2bc-ac1f6b6435d0``).

    The timestamp field is a bijection of ``index``, so Ids of one seed never collide; the node
    and clock fields come from a hash of ``seed``.

    Raises:
        ValueError: If ``seed`` or ``index`` is negative.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    digest = hashlib.blake2b(f"hpa-tune sample {seed}".encode(), digest_size=16).digest()
    timestamp = (index * _ID_MULTIPLIER + int.from_bytes(digest[:8])) % (1 << 60)
    clock_seq = int.from_bytes(digest[8:10]) & 0x3FFF
    fields = (
        timestamp & 0xFFFFFFFF,
        (timestamp >> 32) & 0xFFFF,
        (timestamp >> 48) | 0x1000,
        (clock_seq >> 8) | 0x80,
        clock_seq & 0xFF,
        int.from_bytes(digest[10:]),
    )
    return str(uuid.UUID(fields=fields))


# ---------------------------------------------------------------------------- canvas primitives


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


@cache
def _taps(sigma: float) -> np.ndarray:
    offsets = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1, dtype=np.float32)
    return np.exp(-(offsets**2) / (2 * sigma * sigma))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, unnormalised so that a unit impulse keeps a peak of 1."""
    taps = _taps(sigma)
    padded = np.pad(image, len(taps) // 2)
    rows = np.zeros((_CANVAS, padded.shape[1]), np.float32)
    for i, weight in enumerate(taps):
        rows += weight * padded[i : i + _CANVAS]
    out = np.zeros((_CANVAS, _CANVAS), np.float32)
    for i, weight in enumerate(taps):
        out += weight * rows[:, i : i + _CANVAS]
    return out


def _splat(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum ``weights`` into the canvas pixels ``(y, x)``; pixels off the canvas are dropped."""
    inside = (y >= 0) & (y < _CANVAS) & (x >= 0) & (x < _CANVAS)
    flat = np.where(inside, y * _CANVAS + x, 0)
    image = np.bincount(flat, weights * inside, minlength=_CANVAS * _CANVAS)
    return image.reshape(_CANVAS, _CANVAS).astype(np.float32)


def _dots(points: np.ndarray, sigma: float, amp: float) -> np.ndarray:
    """Gaussian dots of peak ``amp`` at ``points`` ((n, 2) y, x canvas coordinates)."""
    y, x = np.rint(points.reshape(-1, 2)).astype(np.int64).T
    return _blur(_splat(y, x, np.full(len(y), amp)), sigma)


def _lines(starts: np.ndarray, ends: np.ndarray, sigma: float, amp: float) -> np.ndarray:
    """Straight filaments with a cross-section of peak ``amp``."""
    vectors = ends - starts
    lengths = np.hypot(vectors[:, 0], vectors[:, 1])
    counts = np.maximum(1, np.ceil(lengths / _LINE_STEP)).astype(np.int64)
    segment = np.repeat(np.arange(len(starts)), counts)
    t = (np.arange(counts.sum()) - (np.cumsum(counts) - counts)[segment] + 0.5) / counts[segment]
    points = starts[segment] + t[:, None] * vectors[segment]
    density = (lengths / counts)[segment] * amp / (math.sqrt(_TAU) * sigma)
    # Bilinear splatting keeps thin lines smooth instead of staircased.
    base = np.floor(points)
    (fy, fx), (y, x) = (points - base).T, base.astype(np.int64).T
    shares = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    y, x = np.concatenate([y, y, y + 1, y + 1]), np.concatenate([x, x + 1, x, x + 1])
    return _blur(_splat(y, x, shares * np.tile(density, 4)), sigma)


def _paths(paths: np.ndarray, sigma: float, amp: float) -> np.ndarray:
    """Polylines ((n, m, 2) points) drawn as filaments."""
    return _lines(paths[:, :-1].reshape(-1, 2), paths[:, 1:].reshape(-1, 2), sigma, amp)


def _rings(centres: np.ndarray, radius: float | np.ndarray, sigma: float, amp: float) -> np.ndarray:
    circle = _unit(np.linspace(0, _TAU, 13))
    return _paths(centres[:, None] + np.reshape(radius, (-1, 1, 1)) * circle, sigma, amp)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Zero-mean noise of about unit variance with features about ``128 / cells`` pixels across."""
    # Bicubic upsampling in Pillow: a BLAS product would start a thread pool in every process.
    grid = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32))
    return 1.2 * np.asarray(grid.resize((_CANVAS, _CANVAS), Image.Resampling.BICUBIC))


def _soft_below(value: np.ndarray, edge: float, width: float) -> np.ndarray:
    return np.clip((edge - value) / width + 0.5, 0.0, 1.0)


def _band(value: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((value - centre) / width) ** 2))


def _unit(angles: np.ndarray | float) -> np.ndarray:
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def _across(vectors: np.ndarray) -> np.ndarray:
    return vectors[..., ::-1] * np.array([1, -1], np.float32)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-6)


# ---------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class _Ellipses:
    """A batch of ellipses; each method's ``which`` picks the ellipse (index or index array)."""

    centres: np.ndarray  # (n, 2) y, x
    axes: np.ndarray  # (n, 2) semi-axes along and across the angle
    angles: np.ndarray  # (n,) direction of the first axis, from the x axis towards y

    def _local(
        self, which: np.ndarray | int, y: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        s, c, axes = np.sin(self.angles[which]), np.cos(self.angles[which]), self.axes[which]
        dy, dx = y - self.centres[which, 0], x - self.centres[which, 1]
        return (dy * s + dx * c) / axes[..., 0], (dy * c - dx * s) / axes[..., 1]

    def rho(self, which: np.ndarray | int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Normalised distance from the centre: 1 on the outline."""
        u, v = self._local(which, y, x)
        return np.sqrt(u * u + v * v)

    def points(self, which: np.ndarray, radius: np.ndarray | float, phi: np.ndarray) -> np.ndarray:
        """Points at normalised ``radius`` and parametric angle ``phi``."""
        s, c, axes = np.sin(self.angles[which]), np.cos(self.angles[which]), self.axes[which]
        u, v = radius * axes[..., 0] * np.cos(phi), radius * axes[..., 1] * np.sin(phi)
        centres = self.centres[which]
        return np.stack([centres[..., 0] + u * s + v * c, centres[..., 1] + u * c - v * s], -1)

    def chord(self, which: np.ndarray, origins: np.ndarray, heading: np.ndarray) -> np.ndarray:
        """Ray parameters (n, 2) where ``origins + t * heading`` cross the outline."""
        u, v = self._local(which, origins[:, 0], origins[:, 1])
        u_end, v_end = self._local(which, *(origins + heading).T)
        du, dv = u_end - u, v_end - v
        qa, qb, qc = du * du + dv * dv, 2 * (u * du + v * dv), u * u + v * v - 1
        root = np.sqrt(np.maximum(qb * qb - 4 * qa * qc, 0))
        return np.stack([-qb - root, -qb + root], axis=1) / (2 * qa[:, None])

    def window(self, k: int, level: float) -> tuple[slice, slice]:
        """Canvas rows and columns of the bounding box of ``rho <= level`` of ellipse ``k``."""
        (a, b), s, c = self.axes[k], math.sin(self.angles[k]), math.cos(self.angles[k])
        half = level * np.array([math.hypot(a * s, b * c), math.hypot(a * c, b * s)])
        low = np.clip(np.floor(self.centres[k] - half), 0, _CANVAS).astype(int)
        high = np.clip(np.ceil(self.centres[k] + half) + 1, 0, _CANVAS).astype(int)
        return slice(low[0], high[0]), slice(low[1], high[1])


@dataclass(frozen=True)
class _Scene:
    bodies: _Ellipses
    nuclei: _Ellipses
    owner: np.ndarray  # per pixel, the cell it belongs to (smallest normalised distance)
    cell_rho: np.ndarray  # per pixel, normalised distance from its cell's centre (1: outline)
    nucleus_rho: np.ndarray  # the same for its cell's nucleus
    contact: np.ndarray  # near 1 where two cells touch
    cell_mask: np.ndarray
    nucleus_mask: np.ndarray
    cytoplasm_mask: np.ndarray
    microtubules: np.ndarray  # (n, m, 2) polylines from the nuclei to the cell edges
    microtubule_image: np.ndarray
    reticulum: np.ndarray

    @property
    def count(self) -> int:
        return len(self.bodies.angles)


def _place_cells(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Centres and radii of 3-8 cells, most touching a neighbour as in a growing colony."""
    count = int(rng.integers(3, 9))
    radii = _CANVAS * 0.40 / math.sqrt(count) * rng.uniform(0.85, 1.15, count)
    centres: list[np.ndarray] = []
    for radius in radii:
        for _attempt in range(40):  # after that, accept an overlap
            if centres and rng.random() < 0.85:
                k = int(rng.integers(len(centres)))
                gap = (radii[k] + radius) * rng.uniform(0.75, 0.95)
                centre = centres[k] + gap * _unit(rng.uniform(0, _TAU))
            else:
                centre = rng.uniform(0.15, 0.85, 2) * _CANVAS
            distances = np.hypot(*(np.array(centres) - centre).T) if centres else np.inf
            on_canvas = (centre > 0.05 * _CANVAS).all() and (centre < 0.95 * _CANVAS).all()
            if on_canvas and np.all(distances >= 0.75 * (radius + radii[: len(centres)])):
                break
        centres.append(centre)
    return np.array(centres, np.float32), radii.astype(np.float32)


def _make_cells(rng: np.random.Generator) -> tuple[_Ellipses, _Ellipses]:
    centres, radii = _place_cells(rng)
    n = len(radii)
    stretch, angles = np.sqrt(rng.uniform(1.0, 1.35, n)), rng.uniform(0, math.pi, n)
    bodies = _Ellipses(centres, np.stack([radii * stretch, radii / stretch], 1), angles)
    scale, squash = radii * rng.uniform(0.42, 0.52, n), np.sqrt(rng.uniform(1.0, 1.25, n))
    nucleus_centres = bodies.points(np.arange(n), rng.uniform(0, 0.15, n), rng.uniform(0, _TAU, n))
    nucleus_axes = np.stack([scale * squash, scale / squash], 1)
    return bodies, _Ellipses(nucleus_centres, nucleus_axes, angles + rng.normal(0, 0.3, n))


def _cell_maps(bodies: _Ellipses, nuclei: _Ellipses, wobble: np.ndarray) -> list[np.ndarray]:
    """Per pixel: owning cell, its normalised distance, the runner-up's, and the nucleus's.

    Each cell only visits the bounding box of its (wobbly) outline, which keeps this cheap.
    """
    y, x = _grid()
    owner = np.zeros((_CANVAS, _CANVAS), np.int64)
    cell_rho, second_rho, nucleus_rho = np.full((3, _CANVAS, _CANVAS), 9.0, np.float32)
    for k in range(len(bodies.angles)):
        box = bodies.window(k, 1.4)
        rho = bodies.rho(k, y[box], x[box]) + wobble[box]
        closer = rho < cell_rho[box]
        second_rho[box] = np.minimum(second_rho[box], np.maximum(cell_rho[box], rho))
        cell_rho[box] = np.minimum(cell_rho[box], rho)
        owner[box] = np.where(closer, k, owner[box])
        nucleus_rho[box] = np.where(closer, nuclei.rho(k, y[box], x[box]), nucleus_rho[box])
    return [owner, cell_rho, second_rho, nucleus_rho]


def _per_cell(rng: np.random.Generator, cells: int, count: tuple[int, int]) -> np.ndarray:
    """The cell index of each of ``count[0]..count[1]`` (random) items per cell."""
    return np.repeat(np.arange(cells), rng.integers(count[0], count[1] + 1, cells))


def _microtubule_paths(
    rng: np.random.Generator, bodies: _Ellipses, nuclei: _Ellipses
) -> np.ndarray:
    """Slightly bent polylines (n, 5, 2) radiating from each nucleus rim to its cell edge."""
    which = _per_cell(rng, len(bodies.angles), (20, 28))
    starts = nuclei.points(which, 1.05, rng.uniform(0, _TAU, len(which)))
    outward = np.arctan2(*(starts - nuclei.centres[which]).T)
    heading = _unit(outward + rng.normal(0, 0.35, len(which)))
    length = np.maximum(bodies.chord(which, starts, heading)[:, 1] * 0.95, 0)
    t = np.linspace(0, 1, 5, dtype=np.float32)[None, :, None]
    bend = rng.normal(0, 0.6, (len(which), 1, 1)) * np.sin(math.pi * t) * _across(heading)[:, None]
    return starts[:, None] + length[:, None, None] * t * heading[:, None] + bend


def _build_scene(rng: np.random.Generator) -> _Scene:
    bodies, nuclei = _make_cells(rng)
    owner, cell_rho, second_rho, nucleus_rho = _cell_maps(
        bodies, nuclei, 0.12 * _smooth_noise(rng, 8)
    )
    nucleus_rho += 0.05 * _smooth_noise(rng, 16)
    cell_mask = _soft_below(cell_rho, 1.0, 0.12)
    nucleus_mask = _soft_below(nucleus_rho, 1.0, 0.2) * cell_mask
    cytoplasm_mask = cell_mask - nucleus_mask
    microtubules = _microtubule_paths(rng, bodies, nuclei)
    ridges = np.clip(1 - np.abs(_smooth_noise(rng, 40)) / 1.2, 0, 1) ** 3  # a reticular network
    return _Scene(
        bodies=bodies,
        nuclei=nuclei,
        owner=owner,
        cell_rho=cell_rho,
        nucleus_rho=nucleus_rho,
        contact=_band(second_rho - cell_rho, 0, 0.1) * (second_rho < 1.05) * cell_mask,
        cell_mask=cell_mask,
        nucleus_mask=nucleus_mask,
        cytoplasm_mask=cytoplasm_mask,
        microtubules=microtubules,
        microtubule_image=_paths(microtubules, 0.6, 1.0) * cell_mask,
        reticulum=np.sqrt(np.clip(1.2 - cell_rho, 0, 1)) * cytoplasm_mask * (0.3 + 0.7 * ridges),
    )


# ---------------------------------------------------------------------------- protein patterns
# A pattern maps (scene, generator) to a canvas peaking near 1 in the compartment its class
# names, with a texture that stays distinct after downsampling to 64 px.

_Pattern = Callable[[_Scene, np.random.Generator], np.ndarray]


def _nuclear_points(
    s: _Scene, rng: np.random.Generator, count: tuple[int, int], reach: float
) -> np.ndarray:
    which = _per_cell(rng, s.count, count)
    radius = reach * np.sqrt(rng.random(len(which)))  # uniform over the area
    return s.nuclei.points(which, radius, rng.uniform(0, _TAU, len(which)))


def _cytoplasm_points(
    s: _Scene, rng: np.random.Generator, count: tuple[int, int], radii: tuple[float, float]
) -> np.ndarray:
    which = _per_cell(rng, s.count, count)
    radius = np.sqrt(rng.uniform(radii[0] ** 2, radii[1] ** 2, len(which)))
    points = s.bodies.points(which, radius, rng.uniform(0, _TAU, len(which)))
    return points[s.nuclei.rho(which, points[:, 0], points[:, 1]) > 1.15]


def _beside_nuclei(s: _Scene, rng: np.random.Generator, radius: float) -> np.ndarray:
    """One point per cell, at normalised ``radius`` of its nucleus in a random direction."""
    return s.nuclei.points(np.arange(s.count), radius, rng.uniform(0, _TAU, s.count))


def _walks(
    rng: np.random.Generator, starts: np.ndarray, steps: int, step: float, turning: float
) -> np.ndarray:
    """Random-walk polylines (n, steps + 1, 2) whose heading drifts by ``turning`` per step."""
    turns = np.cumsum(rng.normal(0, turning, (len(starts), steps)), axis=1)
    offsets = np.cumsum(step * _unit(rng.uniform(0, _TAU, (len(starts), 1)) + turns), axis=1)
    return np.concatenate([starts[:, None], starts[:, None] + offsets], axis=1)


def _fibrillar_centres(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Clusters of fine dots where nucleoli would be."""
    centres = np.repeat(_nuclear_points(s, rng, (1, 3), 0.5), 4, axis=0)
    return _dots(centres + rng.normal(0, 1.3, centres.shape), 0.6, 1.0)


def _golgi(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A crescent hugging one side of each nucleus."""
    which = np.repeat(np.arange(s.count), 7)
    phi = rng.uniform(0, _TAU, s.count)[which] + np.tile(np.linspace(-0.7, 0.7, 7), s.count)
    return _dots(s.nuclei.points(which, rng.normal(1.3, 0.06, len(which)), phi), 1.1, 0.9)


def _intermediate_filaments(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Long wavy filaments meandering through the cells."""
    which = np.repeat(np.arange(s.count), 7)
    radius = np.sqrt(rng.uniform(0.1, 0.8, len(which)))
    starts = s.bodies.points(which, radius, rng.uniform(0, _TAU, len(which)))
    return _paths(_walks(rng, starts, 14, 2.2, 0.3), 0.7, 0.75) * s.cell_mask


def _actin_fibres(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Straight, parallel stress fibres spanning each cell."""
    per_cell = rng.integers(5, 9, s.count)
    which = np.repeat(np.arange(s.count), per_cell)
    rank = np.arange(len(which)) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    spread = 1.5 * rank / (per_cell[which] - 1) - 0.75 + rng.normal(0, 0.05, len(which))
    heading = _unit(rng.uniform(0, math.pi, s.count)[which])
    offset = (spread * s.bodies.axes[which].min(1))[:, None] * _across(heading)
    origins = s.bodies.centres[which] + offset
    t = 0.92 * s.bodies.chord(which, origins, heading)
    return _lines(origins + t[:, :1] * heading, origins + t[:, 1:] * heading, 0.6, 0.9)


def _focal_adhesions(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Short radial dashes just inside the cell edge."""
    which = _per_cell(rng, s.count, (6, 10))
    radius, phi = rng.uniform(0.82, 0.9, len(which)), rng.uniform(0, _TAU, len(which))
    middle = s.bodies.points(which, radius, phi)
    half = 2.2 * _normalised(middle - s.bodies.centres[which])
    return _lines(middle - half, middle + half, 0.8, 1.0)


def _cytokinetic_bridges(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A thin bar with a bright midbody between up to three pairs of neighbouring cells."""
    centres, radii = s.bodies.centres, s.bodies.axes.mean(1)
    first, second = np.triu_indices(s.count, 1)
    closeness = np.hypot(*(centres[first] - centres[second]).T) / (radii[first] + radii[second])
    pairs = np.argsort(closeness, kind="stable")[: int(rng.integers(1, 4))]
    i, j = first[pairs], second[pairs]
    towards = _normalised(centres[j] - centres[i])
    starts = centres[i] + 0.45 * radii[i, None] * towards
    ends = centres[j] - 0.45 * radii[j, None] * towards
    return _lines(starts, ends, 0.9, 1.0) + _dots((starts + ends) / 2, 1.8, 1.0)


def _mitotic_spindles(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A lens of arcs between two poles over the nuclei of about half the cells."""
    dividing = rng.random(s.count) < 0.5
    dividing[rng.integers(s.count)] = True
    centres, axes = s.nuclei.centres[dividing, None, None], s.nuclei.axes[dividing, None, None]
    along = _unit(s.nuclei.angles[dividing])[:, None, None]
    t = np.linspace(-1, 1, 9)[:, None]  # pole to pole
    bulge = np.linspace(-0.8, 0.8, 7)[:, None, None] * np.cos(0.5 * math.pi * t)
    half = 0.95 * axes[..., :1] * along  # centre to pole
    paths = centres + t * half + axes[..., 1:] * bulge * _across(along)  # (cell, arc, point, 2)
    poles = np.concatenate([centres - half, centres + half]).reshape(-1, 2)
    return _paths(paths.reshape(-1, 9, 2), 0.6, 0.7) + _dots(poles, 1.0, 1.0)


def _centrosomes(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Two close dots beside each nucleus."""
    middle = _beside_nuclei(s, rng, 1.4)
    half = 1.8 * _unit(rng.uniform(0, _TAU, s.count))
    return _dots(np.concatenate([middle - half, middle + half]), 0.9, 1.0)


def _lipid_droplets(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Small hollow rings in the cytoplasm."""
    centres = _cytoplasm_points(s, rng, (4, 8), (0.35, 0.9))
    return _rings(centres, rng.uniform(2.0, 3.0, len(centres)), 0.6, 0.8)


def _mitochondria(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Short worm-like segments throughout the cytoplasm."""
    starts = _cytoplasm_points(s, rng, (15, 25), (0.35, 0.92))
    return _paths(_walks(rng, starts, 3, 1.6, 0.6), 0.6, 0.85)


def _rods_and_rings(s: _Scene, rng: np.random.Generator) -> np.ndarray:
    """A few bright rods and rings, larger than lipid droplets."""
    centres = _cytoplasm_points(s, rng, (2, 3), (0.45, 0.85))
    ring = rng.random(len(centres)) < 0.5
    rods, half = centres[~ring], 3.5 * _unit(rng.uniform(0, math.pi, int((~ring).sum())))
    return _lines(rods - half, rods + half, 0.7, 1.0) + _rings(centres[ring], 3.2, 0.7, 1.0)


# Index = class index in hpa_tune.classes.class_names().
_PATTERNS: tuple[_Pattern, ...] = (
    # 0 Nucleoplasm: the whole nucleus
    lambda s, rng: 0.85 * s.nucleus_mask,
    # 1 Nuclear membrane: the nucleus rim
    lambda s, rng: _band(s.nucleus_rho, 0.95, 0.14) * s.cell_mask,
    # 2 Nucleoli: a few large blobs in the nucleus
    lambda s, rng: _dots(_nuclear_points(s, rng, (1, 3), 0.55), 2.0, 1.0),
    # 3 Nucleoli fibrillar center
    _fibrillar_centres,
    # 4 Nuclear speckles: many small dots over a faint nucleoplasm
    lambda s, rng: 0.15 * s.nucleus_mask + _dots(_nuclear_points(s, rng, (12, 20), 0.85), 0.8, 0.8),
    # 5 Nuclear bodies: one to three distinct small dots
    lambda s, rng: _dots(_nuclear_points(s, rng, (1, 3), 0.7), 1.0, 1.0),
    # 6 Endoplasmic reticulum: the reticular cloud of the yellow channel
    lambda s, rng: s.reticulum,
    # 7 Golgi apparatus
    _golgi,
    # 8 Peroxisomes: many fine cytoplasmic dots
    lambda s, rng: _dots(_cytoplasm_points(s, rng, (25, 40), (0.3, 0.95)), 0.6, 0.75),
    # 9 Endosomes: medium dots around the nucleus
    lambda s, rng: _dots(_cytoplasm_points(s, rng, (12, 18), (0.35, 0.7)), 0.9, 0.85),
    # 10 Lysosomes: fewer, larger dots towards the cell edge
    lambda s, rng: _dots(_cytoplasm_points(s, rng, (7, 11), (0.55, 0.92)), 1.3, 0.9),
    # 11 Intermediate filaments
    _intermediate_filaments,
    # 12 Actin filaments
    _actin_fibres,
    # 13 Focal adhesion sites
    _focal_adhesions,
    # 14 Microtubules: the radial filaments of the red channel
    lambda s, rng: 0.85 * s.microtubule_image,
    # 15 Microtubule ends: dots at the filament tips
    lambda s, rng: _dots(s.microtubules[:, -1], 0.75, 0.85),
    # 16 Cytokinetic bridge
    _cytokinetic_bridges,
    # 17 Mitotic spindle
    _mitotic_spindles,
    # 18 Microtubule organizing center: one dot beside the nucleus
    lambda s, rng: _dots(_beside_nuclei(s, rng, 1.35), 1.4, 1.0),
    # 19 Centrosome
    _centrosomes,
    # 20 Lipid droplets
    _lipid_droplets,
    # 21 Plasma membrane: the cell outline, including where cells touch
    lambda s, rng: np.maximum(_band(s.cell_rho, 0.94, 0.07), 0.7 * s.contact),
    # 22 Cell junctions: only where cells touch
    lambda s, rng: s.contact,
    # 23 Mitochondria
    _mitochondria,
    # 24 Aggresome: one large bright blob beside the nucleus
    lambda s, rng: _dots(_beside_nuclei(s, rng, 1.6), 2.6, 1.0),
    # 25 Cytosol: the whole cytoplasm
    lambda s, rng: 0.7 * s.cytoplasm_mask,
    # 26 Cytoplasmic bodies: one to three medium blobs
    lambda s, rng: _dots(_cytoplasm_points(s, rng, (1, 3), (0.5, 0.85)), 1.9, 1.0),
    # 27 Rods & rings
    _rods_and_rings,
)
assert len(_PATTERNS) == NUM_CLASSES


# ---------------------------------------------------------------------------- rendering


def render_sample(
    labels: Sequence[int], size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Render one HPA-like sample.

    Args:
        labels: Class indices whose patterns the protein (green) channel shows; order and
            repeats do not matter.
        size: Edge length of the square images in pixels.
        rng: Source of randomness; the same state and arguments give the same images.

    Returns:
        ``{"red", "green", "blue", "yellow"}`` (``CHANNELS`` order) -> uint8 ``(size, size)``.

    Raises:
        ValueError: If a label is not a class index or ``size < 1``.
    """
    return {c: np.array(image) for c, image in _render_images(labels, size, rng).items()}


def _render_images(
    labels: Sequence[int], size: int, rng: np.random.Generator
) -> dict[str, Image.Image]:
    classes = sorted({int(label) for label in labels})
    unknown = [c for c in classes if not 0 <= c < NUM_CLASSES]
    if unknown:
        raise ValueError(f"labels {unknown} are not class indices 0..{NUM_CLASSES - 1}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pixels = np.rint(np.clip(_render_canvases(classes, rng), 0, 1) * 255).astype(np.uint8)
    return {c: _resized(Image.fromarray(p), size) for c, p in zip(CHANNELS, pixels, strict=True)}


def _render_canvases(classes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """The four channels on the canvas, in ``CHANNELS`` order, with values around [0, 1]."""
    scene = _build_scene(rng)
    protein = np.zeros((_CANVAS, _CANVAS), np.float32)
    for label in classes:
        protein += rng.uniform(0.7, 1.0) * _PATTERNS[label](scene, rng)
    expression, staining = rng.uniform(0.6, 1.0, (2, scene.count)).astype(np.float32)
    canvases = {
        "red": 0.45 * scene.microtubule_image + 0.12 * scene.cytoplasm_mask,
        "green": protein * expression[scene.owner],
        "blue": scene.nucleus_mask * (0.6 + 0.2 * _smooth_noise(rng, 32)) * staining[scene.owner],
        "yellow": 0.85 * scene.reticulum + 0.06 * scene.cytoplasm_mask,
    }
    # Specks of debris on a black background stand in for camera noise: pixel noise would double
    # the PNG encoding time (Pillow's per-row filter search skips only flat rows).
    return np.stack([canvases[c] for c in CHANNELS]) + _debris(rng)


def _debris(rng: np.random.Generator) -> np.ndarray:
    """Dim specks of one canvas pixel (soft blobs once upsampled), as (channel, y, x) canvases."""
    count = int(rng.integers(16, 64))
    where = (rng.integers(0, len(CHANNELS), count), *rng.integers(0, _CANVAS, (2, count)))
    debris = np.zeros((len(CHANNELS), _CANVAS, _CANVAS), np.float32)
    np.add.at(debris, where, rng.uniform(0.05, 0.2, count).astype(np.float32))
    return debris


def _resized(image: Image.Image, size: int) -> Image.Image:
    if size == _CANVAS:
        return image
    # Area averaging when shrinking, as training pipelines downsample real HPA images.
    method = Image.Resampling.BILINEAR if size > _CANVAS else Image.Resampling.BOX
    return image.resize((size, size), method)


# ---------------------------------------------------------------------------- Kaggle layout


@dataclass(frozen=True)
class _Job:
    directory: Path
    sample_id: str
    labels: tuple[int, ...]
    size: int
    seed: int
    split_code: int
    index: int


def _render_job(job: _Job) -> None:
    rng = np.random.default_rng([job.seed, job.split_code, job.index])
    for channel, image in _render_images(job.labels, job.size, rng).items():
        path = job.directory / f"{job.sample_id}_{channel}.png"
        image.save(path, compress_level=_PNG_COMPRESS_LEVEL, compress_type=_PNG_STRATEGY)


def _run_jobs(jobs: Sequence[_Job], workers: int) -> None:
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            _render_job(job)
        return
    # spawn, not fork: callers (Ray drivers, Torch) often have threads, which fork can deadlock.
    context = multiprocessing.get_context("spawn")
    workers = min(workers, len(jobs))
    chunksize = max(1, len(jobs) // (4 * workers))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for _ in pool.map(_render_job, jobs, chunksize=chunksize):
            pass


def _write_csv(path: Path, header: tuple[str, str], rows: Sequence[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _target(labels: tuple[int, ...]) -> str:
    return " ".join(str(label) for label in labels)


def write_kaggle_sample(
    out_dir: Path,
    n_train: int,
    n_test: int,
    *,
    size: int = 512,
    seed: int = 0,
    min_per_class: int = 20,
    workers: int | None = None,
) -> Path:
    """Write an HPA-like sample in the layout of the 2018 Kaggle competition.

    Layout: ``train.csv`` (``Id,Target``, space-separated class indices),
    ``train/{Id}_{red,green,blue,yellow}.png``, ``sample_submission.csv`` (``Id,Predicted``
    with ``Predicted = 0``), ``test/{Id}_{channel}.png``, and ``test_labels.csv``, the
    ``Id,Target`` truth of the test Ids (not in Kaggle; lets a user score predictions).

    Train label sets are ``draw_label_sets(n_train, seed, min_per_class)``; test label sets are
    drawn the same way from their own seed stream, with ``min_per_class`` lowered to
    ``n_test // 28`` (at least 1) where it is not satisfiable. Each sample is rendered from
    ``np.random.default_rng([seed, split_code, index])``, so the files are byte-identical for
    any ``workers``. The sample is written to a hidden directory beside ``out_dir`` and renamed
    at the end: an interrupted run never leaves a complete-looking ``out_dir``.

    Args:
        out_dir: Directory to create; it must not exist or be empty.
        n_train: Number of training samples (at least ``28 * min_per_class``).
        n_test: Number of test samples (at least 28 when ``min_per_class > 0``).
        size: Edge length of the PNGs in pixels.
        seed: Seed of label sets, Ids and images.
        min_per_class: Fewest training samples each class appears in.
        workers: Rendering processes; ``None`` means ``os.cpu_count()``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: If the counts cannot satisfy ``min_per_class``, or ``size`` or ``workers``
            is below 1.
        FileExistsError: If ``out_dir`` exists and is not an empty directory.
    """
    out_dir = Path(out_dir)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if size < 1 or workers < 1:
        raise ValueError(f"size and workers must be >= 1, got size={size}, workers={workers}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty directory")
    test_min = min(min_per_class, max(1, n_test // NUM_CLASSES))
    test_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TEST_CODE,)))
    splits = {
        "train": (_TRAIN_CODE, draw_label_sets(n_train, seed, min_per_class)),
        "test": (_TEST_CODE, _draw_label_sets(n_test, test_rng, test_min)),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        jobs, truth = [], {}
        for split, (code, label_sets) in splits.items():
            (staging / split).mkdir()
            offset = 0 if split == "train" else n_train  # Ids are unique across both splits
            ids = [sample_id(seed, offset + i) for i in range(len(label_sets))]
            truth[split] = [(i, _target(labels)) for i, labels in zip(ids, label_sets, strict=True)]
            jobs += [
                _Job(staging / split, id_, labels, size, seed, code, i)
                for i, (id_, labels) in enumerate(zip(ids, label_sets, strict=True))
            ]
        _write_csv(staging / "train.csv", ("Id", "Target"), truth["train"])
        _write_csv(staging / "test_labels.csv", ("Id", "Target"), truth["test"])
        submission = [(id_, "0") for id_, _ in truth["test"]]
        _write_csv(staging / "sample_submission.csv", ("Id", "Predicted"), submission)
        _run_jobs(jobs, workers)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
