"""Harmonization metrics on 0-255 images (PHNet appendix A), as pure NumPy functions.

Choices (the literature disagrees; these are the project's): images are compared as float64 on the 0-255
scale after rounding to uint8; masks are binarised at 0.5; PSNR uses MAX = 255; fMSE = sum over the
foreground of the squared error / (3 * foreground pixels). A perfect image has PSNR capped at 100 dB so
averages stay finite. Per-image values are averaged (the iHarmony4 convention); foreground-ratio buckets
are < 5 %, 5-15 % and >= 15 % of the image.
"""

from __future__ import annotations

import numpy as np

MAX_VALUE = 255.0
PSNR_CAP = 100.0
BUCKETS = (("<5%", 0.0, 0.05), ("5-15%", 0.05, 0.15), (">=15%", 0.15, 1.01))


def _check(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> None:
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[2] != 3:
        raise ValueError(f"pred and target must both be (H, W, 3), got {pred.shape} and {target.shape}")
    if mask is not None and mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {pred.shape[:2]}, got {mask.shape}")


def binarize(mask: np.ndarray) -> np.ndarray:
    """Bool (H, W): True where the mask is >= 0.5 (uint8 masks are scaled from 0..255 first)."""
    m = mask.astype(np.float64) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float64)
    return m >= 0.5


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    _check(pred, target)
    return float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))


def fmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Foreground MSE; 0 for an empty foreground."""
    _check(pred, target, mask)
    m = binarize(mask)
    n = int(m.sum())
    if n == 0:
        return 0.0
    err = (pred.astype(np.float64) - target.astype(np.float64)) ** 2
    return float(err[m].sum() / (3 * n))


def psnr_from_mse(value: float) -> float:
    return PSNR_CAP if value <= 0 else min(PSNR_CAP, 10.0 * np.log10(MAX_VALUE ** 2 / value))


def image_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MSE, fMSE, PSNR, fPSNR and the foreground ratio of one image pair.

    Raises:
        ValueError: if shapes do not match.
    """
    m, fm = mse(pred, target), fmse(pred, target, mask)
    return {"mse": m, "fmse": fm, "psnr": psnr_from_mse(m), "fpsnr": psnr_from_mse(fm),
            "fg_ratio": float(binarize(mask).mean())}


def bucket_of(fg_ratio: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= fg_ratio < hi:
            return name
    return BUCKETS[-1][0]


def summarize(per_image: list[dict[str, float]]) -> dict:
    """Means over all images and per foreground-ratio bucket: {"all": {...,"count"}, "<5%": ..., ...}."""
    keys = ("mse", "fmse", "psnr", "fpsnr")

    def mean_of(rows):
        return {"count": len(rows), **{k: float(np.mean([r[k] for r in rows])) if rows else None for k in keys}}

    out = {"all": mean_of(per_image)}
    for name, _, _ in BUCKETS:
        out[name] = mean_of([r for r in per_image if bucket_of(r["fg_ratio"]) == name])
    return out
