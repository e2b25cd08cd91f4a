"""Edge refinement: the low-resolution mask snapped to the full-resolution picture's edges.

`fast_guided_filter` (He & Sun 2015) fits a local linear model mask ≈ a·gray + b at low resolution and
applies the upsampled (a, b) to the full-resolution gray image, so the mask edge follows the real edge of
hair and shoulders instead of a blurred, haloed upsample. `stretch` maps [0.4, 0.6] to [0, 1] and clips:
the model's 0.5 is the edge and the soft ramp is a few pixels wide (scripts/rim_eval.py measures it).

The segmenter's own path folds `stretch` and the guide's 1/255 into the low-resolution coefficients
(`edge_coefficients`) and upsamples them only in the person's box (`person_box`, `refine_box`), so full
resolution sees a uint8 gray box, two upsamples, one multiply-add and one clip.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.resampling import resize_box

STRETCH = (0.4, 0.6)  # mask values mapped to exactly 0 and 1: a narrow ramp around the model's 0.5
BOX_THRESHOLD = 0.05  # low-resolution mask values above this belong to the person's box


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges reflected (float32 in, float32 out)."""
    return cv2.boxFilter(image, cv2.CV_32F, (2 * radius + 1, 2 * radius + 1), normalize=True,
                         borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide_low: np.ndarray, mask_low: np.ndarray, radius: int = 2,
                        eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's smoothed local linear model mask ≈ a·guide + b, at low resolution.

    Args:
        guide_low: float32 h×w gray image in [0, 1] at the mask's resolution.
        mask_low: float32 h×w mask in [0, 1].
        radius: box radius at low resolution.
        eps: regularisation; smaller follows image edges more closely.

    Returns:
        (mean_a, mean_b), float32 h×w each.

    Raises:
        ValueError: shapes that do not match.
    """
    if guide_low.shape != mask_low.shape or guide_low.ndim != 2:
        raise ValueError(f"guide_low and mask_low must be equal 2-D shapes, got {guide_low.shape} and "
                         f"{mask_low.shape}")
    mean_i = box_mean(guide_low, radius)
    mean_p = box_mean(mask_low, radius)
    cov_ip = box_mean(guide_low * mask_low, radius) - mean_i * mean_p
    var_i = box_mean(guide_low * guide_low, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius), box_mean(b, radius)


def fast_guided_filter(guide_low: np.ndarray, mask_low: np.ndarray, guide_full: np.ndarray,
                       radius: int = 2, eps: float = 1e-4) -> np.ndarray:
    """Edge-aware upsampling of a low-resolution mask, guided by the image (He & Sun's fast guided filter).

    Args:
        guide_low: float32 h×w gray image in [0, 1] at the mask's resolution.
        mask_low: float32 h×w mask in [0, 1].
        guide_full: float32 H×W gray image in [0, 1] at output resolution.
        radius: box radius at low resolution.
        eps: regularisation; smaller follows image edges more closely.

    Returns:
        float32 H×W mask (not clipped; callers clip).

    Raises:
        ValueError: shapes that do not match.
    """
    if guide_full.ndim != 2:
        raise ValueError(f"guide_full must be 2-D, got shape {guide_full.shape}")
    mean_a, mean_b = guided_coefficients(guide_low, mask_low, radius, eps)
    height, width = guide_full.shape
    mean_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
    mean_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide_full + mean_b


def stretch(mask: np.ndarray, low: float = STRETCH[0], high: float = STRETCH[1]) -> np.ndarray:
    """Map [low, high] to [0, 1] and clip: near-certain pixels become exactly 0 or 1."""
    return _clip01((mask.astype(np.float32) - low) * (1.0 / (high - low)))


def _clip01(mask: np.ndarray) -> np.ndarray:
    # Two cv2 thresholds are cheaper than np.clip on a 720p float32 plane.
    mask = cv2.threshold(mask, 1.0, 1.0, cv2.THRESH_TRUNC)[1]
    return cv2.threshold(mask, 0.0, 0.0, cv2.THRESH_TOZERO)[1]


def person_box(mask_low: np.ndarray, edge_low: np.ndarray, size: tuple[int, int],
               margin: int = 6) -> tuple[int, int, int, int] | None:
    """The full-resolution (y0, y1, x0, x1) around the person, from low-resolution planes; None: nobody.

    A low-resolution pixel belongs to the person where the network's mask passes BOX_THRESHOLD or the
    guided, stretched mask is above 0 there; `margin` low-resolution pixels more on each side cover the
    guided filter's two box filters (radius 2 each) and the bilinear upsample, so outside the box the full
    mask is 0 as it would be if computed there.
    """
    rows = np.flatnonzero(((mask_low > BOX_THRESHOLD) | (edge_low > 0)).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(((mask_low[rows[0]:rows[-1] + 1] > BOX_THRESHOLD)
                           | (edge_low[rows[0]:rows[-1] + 1] > 0)).any(axis=0))
    low_h, low_w = mask_low.shape
    height, width = size
    sy, sx = height / low_h, width / low_w
    y0 = max(int((rows[0] - margin) * sy), 0)
    y1 = min(int(np.ceil((rows[-1] + 1 + margin) * sy)), height)
    x0 = max(int((cols[0] - margin) * sx), 0)
    x1 = min(int(np.ceil((cols[-1] + 1 + margin) * sx)), width)
    return y0, y1, x0, x1


def edge_coefficients(gray_low: np.ndarray, mask_low: np.ndarray,
                      edge: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's (a, b) at low resolution with `stretch` to `edge` and the 1/255 of a uint8
    full-resolution guide folded in: the full mask is clip(a·gray + b, 0, 1) with gray in 0..255."""
    mean_a, mean_b = guided_coefficients(gray_low, mask_low)
    low, high = edge
    scale = 1.0 / (high - low)
    mean_a *= scale / 255.0
    mean_b = (mean_b - low) * scale
    return mean_a, mean_b


def refine_box(mean_a: np.ndarray, mean_b: np.ndarray, gray: np.ndarray, size: tuple[int, int],
               box: tuple[int, int, int, int], out: np.ndarray) -> None:
    """Write clip(a·gray + b, 0, 1) for `box` (y0, y1, x0, x1) of a `size` picture into `out` (float32, the
    box's shape), (a, b) from `edge_coefficients` upsampled in the box only; `gray` is the box's uint8 guide."""
    up_a = resize_box(mean_a, size, box)
    up_b = resize_box(mean_b, size, box)
    result = cv2.add(cv2.multiply(up_a, gray, dtype=cv2.CV_32F), up_b)
    cv2.threshold(result, 1.0, 1.0, cv2.THRESH_TRUNC, dst=result)
    cv2.threshold(result, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)
