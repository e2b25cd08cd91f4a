"""Lifts: an image head's low-resolution result turned into a correction that applies at full resolution.

The network sees the frame at `net_size` (e.g. 256 px); the camera frame is 720p-4K. Resizing the network's
image up would blur the person, so instead a *correction* (engine.corrections.LiftParams) is fitted at low
resolution, where the network's input and output are both known, and applied to the sharp full-resolution
composite (engine.corrections). Three methods:

- "delta":       the additive correction `harmonized - composite`, extended outside the mask by normalised
                 convolution (so a person who moves in a later frame is still covered) and upsampled
                 bilinearly. Exact for offsets; misses gain changes in fine texture.
- "affine-grid": a 3x4 affine colour transform per node of a coarse grid (bilateral-grid-like), fitted by
                 ridge-regularised weighted least squares (towards the global fit, which is itself
                 regularised towards identity) and interpolated bilinearly per pixel. Keeps texture,
                 follows spatially varying corrections.
- "poly":        one global polynomial colour mapping (degree 2 by default), as the IPH paper does.

The affine head (the shipped weights) predicts its grid directly and needs no fit. Conventions: images are
float32 H x W x 3 RGB in [0, 1], masks float32 H x W in [0, 1] (the person). `composite_low`/`harmonized_low`/
`mask_low` are the network's input/output *cropped to the frame's content* (no padding), so that low and
full resolution cover the same field of view. The fits use engine.resampling's interpolation (the transpose
of the one that applies them).
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.corrections import IDENTITY12, METHODS, LiftParams, monomials, poly_features
from engine.resampling import interp_matrix


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


# -- delta ----------------------------------------------------------------------------------------------------

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


# -- affine-grid ----------------------------------------------------------------------------------------------

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
        return LiftParams("affine-grid", np.broadcast_to(IDENTITY12, (ny, nx, 12)).copy())
    mean = _centre(composite_low, m, mass)
    x4 = _features4(composite_low - mean)
    xw = x4 * m[..., None]
    # Per pixel outer products m*x x^T (16) and m*x y^T (12), flattened to one (h, w, 28) array.
    prods = np.concatenate([(xw[..., :, None] * x4[..., None, :]).reshape(h, w, 16),
                            (xw[..., :, None] * harmonized_low[..., None, :]).reshape(h, w, 12)], axis=-1)
    wy = interp_matrix(h, ny)  # (h, ny): how much pixel row y belongs to node row i
    wx = interp_matrix(w, nx)
    node = np.einsum("yi,yxk->ixk", wy, prods, optimize=True)
    node = np.einsum("xj,ixk->ijk", wx, node, optimize=True)  # (ny, nx, 28)
    total = prods.reshape(-1, 28).sum(0)

    prior = IDENTITY12.reshape(4, 3).copy()
    prior[3] = mean  # identity in centred coordinates: y = (x - mu) + mu
    # Ridge per coefficient proportional to its own data term (Levenberg-Marquardt style): `lam` is then a
    # fraction of the information, whatever the resolution, mask area or image contrast.
    xtx = total[:16].reshape(4, 4)
    diag = np.diagonal(xtx).astype(np.float32)
    a_global = _ridge(xtx, total[16:].reshape(4, 3), lam_global * diag, prior)
    a_nodes = _ridge(node[..., :16].reshape(ny, nx, 4, 4), node[..., 16:].reshape(ny, nx, 4, 3),
                     lam * diag / np.float32(ny * nx), np.broadcast_to(a_global, (ny, nx, 4, 3)))
    return LiftParams("affine-grid", _to12(_uncentre(a_nodes, mean)))


# -- poly and the dispatch -----------------------------------------------------------------------------------

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
    n = len(monomials(degree)) + 1
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


__all__ = ["METHODS", "LiftParams", "fit_affine_grid", "fit_delta", "fit_lift", "fit_poly", "grid_shape"]
