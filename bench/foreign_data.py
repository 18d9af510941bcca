"""A Kaggle-layout HPA-like data set written independently of the built-in sample.

Used by ``bench/vs_hand.py`` to check that search + refit beats a hand-tuned CNN on data the
defaults were not tuned on. Label sets are drawn from the real Kaggle ``train.csv`` Target
column (shipped in ``hpa_tune/resources``), so class frequencies and co-occurrence are real.
Each image is a field of cells: nuclei (blue), microtubule filaments (red), endoplasmic
reticulum (yellow); the green protein channel shows one pattern per class present (nucleoplasm
fill, nuclear rim, nucleoli, puncta of several sizes and places, filaments, cell edges, haze,
...), expressed by a random fraction of the cells, with nuisances: cell count/size/brightness,
blur, shot noise, a weak pattern in some samples, unspecific green background.

    python bench/foreign_data.py OUT --n 600 --seed 0          # 512 px, ~1 minute
"""

from __future__ import annotations

import argparse
import gzip
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 28
CHANNELS = ("red", "green", "blue", "yellow")


def load_label_sets() -> list[list[int]]:
    """The real Kaggle HPA 2018 train Target column, one label list per sample."""
    raw = resources.files("hpa_tune.resources").joinpath("hpa2018_label_sets.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode().splitlines()
    return [[int(t) for t in ln.split()] for ln in lines if ln and not ln.startswith("#")]


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes through the FFT (periodic edges; cheap and vectorised)."""
    if sigma <= 0:
        return img
    h, w = img.shape[-2:]
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(img) * transfer, s=(h, w))


def _splat(points: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Sum of weights at integer pixel positions (points: (n, 2) as y, x) on a size x size grid."""
    img = np.zeros(size * size)
    if len(points):
        yx = np.clip(np.rint(points).astype(int), 0, size - 1)
        np.add.at(img, yx[:, 0] * size + yx[:, 1], weights)
    return img.reshape(size, size)


class _Field:
    """Geometry of one field of cells at render size ``s``: masks and per-pixel distances."""

    def __init__(self, rng: np.random.Generator, s: int) -> None:
        self.s = s
        self.rng = rng
        k = int(rng.integers(3, 15))
        scale = s / 256.0
        self.centres = rng.uniform(0.08 * s, 0.92 * s, size=(k, 2))
        self.radius = rng.uniform(28, 52, size=k) * scale * rng.uniform(0.75, 1.25)
        self.nuc_radius = self.radius * rng.uniform(0.35, 0.55, size=k)
        angle = rng.uniform(0, np.pi, size=k)
        self.nuc_centres = self.centres + rng.normal(0, 0.12, size=(k, 2)) * self.radius[:, None]
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
        dy = yy[None] - self.centres[:, 0, None, None]
        dx = xx[None] - self.centres[:, 1, None, None]
        dist = np.hypot(dy, dx) / self.radius[:, None, None]  # (k, s, s), 1 at the cell edge
        self.owner = np.argmin(dist, axis=0)
        order = np.sort(dist, axis=0)
        self.d_cell = order[0]
        # how close a pixel is to the boundary between its cell and the next one
        self.gap = order[1] - order[0] if k > 1 else np.full((s, s), 9.0)
        self.cell = self.d_cell < 1.0
        ny = yy - self.nuc_centres[self.owner, 0]
        nx = xx - self.nuc_centres[self.owner, 1]
        c, si = np.cos(angle[self.owner]), np.sin(angle[self.owner])
        u, v = c * ny + si * nx, (-si * ny + c * nx) * 1.3
        self.d_nuc = np.hypot(u, v) / self.nuc_radius[self.owner]
        self.nuc = (self.d_nuc < 1.0) & self.cell
        self.cyto = self.cell & ~self.nuc
        self.k = k

    def sample_points(self, n: int, where: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Up to n random pixel positions where ``where`` holds, in expressing cells only."""
        ok = where & cells[self.owner]
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return np.zeros((0, 2))
        pick = self.rng.choice(idx, size=min(n, idx.size * 4), replace=True)
        return np.stack([pick // self.s, pick % self.s], axis=1) + self.rng.uniform(
            -0.5, 0.5, (pick.size, 2)
        )

    def lines(self, per_cell: int, length: float, radial: bool, cells: np.ndarray) -> np.ndarray:
        """Points along random (radial or parallel) line segments in the expressing cells."""
        ids = np.flatnonzero(cells)
        if ids.size == 0:
            return np.zeros((0, 2))
        cell_of = np.repeat(ids, per_cell)
        n = cell_of.size
        r = self.radius[cell_of]
        if radial:
            theta = self.rng.uniform(0, 2 * np.pi, n)
            start = self.nuc_centres[cell_of] + 0.3 * r[:, None] * np.stack(
                [np.sin(theta), np.cos(theta)], 1
            )
        else:  # stress fibres: one orientation per cell
            theta = self.rng.uniform(0, np.pi, self.k)[cell_of] + self.rng.normal(0, 0.08, n)
            start = self.centres[cell_of] + self.rng.uniform(-0.8, 0.8, (n, 2)) * r[:, None]
            start -= 0.5 * length * r[:, None] * np.stack([np.sin(theta), np.cos(theta)], 1)
        t = np.linspace(0, 1, 24)[None, :] * length * r[:, None]
        bend = self.rng.normal(0, 0.6 if radial else 0.1, n)[:, None] * (t / r[:, None]) ** 2
        ang = theta[:, None] + bend
        pts = start[:, None, :] + np.stack([t * np.sin(ang), t * np.cos(ang)], -1)
        pts = pts.reshape(-1, 2)
        inside = (pts >= 0).all(1) & (pts < self.s).all(1)
        pts = pts[inside]
        yx = pts.astype(int)
        return pts[self.cell[yx[:, 0], yx[:, 1]]]


def _dots(f: _Field, cells: np.ndarray, n: int, where: np.ndarray, sigma: float) -> np.ndarray:
    pts = f.sample_points(n, where, cells)
    return blur(_splat(pts, np.ones(len(pts)), f.s), sigma) * (2 * np.pi * sigma**2)


def _per_cell_dot(
    f: _Field, cells: np.ndarray, dist: float, sigma: float, n: int = 1
) -> np.ndarray:
    """n dots per expressing cell, just outside its nucleus (centrosome, MTOC, Golgi, ...)."""
    ids = np.repeat(np.flatnonzero(cells), n)
    theta = f.rng.uniform(0, 2 * np.pi, ids.size)
    r = f.nuc_radius[ids] * dist
    pts = f.nuc_centres[ids] + r[:, None] * np.stack([np.sin(theta), np.cos(theta)], 1)
    return blur(_splat(pts, np.ones(ids.size), f.s), sigma) * (2 * np.pi * sigma**2)


def _rings(f: _Field, cells: np.ndarray, n: int, radius: float) -> np.ndarray:
    pts = f.sample_points(n, f.cyto, cells)
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = pts[:, None, :] + radius * np.stack([np.sin(theta), np.cos(theta)], -1)[None]
    return blur(_splat(ring.reshape(-1, 2), np.ones(ring.size // 2), f.s), 0.8) * 3.0


def _filaments(f: _Field, pts: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(blur(_splat(pts, np.ones(len(pts)), f.s), sigma) * 3, 0, 1)


def _bridge(f: _Field) -> np.ndarray:
    """A thin bright line joining the two closest cells' centres."""
    if f.k < 2:
        return np.zeros((f.s, f.s))
    d = np.hypot(*(f.centres[:, None] - f.centres[None]).transpose(2, 0, 1)) + np.eye(f.k) * 1e9
    a, b = np.unravel_index(np.argmin(d), d.shape)
    t = np.linspace(0.3, 0.7, 40)[:, None]
    pts = f.centres[a] * (1 - t) + f.centres[b] * t
    return np.clip(blur(_splat(pts, np.ones(len(pts)), f.s), 1.0) * 4, 0, 1.5)


def _spindle(f: _Field) -> np.ndarray:
    """Fibres fanning from two poles across one cell (a dividing cell)."""
    i = int(f.rng.integers(f.k))
    theta = f.rng.uniform(0, np.pi)
    axis = np.array([np.sin(theta), np.cos(theta)]) * f.radius[i] * 0.6
    poles = f.centres[i] + np.stack([axis, -axis])
    t = np.linspace(0, 1, 20)[None, :, None]
    spread = f.rng.normal(0, 0.35, (16, 1, 1)) * np.array([axis[1], -axis[0]])[None, None]
    mid = f.centres[i][None, None] + spread * np.sin(np.pi * t)
    pts = np.concatenate([poles[0] * (1 - t) + mid * t, poles[1] * (1 - t) + mid * t], 0)
    return _filaments(f, pts.reshape(-1, 2), 0.8) * 1.3


def _reticulum(f: _Field, rng: np.random.Generator) -> np.ndarray:
    """ER-like network: thresholded band-pass noise, densest around the nucleus."""
    noise = rng.normal(size=(f.s, f.s))
    band = blur(noise, 1.2) - blur(noise, 3.0)
    net = np.clip(1.0 - np.abs(band) / (band.std() * 0.6 + 1e-9), 0, 1)
    return net * f.cyto * np.exp(-np.clip(f.d_cell - 0.3, 0, None) * 1.5)


def green_pattern(
    c: int, f: _Field, cells: np.ndarray, red: np.ndarray, er: np.ndarray
) -> np.ndarray:
    """The green-channel image of class ``c`` in the expressing ``cells`` (roughly 0..1)."""
    rng, s = f.rng, f.s
    expr = cells[f.owner] & f.cell
    area = max(int(expr.sum()), 1)
    per = area / 1000.0
    if c == 0:  # nucleoplasm: textured fill of the nucleus
        return f.nuc * expr * (0.7 + 0.3 * blur(rng.random((s, s)), 1.5))
    if c == 1:  # nuclear membrane: rim
        return np.exp(-(((f.d_nuc - 1.0) / 0.09) ** 2)) * expr
    if c == 2:  # nucleoli: a few large dots in the nucleus
        return _dots(f, cells, int(3 * cells.sum()), f.d_nuc < 0.6, 2.2)
    if c == 3:  # fibrillar centres: clusters of tiny dots
        return _dots(f, cells, int(14 * cells.sum()), f.d_nuc < 0.5, 0.7)
    if c == 4:  # speckles: many irregular medium dots in the nucleus
        return _dots(f, cells, int(25 * cells.sum()), f.d_nuc < 0.9, 1.3) * 0.6
    if c == 5:  # nuclear bodies: 1-6 small bright dots per nucleus
        return _dots(f, cells, int(3 * cells.sum()), f.d_nuc < 0.85, 0.9)
    if c == 6:  # endoplasmic reticulum: the ER network
        return er * expr
    if c == 7:  # Golgi: a perinuclear crescent
        return np.clip(_per_cell_dot(f, cells, 1.25, 3.5, 3) * 1.4, 0, 1.2)
    if c in (8, 9, 10):  # peroxisomes / endosomes / lysosomes: puncta of different size/place
        sig, n, where = {
            8: (0.6, 60, f.cyto),
            9: (1.0, 30, f.cyto & (f.d_cell < 0.7)),
            10: (1.6, 15, f.cyto & (f.d_cell < 0.55)),
        }[c]
        return _dots(f, cells, int(n * cells.sum()), where, sig)
    if c == 11:  # intermediate filaments: wavy, radial, whole cytoplasm
        return _filaments(f, f.lines(14, 0.9, True, cells), 0.9)
    if c == 12:  # actin stress fibres: straight, parallel within a cell
        return _filaments(f, f.lines(10, 1.4, False, cells), 0.7) * (f.d_cell < 0.97)
    if c == 13:  # focal adhesions: short dashes at the cell periphery
        return _dots(f, cells, int(20 * cells.sum()), f.cell & (f.d_cell > 0.8), 1.0)
    if c == 14:  # microtubules: the red network itself
        return red * expr
    if c == 15:  # microtubule ends: tiny dots at the cell edge
        return _dots(f, cells, int(30 * cells.sum()), f.cell & (f.d_cell > 0.9), 0.5)
    if c == 16:  # cytokinetic bridge: a bright line between two neighbouring cells
        return _bridge(f)
    if c == 17:  # mitotic spindle: two cones over one condensed nucleus
        return _spindle(f)
    if c == 18:  # MTOC: one bright dot beside each nucleus
        return _per_cell_dot(f, cells, 1.15, 1.8)
    if c == 19:  # centrosome: two small dots beside each nucleus
        return _per_cell_dot(f, cells, 1.1, 0.8, 2)
    if c == 20:  # lipid droplets: hollow rings
        return _rings(f, cells, int(6 * cells.sum()), 2.5)
    if c == 21:  # plasma membrane: the cell rim
        return np.exp(-(((f.d_cell - 0.97) / 0.05) ** 2)) * (f.d_cell < 1.05) * cells[f.owner]
    if c == 22:  # cell junctions: where two cells touch
        touch = (f.gap < 0.08) & (f.d_cell < 1.1)
        return blur(touch.astype(float), 0.8) * 1.5
    if c == 23:  # mitochondria: dense short worms in the cytoplasm
        return np.clip(_dots(f, cells, int(per * 120), f.cyto, 0.8) * 1.2, 0, 1)
    if c == 24:  # aggresome: one large bright blob beside the nucleus
        return np.clip(_per_cell_dot(f, cells, 1.3, 3.0) * 2, 0, 1.5)
    if c == 25:  # cytosol: smooth haze over the cytoplasm
        return f.cyto * expr * (0.45 + 0.15 * blur(rng.random((s, s)), 3))
    if c == 26:  # cytoplasmic bodies: a few medium bright blobs
        return _dots(f, cells, int(2 * cells.sum()), f.cyto, 2.0) * 1.3
    # 27 rods & rings: short rods and small rings
    return _filaments(f, f.lines(2, 0.25, False, cells), 0.6) + _rings(
        f, cells, int(cells.sum()), 1.5
    )


def render_sample(labels: list[int], seed: int, index: int, render: int) -> np.ndarray:
    """The four channels (red, green, blue, yellow) of one sample as floats, render x render."""
    rng = np.random.default_rng([seed, index, 7919])
    f = _Field(rng, render)
    everyone = np.ones(f.k, dtype=bool)
    expressing = rng.random(f.k) < rng.uniform(0.45, 1.0)
    expressing[rng.integers(f.k)] = True
    nuc_bright = rng.uniform(0.5, 1.0, f.k)[f.owner]
    blue = f.nuc * nuc_bright * (0.75 + 0.5 * blur(rng.random((render, render)), 1.2))
    red = _filaments(f, f.lines(18, 1.0, True, everyone), 0.8) * 0.8 + 0.12 * f.cyto
    er = _reticulum(f, rng)
    yellow = er * 0.9 + 0.05 * f.cyto
    weak = rng.random() < 0.2
    green = f.cyto * rng.uniform(0.0, 0.12) + f.nuc * rng.uniform(0.0, 0.06)  # unspecific
    for c in labels:
        strength = rng.uniform(0.12, 0.3) if weak else rng.uniform(0.45, 1.1)
        green = green + strength * green_pattern(c, f, expressing, red, er)
    img = np.stack([red, green, blue, yellow]) * rng.uniform(0.6, 1.3, (4, 1, 1))
    img = blur(img, rng.uniform(0.2, 1.3))
    photons = rng.uniform(15, 60)
    img = rng.poisson(np.clip(img, 0, None) * photons + 1.0) / photons
    return np.asarray(img, dtype=np.float64)


def _sample_id(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _write_one(args: tuple[Path, str, list[int], int, int, int, int]) -> None:
    out, sid, labels, seed, index, render, size = args
    img = render_sample(labels, seed, index, render)
    for name, channel in zip(CHANNELS, img, strict=True):
        arr = np.clip(channel * 200.0, 0, 255).astype(np.uint8)
        pic = Image.fromarray(arr)
        if size != render:
            pic = pic.resize((size, size), Image.Resampling.BILINEAR)
        pic.save(out / "train" / f"{sid}_{name}.png", compress_level=1)


def generate(out: Path, n: int = 600, seed: int = 0, size: int = 512, workers: int = 1) -> None:
    """Write ``out/train.csv`` and ``out/train/{Id}_{channel}.png`` for n samples."""
    rng = np.random.default_rng(seed)
    pool_sets = load_label_sets()
    picks = rng.choice(len(pool_sets), size=n, replace=False)
    ids = [_sample_id(rng) for _ in range(n)]
    (out / "train").mkdir(parents=True, exist_ok=True)
    render = max(32, size // 2)
    jobs = [(out, ids[i], pool_sets[p], seed, i, render, size) for i, p in enumerate(picks)]
    if workers > 1:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            pool.map(_write_one, jobs, chunksize=8)
    else:
        for job in jobs:
            _write_one(job)
    rows = [f"{sid},{' '.join(map(str, pool_sets[p]))}" for sid, p in zip(ids, picks, strict=True)]
    (out / "train.csv").write_text("Id,Target\n" + "\n".join(rows) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    generate(args.out, args.n, args.seed, args.size, args.workers)


if __name__ == "__main__":
    main()
