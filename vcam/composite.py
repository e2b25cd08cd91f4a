"""Composite: the person over the virtual background, composite = image·m + background·(1-m).

Per frame at full resolution, so it stays in uint8/float32 OpenCV kernels (no float64, no NumPy
broadcasting temporaries): `cv2.blendLinear` does the weighted sum with the float32 mask as per-pixel
weights and rounds to uint8 in one pass. Where m is exactly 0 the result is exactly the background, where
m is exactly 1 exactly the camera picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from vcam.frame import Frame


def composite(image: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend `image` over `background` with the person mask.

    Args:
        image: RGB uint8 H×W×3 (the camera picture).
        background: RGB uint8 H×W×3.
        mask: float32 H×W in [0, 1].

    Returns:
        RGB uint8 H×W×3.

    Raises:
        TypeError: wrong dtypes.
        ValueError: shapes that do not match.
    """
    if image.dtype != np.uint8 or background.dtype != np.uint8:
        raise TypeError(f"image and background must be uint8, got {image.dtype} and {background.dtype}")
    if image.shape != background.shape or image.ndim != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"expected image H×W×3, background of the same shape and mask H×W; got "
                         f"{image.shape}, {background.shape}, {mask.shape}")
    mask = mask if mask.dtype == np.float32 else mask.astype(np.float32)
    inverse = cv2.subtract(1.0, mask)
    return cv2.blendLinear(image, background, mask, inverse)


class Compositor:
    """The composite stage: `frame.composite` from image, background and mask.

    Keeps the 1 - mask plane between frames (a fresh full-resolution array per frame costs page faults);
    the composite itself is new each frame, since the harmonizer's worker may still hold the last one.
    """

    def __init__(self):
        self._inverse: np.ndarray | None = None

    def __call__(self, frame: Frame) -> Frame:
        image, background, mask = frame.image, frame.background, frame.mask
        if (mask.dtype != np.float32 or image.dtype != np.uint8 or background.shape != image.shape
                or mask.shape != image.shape[:2]):
            frame.composite = composite(image, background, mask)  # validates and says what is wrong
            return frame
        if self._inverse is None or self._inverse.shape != mask.shape:
            self._inverse = np.empty(mask.shape, np.float32)
        cv2.subtract(1.0, mask, dst=self._inverse)
        frame.composite = cv2.blendLinear(image, background, mask, self._inverse)
        return frame

    def close(self) -> None:
        pass
