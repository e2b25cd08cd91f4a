"""Re-colouring a camera frame by a correction at camera rate: uint8, the person's box only, NumPy beside torch.

engine.corrections says what a correction is and gives its exact float apply; this is what the frame loop
runs on every frame (engine.Harmonizer.apply) and, in torch, what the GPU frame path runs
(engine.device_harmonizer): the correction blended into the composite (`apply_blend`), or the person's own
colours corrected and composited again (`apply_person`, the app's), and for the affine grid the fast apply:

    T(x) = A(p) L + b(p) + A(p) (x - L)  ~=  G x + up(T(L) - G L)

with A(p) x + b(p) the per-pixel transform and L the frame's 1/scale image: exact for the smooth part, the
detail x - L gets one gain G instead of the local A(p). G is the grid's mean 3x3 matrix (the grid is
smooth, so A(p) - G is small where detail is), or with `keep_detail` (PHNetConfig.keep_detail, the shipped
weights) `detail_gain` times the identity: the transforms re-colour the coarse image and the texture finer
than it is kept, stretched as much as the transforms stretch the person's contrast (`contrast_gain`).

The 1/scale image is **aligned to the frame**: block (i, j) is the mean of the frame's pixels
[i s, (i+1) s) x [j s, (j+1) s) (its last row and column repeated to fill the last blocks), and the residual
T(L) - G L is upsampled bilinearly (half-pixel centres) from those blocks. A pixel's result does not depend
on where the person's box lies: the CPU computes only the blocks around the box (one block of margin, which
the upsample reads), the GPU path the whole frame at a fixed size (one CUDA graph), and the two give the
same picture (tests/test_resampling.py).

Conventions: uint8 frames H x W x 3 (NumPy), float (1, 3, H, W) at 0..255 (torch); the grid (gh, gw, 12) or
(1, 12, gh, gw); masks H x W in [0, 1]; a box is (y0, y1, x0, x1). torch is imported inside the torch
functions only.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.blend import person_over
from engine.corrections import (
    GREY,
    LiftParams,
    affine_corrected,
    apply_delta_blend,
    apply_lift,
    blend_linear,
    delta_corrected,
    transform,
    transform_torch,
)

#: Full-resolution pixels per block of the fast apply without keep_detail.
FAST_SCALE = 4
_GREY = tuple(float(v) for v in GREY)  # the grey weights as Python numbers (constants in a traced step)


def detail_scale(size: tuple[int, int], net: tuple[int, int], keep_detail: float) -> int:
    """keep_detail (network pixels) as full-resolution pixels per block, for a frame of `size` whose network
    ran at `net`; 0 = keep_detail off."""
    if keep_detail <= 0:
        return 0
    return max(2, int(round(keep_detail * max(size) / max(net))))


def blocks(n: int, scale: int, lo: int, hi: int) -> tuple[int, int]:
    """The blocks (b0, b1) that pixels lo..hi-1 of an n-pixel side read: their own and one on each side (the
    upsample's second tap), within the side's ceil(n / scale) blocks."""
    return max(lo // scale - 1, 0), min((hi - 1) // scale + 2, -(-n // scale))


def grid_weights(n: int, n_grid: int, scale: int, b0: int = 0, b1: int | None = None) -> np.ndarray:
    """(b1 - b0, n_grid) float32: the grid's bilinear map (as upsampled to the n-pixel side: half-pixel
    centres, clamped edges) at the centres of blocks b0..b1-1 (default: all), exact weights."""
    b1 = -(-n // scale) if b1 is None else b1
    centre = (np.arange(b0, b1, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip((centre + 0.5) * (n_grid / n) - 0.5, 0, n_grid - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_grid - 1)
    weights = np.zeros((b1 - b0, n_grid), np.float64)
    rows = np.arange(b1 - b0)
    np.add.at(weights, (rows, i0), 1 - (pos - i0))
    np.add.at(weights, (rows, i1), pos - i0)
    return weights.astype(np.float32)


def grid_at_blocks(data: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """(len(wy), len(wx), 12) float32: the grid (gh, gw, 12) bilinearly at the blocks, wy (by, gh) and
    wx (bx, gw) from `grid_weights`. Two OpenCV matrix products: np.einsum's loop costs ~1 ms per 720p frame,
    and NumPy's matmul wakes OpenBLAS's threads, which then spin on the other core (CPU twice the wall time)."""
    gh, gw, channels = data.shape
    rows = cv2.gemm(np.ascontiguousarray(wy, np.float32), np.ascontiguousarray(data, np.float32).reshape(gh, -1),
                    1.0, None, 0.0).reshape(len(wy), gw, channels)
    by_column = np.ascontiguousarray(rows.transpose(1, 0, 2)).reshape(gw, -1)  # (gw, by * 12)
    out = cv2.gemm(np.ascontiguousarray(wx, np.float32), by_column, 1.0, None, 0.0)
    return np.ascontiguousarray(out.reshape(len(wx), len(wy), channels).transpose(1, 0, 2))


def gain_matrix(data: np.ndarray, keep_detail: bool, detail_gain: float = 1.0) -> np.ndarray:
    """G (3, 3) float32 with out[c] = sum_k G[c, k] x[k]: detail_gain x I with keep_detail, else the grid's
    mean transform (its nodes' [c_r, c_g, c_b] averaged)."""
    if keep_detail:
        return np.eye(3, dtype=np.float32) * np.float32(detail_gain)
    return data.reshape(-1, 12)[:, :9].mean(axis=0).reshape(3, 3).T.astype(np.float32)


def _low_image(image: np.ndarray, scale: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """The frame's blocks rows[0]..rows[1]-1 x cols[0]..cols[1]-1 as their mean colours, float32."""
    (by0, by1), (bx0, bx1) = rows, cols
    r1, c1 = min(by1 * scale, image.shape[0]), min(bx1 * scale, image.shape[1])
    crop = image[by0 * scale:r1, bx0 * scale:c1].astype(np.float32)
    if r1 < by1 * scale or c1 < bx1 * scale:  # the frame's last blocks: its edge pixels repeated
        crop = cv2.copyMakeBorder(crop, 0, by1 * scale - r1, 0, bx1 * scale - c1, cv2.BORDER_REPLICATE)
    # A whole number of pixels per block: cv2's area resize is the blocks' exact mean (in float: its uint8
    # rounding of a mean's .5 differs from one scale to another).
    return cv2.resize(crop, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)


def affine_corrected_fast(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int],
                          scale: int = FAST_SCALE, keep_detail: bool = False) -> np.ndarray:
    """The grid's transforms on image[box] through the frame's 1/scale image (the module's docstring),
    uint8 (y1 - y0, x1 - x0, 3): one float conversion, one 3x3 product (or a scalar gain with keep_detail),
    one bilinear upsample and one saturating add at full resolution, about 10x less than the per-pixel 3x4
    product of `affine_corrected` (docs/benchmarks.md).

    Raises:
        ValueError: a correction other than "affine-grid".
    """
    if params.method != "affine-grid":
        raise ValueError(f"an 'affine-grid' correction is needed here, got {params.method!r}")
    height, width = image.shape[:2]
    y0, y1, x0, x1 = box
    (by0, by1), (bx0, bx1) = rows, cols = blocks(height, scale, y0, y1), blocks(width, scale, x0, x1)
    low = _low_image(image, scale, rows, cols)
    wy = grid_weights(height, params.data.shape[0], scale, by0, by1)
    wx = grid_weights(width, params.data.shape[1], scale, bx0, bx1)
    coef = grid_at_blocks(params.data, wy, wx)
    gain = gain_matrix(params.data, keep_detail, params.detail_gain)
    residual = transform(coef, low, 255.0) - low @ gain.T
    up = cv2.resize(residual, ((bx1 - bx0) * scale, (by1 - by0) * scale), interpolation=cv2.INTER_LINEAR)
    up = up[y0 - by0 * scale:y1 - by0 * scale, x0 - bx0 * scale:x1 - bx0 * scale]
    part = image[y0:y1, x0:x1]
    # In float until the one rounding and saturation at the end: a uint8 transform would clip bright pixels
    # before the residual brings them back. With keep_detail the gain is a scalar: one OpenCV pass takes the
    # uint8 frame times it plus the float residual (no float copy of the frame).
    if keep_detail:
        return cv2.addWeighted(part, float(params.detail_gain), up, 1.0, 0.0, dtype=cv2.CV_8U)
    part = cv2.transform(part.astype(np.float32), np.concatenate([gain, np.zeros((3, 1), np.float32)], axis=1))
    return cv2.add(part, up, dtype=cv2.CV_8U)


def affine_corrected_fast_torch(coefficients, image, scale: int, gain, wy, wx):
    """`affine_corrected_fast` of the whole frame on a device: coefficients (1, 12, gh, gw) and image
    (1, 3, H, W) at 0..255, float32; gain G (3, 3); wy, wx the `grid_weights` of all blocks as tensors.
    Returns (1, 3, H, W) float32, rounded and saturated to 0..255."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    rows, cols = wy.shape[0], wx.shape[0]
    padded = F.pad(image, (0, cols * scale - width, 0, rows * scale - height), mode="replicate")
    low = F.avg_pool2d(padded, scale)  # (1, 3, rows, cols): the blocks' means
    coef = wy @ coefficients @ wx.T  # the grid at the blocks' centres
    residual = transform_torch(coef, low, 255.0) - torch.einsum("ck,bkhw->bchw", gain, low)
    up = F.interpolate(residual, size=(rows * scale, cols * scale), mode="bilinear", align_corners=False)
    return torch.round((torch.einsum("ck,bkhw->bchw", gain, image) + up[..., :height, :width]).clamp(0, 255))


def apply_affine_blend(params: LiftParams, composite: np.ndarray, weight: np.ndarray,
                       box: tuple[int, int, int, int], detail_scale: int = 0) -> np.ndarray:
    """Blend `composite[box]` towards the grid's colour transforms applied to it, by `weight`, as uint8.

    The grid is upsampled inside the box only (warpAffine, 4 channels a call), applied in float32,
    saturated to uint8, and blended with blendLinear (with `detail_scale`: `affine_corrected_fast`). Where `weight` is 0 the result is the composite's pixel bit for bit.

    Args:
        params: an "affine-grid" correction.
        composite: (H, W, 3) uint8 full-resolution frame.
        weight: (y1 - y0, x1 - x0) float32 blend weight (mask x strength) for the box.
        box: (y0, y1, x0, x1).
        detail_scale: > 0: re-colour at 1/detail_scale and keep the finer texture as it is
            (PHNetConfig.keep_detail; affine_corrected_fast).

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    y0, y1, x0, x1 = box
    if detail_scale > 0:
        corrected = affine_corrected_fast(params, composite, box, scale=detail_scale, keep_detail=True)
    else:
        corrected = affine_corrected(params, composite, box)
    return blend_linear(corrected, composite[y0:y1, x0:x1], weight)


def contrast_gain(params: LiftParams, image_low: np.ndarray, mask_low: np.ndarray, scale: int,
                  limits: tuple[float, float] = (0.5, 2.0)) -> float:
    """How much the affine grid stretches the person's grey contrast, measured at 1/scale of `image_low`.

    With `keep_detail` the transforms re-colour the coarse image and the finer texture is kept; but where
    the re-colouring restores (or lowers) the person's contrast, their texture must follow it, or it stays
    as faint (or as strong) as in the composite. This is that factor: std of T(x) over std of x over the
    person, x the image at the detail scale; clipped to `limits`; 1 where there is no person to measure.

    Args:
        params: an "affine-grid" correction; image_low: (h, w, 3) float in [0, 1] (the network's input);
        mask_low: (h, w) in [0, 1]; scale: the detail scale in network pixels (keep_detail).
    """
    h, w = mask_low.shape
    size = (max(w // scale, 1), max(h // scale, 1))
    small = cv2.resize(np.clip(image_low * 255.0 + 0.5, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    person = cv2.resize(mask_low.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    if person.sum() < 16:
        return 1.0
    before = (small.astype(np.float32) @ GREY)[person]
    after = (affine_corrected(params, small, (0, size[1], 0, size[0])).astype(np.float32) @ GREY)[person]
    spread = float(before.std())
    if spread < 1.0:  # a flat person: nothing to measure
        return 1.0
    return float(np.clip(after.std() / spread, *limits))


def contrast_gain_torch(coefficients, image_low, mask_low, ry, rx_t, limits: tuple[float, float] = (0.5, 2.0)):
    """`contrast_gain` on a device, without a branch on a tensor's value: coefficients (1, 12, gh, gw),
    image_low (1, 3, h, w) in [0, 1], mask_low (1, 1, h, w); ry, rx_t the network picture's resize to 1/scale
    (engine.resampling.resize_matrices) as tensors. Returns a 0-d tensor."""
    import torch

    from engine.resampling import upsample_grid_torch

    small = torch.round(ry @ torch.floor(image_low * 255.0 + 0.5).clamp(0, 255) @ rx_t)  # cv2's uint8 resize
    person = ((ry @ mask_low @ rx_t) > 0.5).float()
    c = upsample_grid_torch(coefficients, tuple(small.shape[-2:]))
    after = torch.round(transform_torch(c, small, 255.0).clamp(0, 255))
    count = person.sum()

    def spread(x):  # GREY as Python numbers: no tensor made from the host inside the step (CUDA graphs)
        x = x[:, 0:1] * _GREY[0] + x[:, 1:2] * _GREY[1] + x[:, 2:3] * _GREY[2]
        mean = (x * person).sum() / count.clamp_min(1)
        return torch.sqrt(((x - mean) ** 2 * person).sum() / count.clamp_min(1))

    before = spread(small)
    gain = (spread(after) / before.clamp_min(1e-6)).clamp(*limits)
    return torch.where((count < 16) | (before < 1.0), torch.ones_like(gain), gain)


def apply_blend(params: LiftParams, composite: np.ndarray, mask: np.ndarray, strength: float,
                box: tuple[int, int, int, int], detail_scale: int = 0) -> np.ndarray:
    """composite + mask * strength * (T(composite) - composite) in the box, as uint8: the correction blended
    into the composite (engine.Harmonizer.apply without the person's own colours).

    The camera-rate methods take their uint8 SIMD paths (`apply_affine_blend`, `apply_delta_blend`); "poly"
    the float reference (`apply_lift`). Wherever the mask is 0 the composite's pixel is kept bit for bit.

    Args:
        params: a correction; composite: (H, W, 3) uint8; mask: (y1 - y0, x1 - x0) float32 of the box in
        [0, 1]; strength: in [0, 1]; box: (y0, y1, x0, x1); detail_scale: as `apply_affine_blend`'s.

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    y0, y1, x0, x1 = box
    weight = mask * np.float32(strength)
    if params.method == "affine-grid":
        return apply_affine_blend(params, composite, weight, box, detail_scale)
    if params.method == "delta":
        return apply_delta_blend(params, composite, weight, box)
    corrected = apply_lift(params, composite, box)
    np.nan_to_num(corrected, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    comp = composite[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255)
    blended = comp + weight[..., None] * (corrected - comp)
    region = composite[y0:y1, x0:x1].copy()
    np.copyto(region, np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8), where=mask[..., None] > 0)
    return region


def apply_person(params: LiftParams, foreground: np.ndarray, background: np.ndarray, mask: np.ndarray,
                 strength: float, box: tuple[int, int, int, int], detail_scale: int = 0) -> np.ndarray:
    """Correct the person's own colours, then composite: m * T(foreground) + (1 - m) * background, in the box.

    The soft edge gets the same correction as the inside (the correction is not blended in with the mask),
    and the background none. Two or three uint8 SIMD passes after the correction itself.

    Args:
        params: a "delta" or "affine-grid" correction.
        foreground, background: (H, W, 3) uint8 full-resolution frames (the person's colours; the backdrop).
        mask: (y1 - y0, x1 - x0) float32 mask of the box in [0, 1].
        strength: in [0, 1]; T is blended with the identity by it.
        box: (y0, y1, x0, x1).
        detail_scale: > 0 (affine-grid): re-colour at 1/detail_scale and keep the finer texture as it is.

    Returns:
        (y1 - y0, x1 - x0, 3) uint8; the background's pixel bit for bit where the mask is 0.

    Raises:
        ValueError: a correction of another method.
    """
    corrected = {"delta": delta_corrected, "affine-grid": affine_corrected_fast}.get(params.method)
    if corrected is None:
        raise ValueError(f"apply_person needs a 'delta' or 'affine-grid' correction, got {params.method!r}")
    y0, y1, x0, x1 = box
    if detail_scale > 0 and params.method == "affine-grid":
        person = affine_corrected_fast(params, foreground, box, scale=detail_scale, keep_detail=True)
    else:
        person = corrected(params, foreground, box)
    if strength < 1.0:
        person = cv2.addWeighted(foreground[y0:y1, x0:x1], 1.0 - strength, person, strength, 0.0)
    return person_over(person, background[y0:y1, x0:x1], mask)


__all__ = ["FAST_SCALE", "affine_corrected_fast", "affine_corrected_fast_torch", "apply_affine_blend", "apply_blend",
           "apply_person", "blocks", "contrast_gain", "contrast_gain_torch", "detail_scale", "gain_matrix",
           "grid_weights"]
