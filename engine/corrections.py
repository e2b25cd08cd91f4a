"""Corrections: what a colour correction is, and how it is applied to a full-resolution frame.

A correction (`LiftParams`) is either predicted by the network (the affine head's grid of 3x4 colour
transforms, the shipped weights) or fitted to an image head's output (engine.lifts). Either way it is a
small map independent of the frame's size, applied here:

- "affine-grid": data (ny, nx, 12), per node [c_r(3), c_g(3), c_b(3), bias(3)] so that
  out = c_r*r + c_g*g + c_b*b + bias (each a 3-vector over output channels), interpolated per pixel;
- "delta": data (h, w, 3), an additive correction, upsampled;
- "poly": data (n_features, 3), one global polynomial colour mapping.

The per-frame steps the GPU frame path (engine.gpu_frame) also runs have their torch function beside the
NumPy one, and tests/test_resampling.py holds each pair together on the CPU: the transforms applied
(`affine_corrected` / `transform_torch`), the blend through a weight (`blend_linear` /
`blend_linear_torch`), the chosen region's light as a gain (`reference_light_gain` /
`reference_light_gain_torch`, `scale_grid_outputs` / `scale_grid_outputs_torch`) and the temporal average
(`ema`, written once for both). The resizes are engine.resampling's.

Conventions: float images are H x W x 3 RGB in [0, 1], uint8 frames 0..255, masks H x W in [0, 1]; a box
is (y0, y1, x0, x1). Work at full resolution is done in row stripes inside the box to bound memory at 4K.
torch is imported inside the torch functions only: the CPU runtime runs without it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from engine.resampling import RESIZE_WHOLE_MAX_PIXELS, resize_box, upsample_box

METHODS = ("affine-grid", "delta", "poly")

# Rows per stripe at full resolution: 128 rows x 3840 px x 12 coefficients x 4 B = 24 MB peak.
_STRIPE = 128
IDENTITY12 = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], np.float32)  # [c_r, c_g, c_b, bias]
REFERENCE_GAIN_LIMITS = (0.5, 2.0)
GREY = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class LiftParams:
    """A correction: `method` and its parameters (float32), independent of the full frame size.

    delta:       data (h, w, 3), the additive correction at low resolution, defined everywhere.
    affine-grid: data (ny, nx, 12), per node the coefficients laid out as [c_r(3), c_g(3), c_b(3), bias(3)].
    poly:        data (n_features, 3), out = features(rgb - centre) @ data.
    """

    method: str
    data: np.ndarray
    degree: int = 0  # poly only
    centre: np.ndarray | None = None  # poly only: the colour the features are centred on
    detail_gain: float = 1.0  # affine-grid with keep_detail: the gain of the texture finer than the grid's


# -- the steps the GPU path shares ---------------------------------------------------------------------------

def ema(previous, current, momentum):
    """momentum * previous + (1 - momentum) * current: the temporal average of a correction or statistics.
    Written once for NumPy arrays, torch tensors and floats (the CPU and the GPU path both call it)."""
    return momentum * previous + (1 - momentum) * current


def transform(coef: np.ndarray, x: np.ndarray, bias_scale: float = 1.0) -> np.ndarray:
    """The per-pixel 3x4 transforms applied: coef (..., 12) upsampled to x (..., 3) float32; the bias is
    multiplied by `bias_scale` (255 for an image at 0..255). Not clipped."""
    out = coef[..., 0:3] * x[..., 0:1]
    out += coef[..., 3:6] * x[..., 1:2]
    out += coef[..., 6:9] * x[..., 2:3]
    out += coef[..., 9:12] * np.float32(bias_scale)
    return out


def transform_torch(coef, x, bias_scale: float = 1.0):
    """`transform` on a device: coef (B, 12, H, W) already at x's size, x (B, 3, H, W). Not clipped."""
    bias = coef[:, 9:12] if bias_scale == 1.0 else coef[:, 9:12] * bias_scale  # no extra node in a traced graph
    return coef[:, 0:3] * x[:, 0:1] + coef[:, 3:6] * x[:, 1:2] + coef[:, 6:9] * x[:, 2:3] + bias


