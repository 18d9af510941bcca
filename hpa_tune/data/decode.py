"""Decoding one sample's channel images into preprocessed uint8 arrays at each requested size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hpa_tune.classes import CHANNELS

KAGGLE_IMAGE_SIZE = 512


class SampleError(Exception):
    """A sample that cannot be used; the message is the reason written to rejected.csv."""


@dataclass(frozen=True)
class DecodedSample:
    """A sample's images, (C, S, S) uint8 in CHANNELS order, per output size S."""

    images: dict[int, np.ndarray]
    resized: bool  # True when a source image was not the expected size


def _to_uint8_gray(img: Image.Image) -> Image.Image:
    """8-bit single-channel view of an HPA channel image.

    16-bit images are scaled by their full range; colour images (HPA's external JPEGs carry the
    signal in one colour) keep, per pixel, the brightest of their colour channels.
    """
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGB", "RGBA", "CMYK", "P", "LA"):
        arr = np.asarray(img.convert("RGB"))
        return Image.fromarray(arr.max(axis=2))
    return img.convert("L")


def _load_channel(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return _to_uint8_gray(img)
    except FileNotFoundError:
        raise SampleError(f"missing channel file {path.name}") from None
    except Image.DecompressionBombError as err:
        # Not an OSError: a header claiming e.g. 30000x30000 pixels, refused before decoding.
        raise SampleError(f"image too large (decompression bomb?) {path.name}: {err}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
        raise SampleError(f"unreadable or truncated image {path.name}: {err}") from None


def decode_sample(
    files: dict[str, Path], sizes: tuple[int, ...], expected_size: int = KAGGLE_IMAGE_SIZE
) -> DecodedSample:
    """Load the four channels of one sample and resize them to every output size.

    Args:
        files: channel name -> image path, for all of CHANNELS.
        sizes: output sizes S; each output is (len(CHANNELS), S, S) uint8.
        expected_size: the source size every channel should have; others are resized and flagged.

    Raises:
        SampleError: a channel is missing, unreadable or truncated.
    """
    missing = [c for c in CHANNELS if c not in files]
    if missing:
        raise SampleError(f"missing channel file(s): {', '.join(missing)}")
    channels = [_load_channel(files[c]) for c in CHANNELS]
    resized = any(ch.size != (expected_size, expected_size) for ch in channels)
    out: dict[int, np.ndarray] = {}
    for size in sizes:
        planes = [
            np.asarray(
                ch
                if ch.size == (size, size)
                else ch.resize((size, size), Image.Resampling.BILINEAR)
            )
            for ch in channels
        ]
        out[size] = np.stack(planes).astype(np.uint8, copy=False)
    return DecodedSample(out, resized)
