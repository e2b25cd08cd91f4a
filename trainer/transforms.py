"""Paired transforms: the same flip/crop/resize applied to every image of one sample.

A sample is a dict of NumPy arrays with the same height and width: uint8 RGB (H, W, 3) images
(``composite``, ``real``) and float32 (H, W) masks (``mask``). Geometry must match across them, or the
network learns from a target that is shifted against its input; so one draw of the random parameters is
applied to all. Randomness comes from a caller-owned ``numpy.random.Generator`` (reproducible resume).
"""

from __future__ import annotations

import cv2
import numpy as np


def _size(sample: dict) -> tuple[int, int]:
    shapes = {k: v.shape[:2] for k, v in sample.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"paired transform needs equal sizes, got {shapes}")
    return next(iter(shapes.values()))


def hflip(sample: dict) -> dict:
    """Mirror every array left-right."""
    return {k: np.ascontiguousarray(v[:, ::-1]) for k, v in sample.items()}


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """The same window of every array."""
    return {k: v[top:top + height, left:left + width] for k, v in sample.items()}


def resize(sample: dict, height: int, width: int) -> dict:
    """Area-resample when shrinking, linear when enlarging; the same filter for every array, so that a
    mask's soft edge lines up with the image's."""
    h, w = _size(sample)
    interp = cv2.INTER_AREA if (height <= h and width <= w) else cv2.INTER_LINEAR
    return {k: cv2.resize(v, (width, height), interpolation=interp) for k, v in sample.items()}


def random_resized_crop(sample: dict, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.5, 1.0), ratio: tuple[float, float] = (0.75, 1.333)) -> dict:
    """A random window covering ``scale`` of the area with aspect in ``ratio``, resized to size×size.

    Falls back to the largest centred window when no draw fits (tiny or very elongated photos).
    """
    h, w = _size(sample)
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return resize(crop(sample, top, left, ch, cw), size, size)
    side = min(h, w)
    return resize(crop(sample, (h - side) // 2, (w - side) // 2, side, side), size, size)


def train_transform(sample: dict, size: int, rng: np.random.Generator, flip_p: float = 0.5,
                    scale: tuple[float, float] = (0.5, 1.0)) -> dict:
    """Training geometry: random resized crop to size×size, then a horizontal flip with ``flip_p``."""
    sample = random_resized_crop(sample, size, rng, scale=scale)
    if rng.random() < flip_p:
        sample = hflip(sample)
    return sample


def eval_transform(sample: dict, size: int) -> dict:
    """Evaluation geometry: the whole image resized to size×size (the iHarmony4 protocol)."""
    return resize(sample, size, size)
