"""Resampling: every resize the frame path does, once, in NumPy/OpenCV and (where the GPU path needs it) torch.

Two jobs, each with its NumPy and its torch function side by side, held together by tests/test_resampling.py:
- **the frame to the network's size** (shrinking: INTER_AREA; enlarging a small frame: INTER_LINEAR):
  `network_resize` (cv2.resize) and `resize_matrices` + `network_resize_torch` (the same weights, taken
  from cv2 itself, as two matrix products on the device);
- **the coarse coefficient grid (or a low-resolution correction) up to the frame**, bilinear with half-pixel
  centres and clamped edges (cv2.resize INTER_LINEAR when enlarging, F.interpolate(align_corners=False)):
  `upsample_box` (exact float weights, NumPy gathers), `resize_box` (OpenCV's fast kernels, computing only
  a box), `grid_at_low_res` (the grid's map sampled on a smaller image of a box) and `upsample_grid_torch`.

Conventions: NumPy maps are (h, w) or (h, w, C) float32; torch maps (B, C, h, w). A box is (y0, y1, x0, x1)
in the output's pixels. torch is imported inside the torch functions only: the CPU runtime runs without it.
"""

from __future__ import annotations

import cv2
import numpy as np

# Frames up to this size are upsampled whole by cv2.resize then cut to the box (see resize_box).
RESIZE_WHOLE_MAX_PIXELS = 1920 * 1080


# -- the frame to the network's size ------------------------------------------------------------------------

