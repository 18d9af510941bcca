"""The 8 symmetries of a square image (the dihedral group D4): flips and quarter turns.

Microscopy fields have no orientation, so each symmetry of an image is as good a sample of it:
training augments with a random one per sample (``loader``, ``device_loader``) and refit's
test-time augmentation averages a model over all eight (``refit.ensemble``). The one definition
of what each code means is here.
"""

from __future__ import annotations

import torch

DIHEDRAL_CODES = tuple(range(8))


def dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """Symmetry ``code`` (0..7) of a batch of square images: a flip when ``code >= 4``, then
    ``code % 4`` quarter turns."""
    if not 0 <= code < 8:
        raise ValueError(f"dihedral code must be 0..7, got {code}")
    if code >= 4:
        x = x.flip(-1)
    return torch.rot90(x, code % 4, dims=(-2, -1)) if code % 4 else x


def dihedral_per_sample(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` turned by the symmetry its code (0..7, a CPU tensor) names."""
    first = int(codes[0])
    if bool((codes == first).all()):
        return dihedral(x, first)
    out = x.clone()
    for code in DIHEDRAL_CODES[1:]:
        idx = torch.nonzero(codes == code).flatten().to(x.device)
        if idx.numel():
            out[idx] = dihedral(x.index_select(0, idx), code)
    return out
