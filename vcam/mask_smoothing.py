"""Temporal smoothing, motion-aware: the mask (and the picture that guides its edge) steady from frame to
frame where the person is still, and following at once where they move.

- `adaptive_ema` smooths the low-resolution mask per pixel: small changes (flicker) are averaged, large
  ones (real motion) are followed at once, so the mask does not trail a moving person. While the picture
  is still as a whole (`still_picture`: a 3x3-mean gray change above STILL_LEVEL on at most
  STILL_FRACTION of it), any change of the mask away from what moved is the model's jitter and takes
  ALPHA_STILL, whatever its size.
- `MaskSmoother` keeps the last mask and carries it into a crop that moved with the person (resampled
  onto the new crop's grid), so zooming does not restart the smoothing.
- `GuideSteadier` averages the camera's noise out of the full-resolution gray guide where the picture is
  still: the guided filter's steep `a` at the edge turns every level of sensor noise into edge flicker.
"""

from __future__ import annotations

import cv2
import numpy as np

STILL_LEVEL = 6  # a low-resolution pixel (3x3 mean) that changed more than this (of 255) moved ...
STILL_REACH = np.ones((5, 5), np.uint8)  # ... and so did the mask within 2 low-resolution pixels of it
STILL_FRACTION = 0.002  # the mask's jitter is damped only while at most this fraction of the picture moved
ALPHA_STILL = 0.1  # ... with this weight for the new mask (chosen on held-in photos, scripts/mask_motion.py)
GUIDE_STILL_LEVEL = 12  # a full-resolution guide pixel that changed at most this much (of 255) is still ...
GUIDE_WEIGHT = 0.33  # ... and is averaged with its last value with this weight for the new one (camera noise)

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in frame coordinates


def adaptive_ema(previous: np.ndarray | None, mask: np.ndarray, alpha_min: float = 0.25,
                 threshold: float = 0.35, still: np.ndarray | bool | None = None,
                 alpha_still: float = ALPHA_STILL) -> np.ndarray:
    """Per-pixel exponential moving average whose rate rises with the change.

    alpha = alpha_min + (1 - alpha_min) * min(|mask - previous| / threshold, 1); result = previous +
    alpha * (mask - previous). A change of `threshold` or more is taken in full (no trailing behind
    motion); small frame-to-frame jitter is averaged with weight alpha_min. Where `still` (bool plane,
    the picture did not change there; True: nowhere) the change is the model's own jitter whatever its
    size: alpha_still.

    Raises:
        ValueError: shapes differ or parameters out of range.
    """
    if not 0 < alpha_min <= 1 or threshold <= 0:
        raise ValueError(f"need 0 < alpha_min <= 1 and threshold > 0, got {alpha_min}, {threshold}")
    if previous is None:
        return mask.astype(np.float32, copy=True)
    if previous.shape != mask.shape:
        raise ValueError(f"previous mask {previous.shape} and mask {mask.shape} differ")
    diff = mask - previous
    if still is True:  # the whole picture still: one weight (and no per-pixel rate to compute)
        return (previous + alpha_still * diff).astype(np.float32, copy=False)
    alpha = np.minimum(np.abs(diff) * ((1.0 - alpha_min) / threshold) + alpha_min, 1.0)
    if still is not None:
        alpha[still] = alpha_still
    return (previous + alpha * diff).astype(np.float32, copy=False)


def still_picture(gray: np.ndarray, last: np.ndarray) -> np.ndarray | bool | None:
    """Where the mask's change is the model's jitter, from this and the last small gray picture (3x3 means,
    uint8, same crop): True (the whole picture still), a bool plane (still away from the few pixels that
    moved) or None (too much moved: a moving person gets the adaptive EMA).

    Only a picture that is still as a whole counts: a moving edge is seen where it has contrast, and the
    mask follows it further than a few pixels from there.
    """
    moved = cv2.compare(cv2.absdiff(gray, last), STILL_LEVEL, cv2.CMP_GT)
    count = cv2.countNonZero(moved)
    if count == 0:
        return True
    if count <= STILL_FRACTION * moved.size:
        return cv2.dilate(moved, STILL_REACH) == 0
    return None


