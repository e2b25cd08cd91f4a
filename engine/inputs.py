"""The engine's boundary: the frames and masks a caller hands it, checked once for both frame paths.

engine.Harmonizer (NumPy) and engine.gpu_frame (a torch device) take the same inputs: uint8 RGB frames
H x W x 3 and a person mask H x W (float in [0, 1], uint8 0..255 or bool; H x W x 1 is accepted). Each
error names what was expected and what came.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MASK_DTYPES = (np.uint8, np.bool_, np.float16, np.float32, np.float64)
#: The longest time constant `smoothing` takes (seconds): slower than this, a real change of the light
#: would take many seconds to show.
MAX_SMOOTHING = 2.0


def smoothing_seconds(value) -> float:
    """A smoothing setting (a time constant in seconds) as a float, checked: the Harmonizer's and the GPU
    frame path's one rule.

    Raises:
        ValueError: outside [0, MAX_SMOOTHING].
    """
    value = float(value)
    if not 0.0 <= value <= MAX_SMOOTHING:
        raise ValueError(f"smoothing must be a time constant in seconds in [0, {MAX_SMOOTHING:g}], got {value}")
    return value


def strength_share(value) -> float:
    """A strength setting (0 = the composite, 1 = the full harmonization) as a float, checked.

    Raises:
        ValueError: outside [0, 1].
    """
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {value}")
    return value


def check_image(image, name: str = "composite", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """`image` itself, after checking it is a uint8 H x W x 3 array (of `shape` where given).

    Raises:
        TypeError: not a uint8 numpy array.
        ValueError: another shape.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H x W x 3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} must be H x W x 3, got shape {image.shape}")
    if shape is not None and image.shape != tuple(shape):
        raise ValueError(f"{name} must be {tuple(shape)} (height, width, 3), got {image.shape}")
    return image


def check_mask(mask, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """`mask` as H x W (an H x W x 1 array's view), after checking its type, shape and dtype.

    Raises:
        TypeError: not a numpy array, or a dtype other than float, uint8 or bool.
        ValueError: not H x W = `size`.
    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H x W float in [0,1] or uint8), got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.shape != tuple(size):
        raise ValueError(f"{name} must be H x W = {tuple(size)} like the composite, got shape {mask.shape}")
    if mask.dtype not in MASK_DTYPES:
        raise TypeError(f"{name} must be float in [0,1], uint8 0..255 or bool, got dtype {mask.dtype}")
    return mask


def mask_float(mask, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Any accepted mask (`check_mask`) as float32 H x W in [0, 1], NaN as 0. A float32 mask already in
    [0, 1] comes back as it is, not copied: read it, never write into it.

    Raises:
        TypeError, ValueError: as `check_mask`.
    """
    mask = check_mask(mask, size, name)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) * np.float32(1 / 255)
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    m = mask.astype(np.float32, copy=False)
    # This runs on every camera frame, and a segmenter's float32 mask is almost always in range already:
    # OpenCV's min/max and sum (one SIMD pass each; a NaN or an infinity shows in the sum) find that in a
    # third of the time of a clipped copy (0.4 against 1.2 ms at 1080p), and the mask is then used as it is.
    if m.flags.c_contiguous:  # OpenCV reads an array with gaps between pixels only through a copy
        low, high = cv2.minMaxLoc(m)[:2]
        if low >= 0.0 and high <= 1.0 and math.isfinite(cv2.sumElems(m)[0]):
            return m
    m = np.clip(m, 0.0, 1.0)
    if not np.isfinite(m.sum(dtype=np.float32)):  # the full nan_to_num pass only where a NaN is
        m = np.nan_to_num(m, nan=0.0)
    return m


def mask_for_upload(mask, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Any accepted mask (`check_mask`) as uint8 0..255 or float32 (the two a device path uploads as they
    are: the device converts them, NaN included, as `mask_float` does).

    Raises:
        TypeError, ValueError: as `check_mask`.
    """
    mask = check_mask(mask, size, name)
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8) * np.uint8(255)
    if mask.dtype in (np.float16, np.float64):
        return mask.astype(np.float32)
    return mask


__all__ = ["MASK_DTYPES", "MAX_SMOOTHING", "check_image", "check_mask", "mask_float", "mask_for_upload",
           "smoothing_seconds", "strength_share"]
