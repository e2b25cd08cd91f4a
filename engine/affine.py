"""The affine colour-transform head's maths: a low-resolution grid of 3x4 colour transforms, applied per pixel.

A PHNet with ``output="affine"`` does not re-draw the person: it predicts, on a grid 1/``factor`` of its
input, the 12 coefficients of an affine colour transform per cell, laid out as in engine.corrections'
"affine-grid" (``[c_r(3), c_g(3), c_b(3), bias(3)]``, so ``out = c_r*r + c_g*g + c_b*b + bias`` per output
channel). The harmonized image is that grid, upsampled bilinearly (half-pixel centres, edges clamped: the
convention of ``F.interpolate(align_corners=False)`` and ``cv2.resize``) and applied to the composite.
Because the transform is applied to the sharp composite at whatever resolution it has, the person's
texture is never lost, and the network's resolution only limits how finely the *colour change* varies.

Pure functions on torch tensors. The upsample and the apply are engine.resampling's and engine.corrections'
(``upsample_grid_torch``, ``transform_torch``), the same functions the GPU frame path runs, each tested against
its NumPy twin (``upsample_box``, ``transform``; ``apply_affine_grid`` here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.corrections import transform_torch
from engine.resampling import upsample_grid_torch

COEFFICIENTS = 12
# Identity in the [c_r, c_g, c_b, bias] layout: out_r = r, out_g = g, out_b = b.
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)


def identity(batch: int, height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """(batch, 12, height, width) coefficients of the identity transform."""
    ident = torch.tensor(IDENTITY, device=device, dtype=dtype).view(1, COEFFICIENTS, 1, 1)
    return ident.expand(batch, COEFFICIENTS, height, width).contiguous()


def upsample(coefficients: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, half-pixel centres, clamped edges (engine.resampling.upsample_grid_torch)."""
    return upsample_grid_torch(coefficients, size)


def apply(coefficients: Tensor, image: Tensor, clamp: bool = True) -> Tensor:
    """The transforms applied to ``image``.

    Args:
        coefficients: (B, 12, h, w), any grid size; upsampled to the image's size.
        image: (B, 3, H, W) RGB in [0, 1].
        clamp: clip the result to [0, 1].

    Returns:
        (B, 3, H, W).

    Raises:
        ValueError: shapes that do not fit.
    """
    if coefficients.ndim != 4 or coefficients.shape[1] != COEFFICIENTS:
        raise ValueError(f"coefficients must be (B, 12, h, w), got {tuple(coefficients.shape)}")
    if image.ndim != 4 or image.shape[1] != 3 or image.shape[0] != coefficients.shape[0]:
        raise ValueError(f"image must be (B, 3, H, W) with B = {coefficients.shape[0]}, got {tuple(image.shape)}")
    c = upsample(coefficients, tuple(image.shape[-2:]))
    out = transform_torch(c, image)
    return out.clamp(0.0, 1.0) if clamp else out


def grid_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """The coefficient grid of a (height, width) network input: one cell per factor x factor pixels."""
    return height // factor, width // factor
