"""Harmonization metrics on 0-255 images (PHNet appendix A), as pure NumPy functions.

Choices (the literature disagrees; these are the project's): images are compared as float64 on the 0-255
scale after rounding to uint8; masks are binarised at 0.5; PSNR uses MAX = 255; fMSE = sum over the
foreground of the squared error / (3 * foreground pixels). A perfect image has PSNR capped at 100 dB so
averages stay finite. Per-image values are averaged (the iHarmony4 convention); foreground-ratio buckets
are < 5 %, 5-15 % and >= 15 % of the image.
"""

from __future__ import annotations

import cv2
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


def detail_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Band-pass energy of the person: the variance of a difference of Gaussians (sigma 1.5 and 3 px) of
    the grey image, divided by the grey variance, both over the person (mask >= 0.5). Blur lowers it;
    0 for an empty or flat person."""
    m = binarize(mask)
    if m.sum() < 2:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)
    band = cv2.GaussianBlur(grey, (0, 0), 1.5) - cv2.GaussianBlur(grey, (0, 0), 3.0)
    total = float(grey[m].var())
    return float(band[m].var() / total) if total > 1e-9 else 0.0


def detail_ratio(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """detail_energy(pred) / detail_energy(target): 1 keeps the ground truth's texture, below 1 is blur
    (NaN where the target has no texture to compare with)."""
    reference = detail_energy(target, mask)
    return detail_energy(pred, mask) / reference if reference > 0 else float("nan")


def image_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MSE, fMSE, PSNR, fPSNR, the detail ratio and the foreground ratio of one image pair.

    Raises:
        ValueError: if shapes do not match.
    """
    m, fm = mse(pred, target), fmse(pred, target, mask)
    return {"mse": m, "fmse": fm, "psnr": psnr_from_mse(m), "fpsnr": psnr_from_mse(fm),
            "detail": detail_ratio(pred, target, mask), "fg_ratio": float(binarize(mask).mean())}


def bucket_of(fg_ratio: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= fg_ratio < hi:
            return name
    return BUCKETS[-1][0]


def summarize(per_image: list[dict[str, float]]) -> dict:
    """Means over all images and per foreground-ratio bucket: {"all": {...,"count"}, "<5%": ..., ...}.

    The detail ratio is summarised by its geometric mean (a ratio: 0.5 and 2 should average to 1) over the
    images where it is defined."""
    keys = ("mse", "fmse", "psnr", "fpsnr")

    def geometric_mean(rows):
        values = [r["detail"] for r in rows if "detail" in r and np.isfinite(r["detail"]) and r["detail"] > 0]
        return float(np.exp(np.mean(np.log(values)))) if values else None

    def mean_of(rows):
        means = {k: float(np.mean([r[k] for r in rows])) if rows else None for k in keys}
        return {"count": len(rows), **means, "detail": geometric_mean(rows)}

    out = {"all": mean_of(per_image)}
    for name, _, _ in BUCKETS:
        out[name] = mean_of([r for r in per_image if bucket_of(r["fg_ratio"]) == name])
    return out