def blend_linear(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """uint8 a * weight + b * (1 - weight), rounded (cv2.blendLinear; weight (h, w) float32 in [0, 1]).
    Where weight is 0 the result is b's pixel bit for bit."""
    return cv2.blendLinear(a, b, weight, 1.0 - weight)


def blend_linear_torch(a, b, weight):
    """`blend_linear` on a device, values at 0..255 (any float dtype): cv2.blendLinear divides by the
    weights' sum + 1e-5, which moves exact .5 ties down (0.3 % of pixels in a random test would round the
    other way without it); then rounded as cv2 rounds."""
    import torch

    inverse = 1 - weight
    return torch.round((a * weight + b * inverse) / (weight + inverse + 1e-5)).clamp(0, 255)


def reference_light_gain(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, adaptation: float,
                         eps: float = 1 / 255) -> np.ndarray:
    """(3,) per-channel gain from the light of the whole background to the light of the reference region.

    A von Kries adaptation: the ratio of the region's mean colour to the whole background's, per channel,
    to the power `adaptation` (0: none, 1: all the way), kept within REFERENCE_GAIN_LIMITS. Both means
    are taken outside the person (mask < 0.5), so a region drawn over the person does not count them.
    Ones where either region is empty.

    Args:
        image: (h, w, 3) float in [0, 1]; mask, reference: (h, w) in [0, 1].
    """
    room = (mask < 0.5).astype(np.float32)
    weights = (reference * room, room)
    if min(float(w.sum()) for w in weights) < 1e-6:
        return np.ones(3, np.float32)
    region, whole = ((image * w[..., None]).sum(axis=(0, 1)) / w.sum() for w in weights)
    gain = ((region + eps) / (whole + eps)) ** adaptation
    return np.clip(gain, *REFERENCE_GAIN_LIMITS).astype(np.float32)


def reference_light_gain_torch(image, mask, reference, adaptation: float, eps: float = 1 / 255):
    """`reference_light_gain` on a device, without a branch on a tensor's value (CUDA graphs): image
    (1, 3, h, w), mask and reference (1, 1, h, w) -> (3,)."""
    import torch

    room = (mask < 0.5).float()
    weights = torch.cat([reference * room, room], dim=0)  # (2, 1, h, w)
    totals = weights.sum(dim=(1, 2, 3))
    means = (image * weights).sum(dim=(2, 3)) / totals.clamp_min(1e-12)[:, None]  # (2, 3)
    gain = ((means[0] + eps) / (means[1] + eps)) ** adaptation
    return torch.where(totals.min() < 1e-6, torch.ones_like(gain), gain.clamp(*REFERENCE_GAIN_LIMITS))


def scale_grid_outputs(data: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """An affine-grid's coefficients (..., 12) with output channel c multiplied by gain[c]: the grid's
    transform followed by that diagonal gain."""
    shape = data.shape
    return (data.reshape(*shape[:-1], 4, 3) * np.asarray(gain, np.float32)).reshape(shape).astype(np.float32)


def scale_grid_outputs_torch(coefficients, gain):
    """`scale_grid_outputs` on a device: coefficients (B, 12, h, w), gain (3,)."""
    b, _, h, w = coefficients.shape
    return (coefficients.view(b, 4, 3, h, w) * gain.view(1, 1, 3, 1, 1)).view(b, 12, h, w)


# -- full resolution, float (the reference apply of every method) -------------------------------------------

def _row_stripes(shape, box: tuple[int, int, int, int]):
    """(start, end) rows to process `box` in: the whole box at once up to 1080p (one cv2.resize call, see
    `resize_box`), stripes of _STRIPE rows above, to bound the float working set at 4K."""
    y0, y1 = box[0], box[1]
    stripe = y1 - y0 if shape[0] * shape[1] <= RESIZE_WHOLE_MAX_PIXELS else _STRIPE
    for s in range(y0, y1, max(stripe, 1)):
        yield s, min(s + stripe, y1)


def _stripe(composite: np.ndarray, s: int, e: int, x0: int, x1: int) -> np.ndarray:
    """composite[s:e, x0:x1] as float32 in [0, 1]; uint8 frames are converted one stripe at a time."""
    part = composite[s:e, x0:x1]
    if part.dtype == np.uint8:
        return part.astype(np.float32) * np.float32(1 / 255)
    return part


def _full_box(shape) -> tuple[int, int, int, int]:
    return 0, int(shape[0]), 0, int(shape[1])


def apply_delta(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """composite[box] + upsampled correction[box] (not clipped, not masked)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        up = resize_box(params.data, composite.shape[:2], (s, e, x0, x1))
        np.add(_stripe(composite, s, e, x0, x1), up, out=out[s - y0:e - y0])
    return out


def apply_affine_grid(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """Interpolate the node transforms per pixel (exactly: `upsample_box`) and apply them to composite[box]
    (not clipped)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        coef = upsample_box(params.data, composite.shape[:2], (s, e, x0, x1))  # (rows, cols, 12)
        out[s - y0:e - y0] = transform(coef, _stripe(composite, s, e, x0, x1))
    return out


def monomials(degree: int) -> list[tuple[int, ...]]:
    """Channel index tuples of every monomial of degree 1..degree (r, g, b, rr, rg, ...)."""
    return [c for d in range(1, degree + 1) for c in itertools.combinations_with_replacement(range(3), d)]


def poly_features(x: np.ndarray, degree: int) -> np.ndarray:
    """(..., 3) -> (..., n) monomials of degree 1..degree followed by a constant 1."""
    feats = [np.prod([x[..., i] for i in combo], axis=0) if len(combo) > 1 else x[..., combo[0]]
             for combo in monomials(degree)]
    feats.append(np.ones(x.shape[:-1], np.float32))
    return np.stack(feats, axis=-1).astype(np.float32)


def apply_poly(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """The polynomial mapping applied to composite[box] (not clipped)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        out[s - y0:e - y0] = poly_features(_stripe(composite, s, e, x0, x1) - params.centre, params.degree) @ params.data
    return out


def apply_lift(params: LiftParams, composite: np.ndarray, box: tuple[int, int, int, int] | None = None
               ) -> np.ndarray:
    """The corrected image at full resolution inside `box` = (y0, y1, x0, x1), clipped to [0, 1].

    Args:
        params: a correction (engine.lifts.fit_lift, or the affine head's grid).
        composite: (H, W, 3) full-resolution composite, float32 in [0, 1] or uint8 (converted per stripe,
            so a 4K frame never exists as a whole float copy).
        box: rows y0:y1 and columns x0:x1 to compute (default: the whole frame).

    Returns:
        (y1 - y0, x1 - x0, 3) float32. The caller blends it with the mask.
    """
    if params.method == "delta":
        out = apply_delta(params, composite, box)
    elif params.method == "affine-grid":
        out = apply_affine_grid(params, composite, box)
    elif params.method == "poly":
        out = apply_poly(params, composite, box)
    else:
        raise ValueError(f"unknown lift method {params.method!r}; expected one of {', '.join(METHODS)}")
    return np.clip(out, 0.0, 1.0, out=out)


def blend_params(previous: LiftParams | None, current: LiftParams, momentum: float) -> LiftParams:
    """Exponential moving average (`ema`) of two corrections of the same method and shape (temporal smoothing).

    Every method's output is linear in its parameters (poly only for fits sharing a centre), so averaging
    parameters averages the corrections. Returns `current` when the two cannot be averaged.
    """
    if (previous is None or momentum <= 0 or previous.method != current.method
            or previous.data.shape != current.data.shape or previous.degree != current.degree
            or (current.method == "poly" and not np.array_equal(previous.centre, current.centre))):
        return current
    m = np.float32(momentum)
    return LiftParams(current.method, ema(previous.data, current.data, m).astype(np.float32),
                      current.degree, current.centre, float(ema(previous.detail_gain, current.detail_gain, m)))


# -- full resolution, uint8 (the camera-rate paths: OpenCV SIMD kernels, the person's box only) -------------

def delta_corrected(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """saturate(image[box] + upsampled correction[box]) as uint8 (resize and one saturating add)."""
    if params.method != "delta":
        raise ValueError(f"a 'delta' correction is needed here, got {params.method!r}")
    y0, y1, x0, x1 = box
    up = resize_box(params.data * np.float32(255), image.shape[:2], box)
    return cv2.add(image[y0:y1, x0:x1], up, dtype=cv2.CV_8U)


def apply_delta_blend(params: LiftParams, composite: np.ndarray, weight: np.ndarray,
                      box: tuple[int, int, int, int]) -> np.ndarray:
    """Blend `composite[box]` towards `composite + upsampled correction` by `weight`, as uint8.

    out = (1 - weight) * composite + weight * saturate(composite + correction): the camera-rate path, three
    OpenCV SIMD passes (resize, saturating add, blendLinear, whose one-channel weights broadcast over the
    three colours), ~3.5 ms for a 720p person on one core where the same maths in float NumPy cost ~60 ms.
    Where `weight` is 0 the result is the composite's pixel bit for bit.

    Args:
        params: a "delta" correction.
        composite: (H, W, 3) uint8 full-resolution frame.
        weight: (y1 - y0, x1 - x0) float32 blend weight (mask x strength) for the box.
        box: (y0, y1, x0, x1).

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    y0, y1, x0, x1 = box
    return blend_linear(delta_corrected(params, composite, box), composite[y0:y1, x0:x1], weight)


def affine_corrected(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The grid's colour transforms applied to image[box], rounded and saturated to uint8 (the GPU path's
    twin: upsample_grid_torch, transform_torch at 0..255, rounded)."""
    if params.method != "affine-grid":
        raise ValueError(f"an 'affine-grid' correction is needed here, got {params.method!r}")
    y0, y1, x0, x1 = box
    coef = resize_box(params.data, image.shape[:2], box, whole=False)
    out = transform(coef, image[y0:y1, x0:x1].astype(np.float32), 255.0)  # the bias scaled, not the image
    return cv2.convertScaleAbs(np.clip(out, 0, 255, out=out))  # rounds and saturates to uint8


__all__ = ["GREY", "IDENTITY12", "METHODS", "REFERENCE_GAIN_LIMITS", "LiftParams", "affine_corrected",
           "apply_affine_grid", "apply_delta", "apply_delta_blend", "apply_lift", "apply_poly", "blend_linear",
           "blend_linear_torch", "blend_params", "delta_corrected", "ema", "monomials", "poly_features",
           "reference_light_gain", "reference_light_gain_torch", "scale_grid_outputs", "scale_grid_outputs_torch", "transform",
           "transform_torch"]