class MaskSmoother:
    """The low-resolution mask smoothed over time (`adaptive_ema`, damped where the picture is still), the
    last mask carried into a crop that moved."""

    def __init__(self):
        self.mask: np.ndarray | None = None  # the last smoothed low-resolution mask
        self.region: Box | None = None  # where it was (None: the whole frame)
        self.gray: np.ndarray | None = None  # its small picture, gray, 3x3 mean

    def reset(self) -> None:
        """Forget the last mask (a cut, a new frame size)."""
        self.mask = self.region = self.gray = None

    def smooth(self, small: np.ndarray, mask_low: np.ndarray, region: Box | None) -> np.ndarray:
        """This frame's mask (`mask_low`, of the RGB `small` picture of `region`) smoothed with the last."""
        previous = self._previous_in(region, mask_low)
        # where the picture did not move (a 3x3 mean against camera noise), the mask should not either
        gray = cv2.blur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (3, 3))
        still = None
        if previous is not None and region == self.region and \
                self.gray is not None and self.gray.shape == gray.shape:
            still = still_picture(gray, self.gray)
        self.mask = adaptive_ema(previous, mask_low, still=still)
        self.region, self.gray = region, gray
        return self.mask

    def _previous_in(self, region: Box | None, mask_low: np.ndarray) -> np.ndarray | None:
        """The last low-resolution mask on this one's grid: the same crop as it was; a crop that moved (at
        about the same scale) resampled, with this frame's mask where the last crop did not reach; None
        between the whole frame and a crop (their scales differ: a coarse mask would pull a fine one)."""
        previous, old = self.mask, self.region
        if previous is None or (old is None) != (region is None):
            return None
        if old == region or region is None:
            return previous if previous.shape == mask_low.shape else None
        height, width = mask_low.shape
        sy, sx = (region[1] - region[0]) / height, (region[3] - region[2]) / width
        old_sy, old_sx = (old[1] - old[0]) / previous.shape[0], (old[3] - old[2]) / previous.shape[1]
        if not (0.8 < sx / old_sx < 1.25 and 0.8 < sy / old_sy < 1.25):
            return None
        # new grid (u, v) -> frame -> old grid, pixel centres: u_old = (x0 + (u + .5) sx - old_x0) / old_sx - .5
        warp = np.float32([[sx / old_sx, 0, (region[2] - old[2] + 0.5 * sx) / old_sx - 0.5],
                           [0, sy / old_sy, (region[0] - old[0] + 0.5 * sy) / old_sy - 0.5]])
        flags = cv2.WARP_INVERSE_MAP
        carried = cv2.warpAffine(previous, warp, (width, height), flags=flags | cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        known = cv2.warpAffine(np.ones_like(previous), warp, (width, height), flags=flags | cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return np.where(known > 0, carried, mask_low)


class GuideSteadier:
    """The full-resolution guide with the camera's noise averaged out where the picture is still.

    The guided filter's mask is a·gray + b with a steep `a` at the edge, so every level of sensor noise in
    the gray image moves the edge's mask from frame to frame (most of the edge flicker on a still person;
    the low-resolution mask hardly changes). A pixel that changed at most GUIDE_STILL_LEVEL since the last
    frame takes GUIDE_WEIGHT of its new value; one that changed more (motion, a cut) is taken as it is, so
    a moving edge is not held back. Only the last frame's box is kept (no full-frame copy per frame).
    """

    def __init__(self):
        self.last: tuple[Box, np.ndarray] | None = None  # (box in the frame, its steadied uint8 gray): last frame's
        self.current: tuple[Box, np.ndarray] | None = None  # ... and this frame's (its last model run's)

    def reset(self) -> None:
        self.last = self.current = None

    def next_frame(self) -> None:
        """A new frame: this frame's guide becomes the last."""
        self.last, self.current = self.current, None

    def steady(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """`gray` (uint8, `box` of the frame) steadied against the last frame's guide, in place, and kept."""
        if self.last is not None:
            (ly0, ly1, lx0, lx1), last = self.last
            y0, y1 = max(box[0], ly0), min(box[1], ly1)  # where both frames have a guide
            x0, x1 = max(box[2], lx0), min(box[3], lx1)
            if y0 < y1 and x0 < x1:
                now = gray[y0 - box[0]:y1 - box[0], x0 - box[2]:x1 - box[2]]
                before = last[y0 - ly0:y1 - ly0, x0 - lx0:x1 - lx0]
                still = cv2.compare(cv2.absdiff(now, before), GUIDE_STILL_LEVEL, cv2.CMP_LE)
                steady = cv2.addWeighted(now, GUIDE_WEIGHT, before, 1.0 - GUIDE_WEIGHT, 0.0)
                cv2.copyTo(steady, still, now)  # in place: `now` is a view of `gray`
        self.current = (box, gray)
        return gray
