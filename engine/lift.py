"""Lift a low-resolution harmonization result to full resolution without blurring the person.

The network sees the frame at `net_size` (e.g. 256 px); the camera frame is 720p-4K. Resizing the network's
image up would blur the person, so instead a *correction* is fitted at low resolution (where the network's
input and output are both known) and applied to the sharp full-resolution composite. Three methods:

- "delta":       the additive correction `harmonized - composite`, extended outside the mask by normalised
                 convolution (so a person who moves in a later frame is still covered) and upsampled
                 bilinearly. Exact for offsets; misses gain changes in fine texture.
- "affine-grid": a 3x4 affine colour transform per node of a coarse grid (bilateral-grid-like), fitted by
                 ridge-regularised weighted least squares (towards the global fit, which is itself
                 regularised towards identity) and interpolated bilinearly per pixel. Keeps texture,
                 follows spatially varying corrections.
- "poly":        one global polynomial colour mapping (degree 2 by default), as the IPH paper does.

Conventions: images are float32 H x W x 3 RGB in [0, 1], masks float32 H x W in [0, 1] (the person).
`composite_low`/`harmonized_low`/`mask_low` are the network's input/output *cropped to the frame's content*
(no padding), so that low and full resolution cover the same field of view. Interpolation uses OpenCV's
half-pixel convention (`cv2.resize(..., INTER_LINEAR)`), so grids and images line up at any scale.
Everything is vectorised float32 NumPy; work at full resolution is done in row stripes inside an optional
box (the person's bounding box) to bound memory at 4K.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from engine.blend import person_over

METHODS = ("affine-grid", "delta", "poly")

# Rows per stripe at full resolution: 128 rows x 3840 px x 12 coefficients x 4 B = 24 MB peak.
_STRIPE = 128
# Frames up to this size are upsampled whole by cv2.resize then cut to the box (see resize_box).
_RESIZE_WHOLE_MAX_PIXELS = 1920 * 1080


@dataclass(frozen=True)
class LiftParams:
    """A fitted correction: `method` and its parameters (float32), independent of the full frame size.

    delta:       data (h, w, 3), the additive correction at low resolution, defined everywhere.
    affine-grid: data (ny, nx, 12), per node the coefficients laid out as [c_r(3), c_g(3), c_b(3), bias(3)]
                 so that out = c_r*r + c_g*g + c_b*b + bias (each a 3-vector over output channels).
    poly:        data (n_features, 3), out = features(rgb - centre) @ data.
    """

    method: str
    data: np.ndarray
    degree: int = 0  # poly only
    centre: np.ndarray | None = None  # poly only: the colour the features are centred on
    detail_gain: float = 1.0  # affine-grid with keep_detail: the gain of the texture finer than the grid's


# ---------------------------------------------------------------------------------------------------------
# Interpolation helpers (the same maths as cv2.resize INTER_LINEAR when upsampling)


def _taps(n_out: int, n_in: int, start: int = 0, stop: int | None = None):
    """Two-tap linear interpolation from n_in samples to output positions start..stop of n_out.

    Returns (i0, i1, w1) with out[j] = (1 - w1[j]) * in[i0[j]] + w1[j] * in[i1[j]].
    """
    stop = n_out if stop is None else stop
    pos = (np.arange(start, stop, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (pos - i0).astype(np.float32)
    return i0, i1, w1


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Dense (n_out, n_in) float32 matrix of the same interpolation (for fitting on small grids)."""
    i0, i1, w1 = _taps(n_out, n_in)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def _resize_box(src: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Bilinearly resize `src` (h, w, C) to `size` = (H, W) and return only rows y0:y1, cols x0:x1.

    Exact float weights (the `_taps` maths), NumPy gathers: for the affine grid's coefficients, where
    a quantised position would show as steps in the colour transform.
    """
    height, width = size
    y0, y1, x0, x1 = box
    i0, i1, wy = _taps(height, src.shape[0], y0, y1)
    j0, j1, wx = _taps(width, src.shape[1], x0, x1)
    rows = src[i0] * (1 - wy)[:, None, None] + src[i1] * wy[:, None, None]
    return rows[:, j0] * (1 - wx)[None, :, None] + rows[:, j1] * wx[None, :, None]


def aligned_crop_resize(src: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]):
    """The box of `cv2.resize(src, size)` by resizing only the crop of `src` around it (one source pixel
    more on each side), when the scale is a whole number and the box lies on `src`'s pixel edges (the
    app's person box at 720p and 4K): the same sample positions and weights as the whole-frame resize.
    None otherwise. The result has `cv2.resize`'s shape (a one-channel plane comes back 2-D)."""
    height, width = size
    y0, y1, x0, x1 = box
    sy, sx = height / src.shape[0], width / src.shape[1]
    if sy != int(sy) or sx != int(sx) or y0 % sy or y1 % sy or x0 % sx or x1 % sx:
        return None
    sy, sx = int(sy), int(sx)
    i0, i1 = max(y0 // sy - 1, 0), min(y1 // sy + 1, src.shape[0])
    j0, j1 = max(x0 // sx - 1, 0), min(x1 // sx + 1, src.shape[1])
    up = cv2.resize(np.ascontiguousarray(src[i0:i1, j0:j1]), ((j1 - j0) * sx, (i1 - i0) * sy),
                    interpolation=cv2.INTER_LINEAR)
    return up[y0 - i0 * sy:y1 - i0 * sy, x0 - j0 * sx:x1 - j0 * sx]


def resize_box(src: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int],
               whole: bool = True) -> np.ndarray:
    """`cv2.resize(src, size[::-1])[y0:y1, x0:x1]` (bilinear, half-pixel centres), computing as little as
    it can; a 2-D plane comes back 2-D, an h×w×C map H×W×C.

    Three ways, cheapest first:
    - the scale is a whole number and the box lies on `src`'s pixel edges (the app's person box at 720p and
      4K from the 256-px mask): the crop of `src` around the box is resized (`aligned_crop_resize`), exact;
    - up to 1080p's pixel count (1080p's scale is 7.5): the whole-frame resize itself, cut; cv2.resize's
      separable SIMD path is ~3x faster per pixel than a warp of the box (about 10x for one float plane at
      1080p: 0.3 against 3.1 ms), and exact. `whole=False` skips it (many channels: the box alone is cheaper);
    - otherwise cv2.warpAffine of the box (one call per 4 channels) with cv2.resize's half-pixel mapping and
      replicated borders. OpenCV quantises its sample positions to 1/32 of a source pixel: invisible on the
      smooth maps this upsamples (the delta correction, the affine head's coefficients, the mask's planes).
    """
    height, width = size
    y0, y1, x0, x1 = box
    out = aligned_crop_resize(src, size, box)
    if out is None and whole and height * width <= _RESIZE_WHOLE_MAX_PIXELS:
        out = cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    if out is None:
        sy, sx = src.shape[0] / height, src.shape[1] / width
        # Inverse map: output pixel (x, y) of the box samples src at ((x + x0 + 0.5) * sx - 0.5, ...).
        warp = np.array([[sx, 0.0, (x0 + 0.5) * sx - 0.5], [0.0, sy, (y0 + 0.5) * sy - 0.5]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        chunks = [src] if src.ndim == 2 else [src[..., c:c + 4] for c in range(0, src.shape[2], 4)]
        parts = [cv2.warpAffine(np.ascontiguousarray(chunk), warp, (x1 - x0, y1 - y0), flags=flags,
                                borderMode=cv2.BORDER_REPLICATE).reshape(y1 - y0, x1 - x0, -1) for chunk in chunks]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
    # cv2 drops a single channel's axis: give back the caller's layout.
    return out.reshape(y1 - y0, x1 - x0) if src.ndim == 2 else out.reshape(y1 - y0, x1 - x0, -1)


def _row_stripes(shape, box: tuple[int, int, int, int]):
    """(start, end) rows to process `box` in: the whole box at once up to 1080p (one cv2.resize call, see
    `resize_box`), stripes of _STRIPE rows above, to bound the float working set at 4K."""
    y0, y1 = box[0], box[1]
    stripe = y1 - y0 if shape[0] * shape[1] <= _RESIZE_WHOLE_MAX_PIXELS else _STRIPE
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


def _check_images(**arrays: np.ndarray) -> None:
    shape = None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise TypeError(f"{name} must be a float32 ndarray, got {getattr(a, 'dtype', type(a).__name__)}")
        hw = a.shape[:2]
        if shape is None:
            shape = hw
        elif hw != shape:
            raise ValueError(f"{name} has size {hw}, expected {shape} like the other low-resolution inputs")


# ---------------------------------------------------------------------------------------------------------
# delta


def fit_delta(composite_low: np.ndarray, harmonized_low: np.ndarray, mask_low: np.ndarray,
              sigma: float | None = None, detail_sigma: float | None = None) -> LiftParams:
    """The additive correction at low resolution, extended smoothly outside the mask.

    Inside the person the correction is `harmonized - composite`; elsewhere it is filled by normalised
    convolution (a Gaussian-weighted average of nearby person corrections, falling back to the global mean),
    so that bilinear upsampling does not pull zeros into the person's edge and a later frame where the
    person has moved is still corrected.

    Args:
        sigma: Gaussian sigma (low-res pixels) of the fill outside the person (default: longer side / 16).
        detail_sigma: Gaussian sigma of the smoothing inside the person that drops texture from the
            correction (default: longer side / 128; 0 keeps the raw difference).
    """
    _check_images(composite_low=composite_low, harmonized_low=harmonized_low, mask_low=mask_low)
    h, w = mask_low.shape[:2]
    m = np.clip(mask_low.reshape(h, w), 0, 1)
    delta = harmonized_low - composite_low
    # The network's output is softer than its input, so `harmonized - composite` also holds "negative
    # detail" (the composite's texture, minus). Upsampled and added at full resolution, that blurs the
    # person and shimmers as they move. Smoothing it inside the person (normalised convolution, so the edge
    # does not pull in outside values) keeps the colour change and drops the texture: measured on held-out
    # portraits at full resolution +0.24 dB, and 40-47 % less added flicker (docs/benchmarks.md).
    if detail_sigma is None:
        detail_sigma = max(h, w) / 128  # 2 px at net_size 256
    if detail_sigma > 0:
        dm = cv2.GaussianBlur(delta * m[..., None], (0, 0), detail_sigma)
        mm = cv2.GaussianBlur(m, (0, 0), detail_sigma)[..., None]
        delta = np.where(mm > 1e-3, dm / np.maximum(mm, 1e-3), delta).astype(np.float32)
    total = float(m.sum())
    if total <= 1e-6:
        return LiftParams("delta", np.zeros_like(delta))
    mean = (delta * m[..., None]).reshape(-1, 3).sum(0) / np.float32(total)
    sigma = sigma or max(h, w) / 16
    blurred_dm = cv2.GaussianBlur(delta * m[..., None], (0, 0), sigma)
    blurred_m = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    eps = np.float32(1e-3)  # where no person is near, blend towards the global mean correction
    fill = (blurred_dm + eps * mean) / (blurred_m + eps)
    return LiftParams("delta", (m[..., None] * delta + (1 - m[..., None]) * fill).astype(np.float32))


def apply_delta(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """composite[box] + upsampled correction[box] (not clipped, not masked)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        up = resize_box(params.data, composite.shape[:2], (s, e, x0, x1))
        np.add(_stripe(composite, s, e, x0, x1), up, out=out[s - y0:e - y0])
    return out


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
    part = composite[y0:y1, x0:x1]
    return cv2.blendLinear(part, delta_corrected(params, composite, box), 1.0 - weight, weight)


def delta_corrected(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """saturate(image[box] + upsampled correction[box]) as uint8 (resize and one saturating add)."""
    if params.method != "delta":
        raise ValueError(f"a 'delta' correction is needed here, got {params.method!r}")
    y0, y1, x0, x1 = box
    up = resize_box(params.data * np.float32(255), image.shape[:2], box)
    return cv2.add(image[y0:y1, x0:x1], up, dtype=cv2.CV_8U)


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


# ---------------------------------------------------------------------------------------------------------
# affine-grid

_IDENTITY12 = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], np.float32)  # [c_r, c_g, c_b, bias]
REFERENCE_GAIN_LIMITS = (0.5, 2.0)


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


def scale_grid_outputs(data: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """An affine-grid's coefficients (..., 12) with output channel c multiplied by gain[c]: the grid's
    transform followed by that diagonal gain."""
    shape = data.shape
    return (data.reshape(*shape[:-1], 4, 3) * np.asarray(gain, np.float32)).reshape(shape).astype(np.float32)


def _features4(x: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 4) with a constant 1 (the bias)."""
    return np.concatenate([x, np.ones(x.shape[:-1] + (1,), np.float32)], axis=-1)


def _ridge(xtx: np.ndarray, xty: np.ndarray, lam: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Solve (XtX + diag(lam)) A = XtY + diag(lam) prior for a batch (..., k, k), (..., k, 3)."""
    k = xtx.shape[-1]
    # The floor keeps a flat-coloured person (zero variance, singular X^T X) solvable: it falls to the prior.
    reg = np.eye(k, dtype=np.float32) * (np.asarray(lam, np.float32) + np.float32(1e-6))
    return np.linalg.solve(xtx + reg, xty + reg @ prior).astype(np.float32)


def _to12(a: np.ndarray) -> np.ndarray:
    """(..., 4, 3) solution [rows: r, g, b, 1; cols: out channel] -> (..., 12) [c_r, c_g, c_b, bias]."""
    return a.reshape(a.shape[:-2] + (12,))


def grid_shape(height: int, width: int, grid: int) -> tuple[int, int]:
    """Nodes (ny, nx) for a frame: `grid` along the longer side, proportionally fewer along the shorter."""
    long_side = max(height, width)
    return max(2, round(grid * height / long_side)), max(2, round(grid * width / long_side))


def _centre(composite_low: np.ndarray, m: np.ndarray, mass: float) -> np.ndarray:
    """The person's mean colour (features are centred on it so that shrinking A keeps the mean)."""
    return ((composite_low.reshape(-1, 3) * m.reshape(-1, 1)).sum(0) / np.float32(mass)).astype(np.float32)


def _uncentre(a: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Coefficients (..., 4, 3) of y = A (x - mean) + b  ->  of y = A x + (b - A mean)."""
    a = a.copy()
    a[..., 3, :] -= np.einsum("k,...kc->...c", mean, a[..., :3, :])
    return a


def fit_affine_grid(composite_low: np.ndarray, harmonized_low: np.ndarray, mask_low: np.ndarray,
                    grid: int = 16, lam: float = 0.05, lam_global: float = 0.01) -> LiftParams:
    """Per-node affine colour transforms (3x4) on a coarse grid, fitted where the person is.

    Colours are centred on the person's mean colour mu, and each node's transform [A; b] minimises
        sum_p t(p) m(p) |A (x_p - mu) + b - y_p|^2 + sum_i lam_i |[A; b]_i - [A; b]_global,i|^2
    with t the bilinear tent weight of the node (exactly the transpose of the interpolation used to apply
    it), m the mask, and lam_i = lam * (the person's total X^T X)_ii / number of nodes: `lam` is the
    shrinkage as a fraction of a typical node's information, whatever the resolution or image contrast.
    A_global is the same fit over the whole person, shrunk towards identity with `lam_global`. A node far
    from the person (or on a flat patch whose colour transform is ill-determined) inherits the global
    transform, never a wild extrapolation.

    Args:
        composite_low, harmonized_low: (h, w, 3) float32, the network's input and output.
        mask_low: (h, w) float32 in [0, 1].
        grid: nodes along the longer side.
        lam, lam_global: ridge strengths (see above).

    Returns:
        LiftParams("affine-grid", (ny, nx, 12)).
    """
    _check_images(composite_low=composite_low, harmonized_low=harmonized_low, mask_low=mask_low)
    h, w = mask_low.shape[:2]
    ny, nx = grid_shape(h, w, grid)
    m = np.clip(mask_low.reshape(h, w), 0, 1)
    mass = float(m.sum())
    if mass <= 1e-6:
        return LiftParams("affine-grid", np.broadcast_to(_IDENTITY12, (ny, nx, 12)).copy())
    mean = _centre(composite_low, m, mass)
    x4 = _features4(composite_low - mean)
    xw = x4 * m[..., None]
    # Per pixel outer products m*x x^T (16) and m*x y^T (12), flattened to one (h, w, 28) array.
    prods = np.concatenate([(xw[..., :, None] * x4[..., None, :]).reshape(h, w, 16),
                            (xw[..., :, None] * harmonized_low[..., None, :]).reshape(h, w, 12)], axis=-1)
    wy = _interp_matrix(h, ny)  # (h, ny): how much pixel row y belongs to node row i
    wx = _interp_matrix(w, nx)
    node = np.einsum("yi,yxk->ixk", wy, prods, optimize=True)
    node = np.einsum("xj,ixk->ijk", wx, node, optimize=True)  # (ny, nx, 28)
    total = prods.reshape(-1, 28).sum(0)

    prior = _IDENTITY12.reshape(4, 3).copy()
    prior[3] = mean  # identity in centred coordinates: y = (x - mu) + mu
    # Ridge per coefficient proportional to its own data term (Levenberg-Marquardt style): `lam` is then a
    # fraction of the information, whatever the resolution, mask area or image contrast.
    xtx = total[:16].reshape(4, 4)
    diag = np.diagonal(xtx).astype(np.float32)
    a_global = _ridge(xtx, total[16:].reshape(4, 3), lam_global * diag, prior)
    a_nodes = _ridge(node[..., :16].reshape(ny, nx, 4, 4), node[..., 16:].reshape(ny, nx, 4, 3),
                     lam * diag / np.float32(ny * nx), np.broadcast_to(a_global, (ny, nx, 4, 3)))
    return LiftParams("affine-grid", _to12(_uncentre(a_nodes, mean)))


def apply_affine_grid(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """Interpolate the node transforms per pixel and apply them to composite[box] (not clipped)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        coef = _resize_box(params.data, composite.shape[:2], (s, e, x0, x1))  # (rows, cols, 12)
        x = _stripe(composite, s, e, x0, x1)
        o = out[s - y0:e - y0]
        np.multiply(coef[..., 0:3], x[..., 0:1], out=o)
        o += coef[..., 3:6] * x[..., 1:2]
        o += coef[..., 6:9] * x[..., 2:3]
        o += coef[..., 9:12]
    return out


def apply_affine_blend(params: LiftParams, composite: np.ndarray, weight: np.ndarray,
                       box: tuple[int, int, int, int], detail_scale: int = 0) -> np.ndarray:
    """Blend `composite[box]` towards the grid's colour transforms applied to it, by `weight`, as uint8.

    The camera-rate path of the "affine" head: the (ny, nx, 12) grid is upsampled inside the box only
    (warpAffine, 4 channels a call), applied in float32, saturated to uint8, and blended with
    blendLinear. Where `weight` is 0 the result is the composite's pixel bit for bit.

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
    part = composite[y0:y1, x0:x1]
    if detail_scale > 0:
        corrected = affine_corrected_fast(params, composite, box, scale=detail_scale, keep_detail=True)
    else:
        corrected = affine_corrected(params, composite, box)
    return cv2.blendLinear(part, corrected, 1.0 - weight, weight)


def affine_corrected(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The grid's colour transforms applied to image[box], rounded and saturated to uint8."""
    if params.method != "affine-grid":
        raise ValueError(f"an 'affine-grid' correction is needed here, got {params.method!r}")
    y0, y1, x0, x1 = box
    coef = resize_box(params.data, image.shape[:2], box, whole=False)
    x = image[y0:y1, x0:x1].astype(np.float32)  # 0..255: the bias is scaled instead of the image
    out = coef[..., 0:3] * x[..., 0:1]
    out += coef[..., 3:6] * x[..., 1:2]
    out += coef[..., 6:9] * x[..., 2:3]
    out += coef[..., 9:12] * np.float32(255)
    return cv2.convertScaleAbs(np.clip(out, 0, 255, out=out))  # rounds and saturates to uint8


def _grid_at_low_res(grid: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int],
                     low: tuple[int, int]) -> np.ndarray:
    """The grid's bilinear map (as `_resize_box` to the full frame) sampled at the centres of a low-resolution
    image of the box, (low_h, low_w, C): one warpAffine per 4 channels on the small image only."""
    height, width = size
    y0, y1, x0, x1 = box
    low_h, low_w = low
    sy, sx = grid.shape[0] / height, grid.shape[1] / width
    ky, kx = (y1 - y0) / low_h, (x1 - x0) / low_w  # full-resolution pixels per low pixel
    # Low pixel j's centre is full-resolution x0 + (j + 0.5) kx - 0.5, which samples the grid at
    # (that + 0.5) sx - 0.5 (cv2.resize's half-pixel mapping).
    warp = np.array([[kx * sx, 0.0, (x0 + 0.5 * kx) * sx - 0.5], [0.0, ky * sy, (y0 + 0.5 * ky) * sy - 0.5]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    parts = [cv2.warpAffine(np.ascontiguousarray(grid[..., c:c + 4]), warp, (low_w, low_h), flags=flags,
                            borderMode=cv2.BORDER_REPLICATE).reshape(low_h, low_w, -1)
             for c in range(0, grid.shape[2], 4)]
    return np.concatenate(parts, axis=-1)


def affine_corrected_fast(params: LiftParams, image: np.ndarray, box: tuple[int, int, int, int],
                          scale: int = 4, keep_detail: bool = False) -> np.ndarray:
    """`affine_corrected` for the camera rate: the grid's mean transform on every pixel, the rest at 1/scale.

    With A(p) x + b(p) the per-pixel transform and A_g, b_g the grid's mean, split the image into its
    1/scale-resolution part L and the detail x - L:
        T(x) = A(p) L + b(p) + A(p) (x - L)  ~=  A_g x + up(T(L_low) - A_g L_low)
    i.e. exact for the smooth part, and the detail gets the mean gain instead of the local one (the grid
    is smooth, so A(p) - A_g is small where detail is). Full resolution sees one float conversion, one
    `cv2.transform` (SIMD, 3x3 matrix), one bilinear upsample and one saturating add: about 10x less than
    the per-pixel 3x4 product of 12 upsampled coefficient planes (docs/benchmarks.md).

    With `keep_detail` (PHNetConfig.keep_detail) the detail gets `params.detail_gain` (`contrast_gain`: the
    transforms' own stretch of the person's contrast; 1 keeps it as it is) instead of the mean gain: the
    transforms re-colour the 1/scale image only, and the frame's texture finer than that follows.

    Returns:
        (y1 - y0, x1 - x0, 3) uint8.
    """
    if params.method != "affine-grid":
        raise ValueError(f"an 'affine-grid' correction is needed here, got {params.method!r}")
    y0, y1, x0, x1 = box
    part = image[y0:y1, x0:x1]
    low_w, low_h = max((x1 - x0) // scale, 1), max((y1 - y0) // scale, 1)
    low = cv2.resize(part, (low_w, low_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    coef = _grid_at_low_res(params.data, image.shape[:2], box, (low_h, low_w))
    # out[c] = sum_k A[c, k] x[k], A the grid's mean gain (the identity when the detail is kept)
    gain = (np.eye(3) * params.detail_gain if keep_detail
            else params.data.reshape(-1, 12)[:, :9].mean(axis=0).reshape(3, 3).T)
    local = (coef[..., 0:3] * low[..., 0:1] + coef[..., 3:6] * low[..., 1:2] + coef[..., 6:9] * low[..., 2:3]
             + coef[..., 9:12] * np.float32(255))
    residual = local - low @ gain.T.astype(np.float32)
    up = cv2.resize(residual, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    # In float until the one rounding and saturation at the end: a uint8 transform would clip bright pixels
    # before the residual brings them back. With keep_detail the gain is a scalar: one OpenCV pass takes the
    # uint8 frame times it plus the float residual (no float copy of the frame; 0.55 instead of 0.8 ms at 720p).
    if keep_detail:
        return cv2.addWeighted(part, float(params.detail_gain), up, 1.0, 0.0, dtype=cv2.CV_8U)
    part = cv2.transform(part.astype(np.float32), np.concatenate([gain, np.zeros((3, 1))], axis=1).astype(np.float32))
    return cv2.add(part, up, dtype=cv2.CV_8U)


GREY = np.array([0.299, 0.587, 0.114], np.float32)


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


# ---------------------------------------------------------------------------------------------------------
# poly


def _monomials(degree: int) -> list[tuple[int, ...]]:
    """Channel index tuples of every monomial of degree 1..degree (r, g, b, rr, rg, ...)."""
    return [c for d in range(1, degree + 1) for c in itertools.combinations_with_replacement(range(3), d)]


def poly_features(x: np.ndarray, degree: int) -> np.ndarray:
    """(..., 3) -> (..., n) monomials of degree 1..degree followed by a constant 1."""
    feats = [np.prod([x[..., i] for i in combo], axis=0) if len(combo) > 1 else x[..., combo[0]]
             for combo in _monomials(degree)]
    feats.append(np.ones(x.shape[:-1], np.float32))
    return np.stack(feats, axis=-1).astype(np.float32)


def fit_poly(composite_low: np.ndarray, harmonized_low: np.ndarray, mask_low: np.ndarray,
             degree: int = 2, lam: float = 1e-3, centre: np.ndarray | None = None) -> LiftParams:
    """One global polynomial colour mapping fitted on the person, ridge-regularised towards identity.

    `centre` fixes the colour the features are centred on (default: the person's mean colour); fits that
    share a centre can be averaged coefficient by coefficient (temporal smoothing does that).
    """
    _check_images(composite_low=composite_low, harmonized_low=harmonized_low, mask_low=mask_low)
    if degree not in (1, 2, 3):
        raise ValueError(f"poly degree must be 1, 2 or 3, got {degree}")
    m = np.clip(mask_low.reshape(-1), 0, 1)
    n = len(_monomials(degree)) + 1
    mass = float(m.sum())
    identity = np.zeros((n, 3), np.float32)
    identity[0:3] = np.eye(3, dtype=np.float32)
    if mass <= 1e-6:
        return LiftParams("poly", identity, degree, np.zeros(3, np.float32))
    # Features of the centred colour (better conditioned); coefficients are converted back below.
    mean = _centre(composite_low, m.reshape(mask_low.shape[:2]), mass) if centre is None else \
        np.asarray(centre, np.float32)
    feats = poly_features(composite_low.reshape(-1, 3) - mean, degree)
    prior = np.zeros((n, 3), np.float32)
    prior[0:3] = np.eye(3, dtype=np.float32)
    prior[-1] = mean
    fw = feats * m[:, None]
    xtx = fw.T @ feats
    coef = _ridge(xtx, fw.T @ harmonized_low.reshape(-1, 3), lam * np.diagonal(xtx), prior)
    return LiftParams("poly", coef, degree, mean)


def apply_poly(params: LiftParams, composite: np.ndarray, box=None) -> np.ndarray:
    """The polynomial mapping applied to composite[box] (not clipped)."""
    box = box or _full_box(composite.shape)
    y0, y1, x0, x1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), np.float32)
    for s, e in _row_stripes(composite.shape, box):
        out[s - y0:e - y0] = poly_features(_stripe(composite, s, e, x0, x1) - params.centre, params.degree) @ params.data
    return out


# ---------------------------------------------------------------------------------------------------------
# dispatch


def fit_lift(method: str, composite_low: np.ndarray, harmonized_low: np.ndarray, mask_low: np.ndarray,
             **options) -> LiftParams:
    """Fit `method` ("affine-grid", "delta" or "poly") on the network's input/output at low resolution.

    Raises:
        ValueError: unknown method, or low-resolution inputs of different sizes.
        TypeError: inputs are not float32 arrays.
    """
    if method == "delta":
        return fit_delta(composite_low, harmonized_low, mask_low, **options)
    if method == "affine-grid":
        return fit_affine_grid(composite_low, harmonized_low, mask_low, **options)
    if method == "poly":
        return fit_poly(composite_low, harmonized_low, mask_low, **options)
    raise ValueError(f"unknown lift method {method!r}; expected one of {', '.join(METHODS)}")


def blend_params(previous: LiftParams | None, current: LiftParams, momentum: float) -> LiftParams:
    """Exponential moving average of two fits of the same method and shape (temporal smoothing).

    Every method's output is linear in its parameters (poly only for fits sharing a centre), so averaging
    parameters averages the corrections. Returns `current` when the two cannot be averaged.
    """
    if (previous is None or momentum <= 0 or previous.method != current.method
            or previous.data.shape != current.data.shape or previous.degree != current.degree
            or (current.method == "poly" and not np.array_equal(previous.centre, current.centre))):
        return current
    m = np.float32(momentum)
    return LiftParams(current.method, (m * previous.data + (1 - m) * current.data).astype(np.float32),
                      current.degree, current.centre,
                      float(m * previous.detail_gain + (1 - m) * current.detail_gain))


def apply_lift(params: LiftParams, composite: np.ndarray, box: tuple[int, int, int, int] | None = None
               ) -> np.ndarray:
    """The harmonized image at full resolution inside `box` = (y0, y1, x0, x1), clipped to [0, 1].

    Args:
        params: from `fit_lift`.
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