def net_shape(height: int, width: int, net_size: int) -> tuple[int, int]:
    """(h, w) the network runs at for a frame: longer side net_size (or less for small frames), the
    shorter side the nearest multiple of 8, both >= 8 (engine.Harmonizer's step 2 says why)."""
    long_side = max(height, width)
    target = min(net_size, max(8, -(-long_side // 8) * 8))
    scale = target / long_side
    h = max(8, int(round(height * scale / 8)) * 8)
    w = max(8, int(round(width * scale / 8)) * 8)
    return (target, w) if height >= width else (h, target)


def network_interpolation(size: tuple[int, int], net: tuple[int, int]) -> int:
    """cv2's interpolation from a (H, W) frame to the network's (h, w): INTER_AREA when shrinking both sides
    (every source pixel counts: no aliasing of the person's texture into the statistics), else INTER_LINEAR."""
    return cv2.INTER_AREA if net[0] <= size[0] and net[1] <= size[1] else cv2.INTER_LINEAR


def network_resize(image: np.ndarray, net: tuple[int, int]) -> np.ndarray:
    """`image` (H, W[, C]) at the network's (h, w) (cv2.resize; a uint8 frame comes back rounded to uint8)."""
    h, w = net
    return cv2.resize(image, (w, h), interpolation=network_interpolation(image.shape[:2], net))


def network_inputs(composite: np.ndarray, mask: np.ndarray, reference: np.ndarray | None,
                   net: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's inputs at (h, w): (composite float32 in [0, 1] from its uint8 resize, mask, reference
    clipped to [0, 1]); the reference defaults to 1 - mask. The GPU path's twin is `network_resize_torch`
    with uint8_planes=3 (engine.device_harmonizer)."""
    comp_low = network_resize(composite, net).astype(np.float32) * np.float32(1 / 255)
    mask_low = np.clip(network_resize(mask, net), 0, 1)
    ref_low = 1 - mask_low if reference is None else np.clip(network_resize(reference, net), 0, 1)
    return comp_low, mask_low, ref_low


def resize_matrices(size: tuple[int, int], net: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(Ry (h, H), Rx^T (W, w)) float32 with ``Ry @ image @ Rx^T == network_resize(image, net)`` (float).

    The weights are cv2's own: each matrix is cv2.resize applied to an identity along one axis. A resize as
    two matrix products runs on a GPU's tensor cores and equals the CPU path to float rounding.

    Args:
        size: (H, W) of the frame.
        net: (h, w) of the network input.
    """
    (height, width), (h, w) = size, net
    interp = network_interpolation(size, net)
    ry = cv2.resize(np.eye(height, dtype=np.float32), (height, h), interpolation=interp)
    rx_t = cv2.resize(np.eye(width, dtype=np.float32), (w, width), interpolation=interp)
    return np.ascontiguousarray(ry), np.ascontiguousarray(rx_t)


def network_resize_torch(planes, ry, rx_t, uint8_planes: int = 0):
    """`network_resize` on a device: planes (B, C, H, W) float at 0..255 (image) or 0..1 (masks), with the
    matrices of `resize_matrices` as tensors. The first `uint8_planes` planes are rounded and clamped to
    0..255 as cv2 rounds a uint8 frame's resize (the network sees what the CPU path gives it)."""
    import torch

    low = (ry @ planes @ rx_t).float()
    if uint8_planes:
        low = torch.cat([torch.round(low[:, :uint8_planes]).clamp(0, 255), low[:, uint8_planes:]], dim=1)
    return low


# -- the grid (or a low-resolution map) up to the frame -----------------------------------------------------

def taps(n_out: int, n_in: int, start: int = 0, stop: int | None = None):
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


def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Dense (n_out, n_in) float32 matrix of the same interpolation (for fitting on small grids)."""
    i0, i1, w1 = taps(n_out, n_in)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def upsample_box(src: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Bilinearly resize `src` (h, w, C) to `size` = (H, W) and return only rows y0:y1, cols x0:x1.

    Exact float weights (the `taps` maths), NumPy gathers: the reference the fast paths and the torch path
    are tested against, and the affine grid's apply where a quantised position would show as steps.
    """
    height, width = size
    y0, y1, x0, x1 = box
    i0, i1, wy = taps(height, src.shape[0], y0, y1)
    j0, j1, wx = taps(width, src.shape[1], x0, x1)
    rows = src[i0] * (1 - wy)[:, None, None] + src[i1] * wy[:, None, None]
    return rows[:, j0] * (1 - wx)[None, :, None] + rows[:, j1] * wx[None, :, None]


def upsample_grid_torch(coefficients, size: tuple[int, int]):
    """`upsample_box` of the whole frame on a device: (B, C, h, w) -> (B, C, H, W), the same half-pixel
    bilinear map with clamped edges (F.interpolate, align_corners=False)."""
    import torch.nn.functional as F

    if tuple(coefficients.shape[-2:]) == tuple(size):
        return coefficients
    return F.interpolate(coefficients, size=tuple(size), mode="bilinear", align_corners=False)


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


def _warp_box(src: np.ndarray, warp: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """cv2.warpAffine of `src` (h, w[, C]) by the inverse map `warp`, 4 channels a call, replicated borders:
    (rows, cols, C). OpenCV quantises its sample positions to 1/32 of a source pixel: invisible on the smooth
    maps this samples (the delta correction, the affine head's coefficients, the mask's planes)."""
    rows, cols = out_size
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    chunks = [src] if src.ndim == 2 else [src[..., c:c + 4] for c in range(0, src.shape[2], 4)]
    parts = [cv2.warpAffine(np.ascontiguousarray(chunk), warp, (cols, rows), flags=flags,
                            borderMode=cv2.BORDER_REPLICATE).reshape(rows, cols, -1) for chunk in chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


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
    - otherwise cv2.warpAffine of the box (`_warp_box`) with cv2.resize's half-pixel mapping.
    """
    height, width = size
    y0, y1, x0, x1 = box
    out = aligned_crop_resize(src, size, box)
    if out is None and whole and height * width <= RESIZE_WHOLE_MAX_PIXELS:
        out = cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)[y0:y1, x0:x1]
    if out is None:
        sy, sx = src.shape[0] / height, src.shape[1] / width
        # Inverse map: output pixel (x, y) of the box samples src at ((x + x0 + 0.5) * sx - 0.5, ...).
        warp = np.array([[sx, 0.0, (x0 + 0.5) * sx - 0.5], [0.0, sy, (y0 + 0.5) * sy - 0.5]])
        out = _warp_box(src, warp, (y1 - y0, x1 - x0))
    # cv2 drops a single channel's axis: give back the caller's layout.
    return out.reshape(y1 - y0, x1 - x0) if src.ndim == 2 else out.reshape(y1 - y0, x1 - x0, -1)


def grid_at_low_res(grid: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int],
                    low: tuple[int, int]) -> np.ndarray:
    """The grid's bilinear map (as `upsample_box` to the full frame) sampled at the centres of a
    low-resolution image of the box, (low_h, low_w, C): one warpAffine per 4 channels on the small image only."""
    height, width = size
    y0, y1, x0, x1 = box
    low_h, low_w = low
    sy, sx = grid.shape[0] / height, grid.shape[1] / width
    ky, kx = (y1 - y0) / low_h, (x1 - x0) / low_w  # full-resolution pixels per low pixel
    # Low pixel j's centre is full-resolution x0 + (j + 0.5) kx - 0.5, which samples the grid at
    # (that + 0.5) sx - 0.5 (cv2.resize's half-pixel mapping).
    warp = np.array([[kx * sx, 0.0, (x0 + 0.5 * kx) * sx - 0.5], [0.0, ky * sy, (y0 + 0.5 * ky) * sy - 0.5]])
    return _warp_box(grid, warp, (low_h, low_w))


__all__ = ["RESIZE_WHOLE_MAX_PIXELS", "aligned_crop_resize", "grid_at_low_res", "interp_matrix", "net_shape",
           "network_inputs", "network_interpolation",
           "network_resize", "network_resize_torch", "resize_box", "resize_matrices", "taps", "upsample_box",
           "upsample_grid_torch"]
