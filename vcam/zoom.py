"""The crop a small person is segmented in: found, kept, moved with them, grown where it cuts them.

The selfie models see 256 px whatever the frame, so a person far from the camera is segmented in a crop
around them (vcam.segment.Segmenter does the model runs; this module holds the boxes' geometry). Boxes are
(y0, y1, x0, x1) in frame pixels, end-exclusive.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.blend import mask_box

ZOOM_MARGIN = 0.15  # the crop around the person: their tight box grown by this fraction of its size per side
ZOOM_MAX_AREA = 0.6  # zoom only where that crop is at most this fraction of the frame (else: no gain)
ZOOM_GUARD = 0.02  # the person must stay this fraction of the crop's size away from its inner sides
ZOOM_MIN_FILL = 0.35  # ... and fill at least this fraction of it; else a new crop is found
ZOOM_RECHECK_FRAMES = 30  # while zoomed, the whole frame is looked at this often (someone else may come in)
ZOOM_MIN_PART = 0.05  # a part of the mask this small against the largest, not at a side, is a speck
ZOOM_FOLLOW = 0.06  # the person this close (fraction of the crop) to an inner side: the next crop is around them
ZOOM_GROW = 0.25  # a person cut by the crop: that side grown by this fraction of their size, the frame redone
ZOOM_GROW_TRIES = 3  # model runs on one frame to find a crop that does not cut the person, at most
ZOOM_WATCH_LEVEL = 24  # a low-resolution pixel outside the crop that changed this much (of 255) since the last
ZOOM_WATCH_FRACTION = 0.002  # frame, over this fraction of the outside: the whole frame is looked at at once


def person_parts(mask_low: np.ndarray, min_part: float = ZOOM_MIN_PART, near: float = 0.5) -> np.ndarray:
    """uint8 plane: the low-resolution mask's person (values >= 0.5), without the specks that are not
    them: parts smaller than `min_part` of the largest, away from the larger parts' box (by more than
    `near` of its size) and from the sides (a speck of the background the model takes for skin would widen
    the crop to most of the frame; a hand apart from the body is near it, someone coming in at a side)."""
    person = (mask_low >= 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(person, connectivity=8)
    if count <= 2:
        return person
    height, width = person.shape
    areas = stats[1:, cv2.CC_STAT_AREA]
    x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[1:, cv2.CC_STAT_WIDTH], y0 + stats[1:, cv2.CC_STAT_HEIGHT]
    touches = (x0 == 0) | (y0 == 0) | (x1 == width) | (y1 == height)
    large = areas >= min_part * areas.max()
    by0, by1, bx0, bx1 = y0[large].min(), y1[large].max(), x0[large].min(), x1[large].max()
    gy, gx = near * (by1 - by0), near * (bx1 - bx0)
    close = (y1 > by0 - gy) & (y0 < by1 + gy) & (x1 > bx0 - gx) & (x0 < bx1 + gx)
    keep = large | touches | close
    if keep.all():
        return person
    return np.concatenate([[0], keep.astype(np.uint8)])[labels]


def tight_box(mask_low: np.ndarray, size: tuple[int, int], specks: bool = True) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) in `size` (height, width) around the low-resolution mask's person (values >= 0.5;
    without specks, `person_parts`, unless `specks`: a crop's mask, where they are rare and the test costs
    more)."""
    box = mask_box(person_parts(mask_low) if not specks else mask_low >= 0.5)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    sy, sx = size[0] / mask_low.shape[0], size[1] / mask_low.shape[1]
    return int(y0 * sy), int(np.ceil(y1 * sy)), int(x0 * sx), int(np.ceil(x1 * sx))


def zoom_region(tight: tuple[int, int, int, int], size: tuple[int, int],
                margin: float = ZOOM_MARGIN, max_area: float = ZOOM_MAX_AREA) -> tuple[int, int, int, int] | None:
    """The crop to segment a person in: their tight box grown by `margin`, within the frame; None where it
    would cover more than `max_area` of the frame (the model would see the person hardly any larger).

    The selfie models take 256 px whatever the frame; a person far from the camera, or in a portrait
    photo, gets few of them and MediaPipe puts their edge a few pixels off. Segmenting the crop gives the
    model the person at up to the crop's scale: on the 412 photos with published masks, the band error of
    the rim (scripts/rim_eval.py) falls by 6 % more (docs/benchmarks.md).
    """
    height, width = size
    y0, y1, x0, x1 = tight
    dy, dx = int(round(margin * (y1 - y0))), int(round(margin * (x1 - x0)))
    region = max(y0 - dy, 0), min(y1 + dy, height), max(x0 - dx, 0), min(x1 + dx, width)
    if (region[1] - region[0]) * (region[3] - region[2]) > max_area * height * width:
        return None
    return region


def zoom_holds(tight: tuple[int, int, int, int] | None, region: tuple[int, int, int, int],
               size: tuple[int, int], guard: float = ZOOM_GUARD, min_fill: float = ZOOM_MIN_FILL) -> bool:
    """Whether the person segmented in `region` is all inside it: not within `guard` of a side that is not
    the frame's own, and filling at least `min_fill` of it (else they moved away or left: a new crop)."""
    if tight is None:
        return False
    y0, y1, x0, x1 = tight
    ry0, ry1, rx0, rx1 = region
    gy, gx = guard * (ry1 - ry0), guard * (rx1 - rx0)
    if (ry0 > 0 and y0 < ry0 + gy) or (ry1 < size[0] and y1 > ry1 - gy) or \
            (rx0 > 0 and x0 < rx0 + gx) or (rx1 < size[1] and x1 > rx1 - gx):
        return False
    return (y1 - y0) * (x1 - x0) >= min_fill * (ry1 - ry0) * (rx1 - rx0)


def cut_sides(tight: tuple[int, int, int, int], region: tuple[int, int, int, int], size: tuple[int, int],
              guard: float = ZOOM_GUARD) -> tuple[bool, bool, bool, bool]:
    """(top, bottom, left, right): the sides of `region` the person touches (within `guard` of its size)
    where the region is not at the frame's own side: they may go on beyond it."""
    y0, y1, x0, x1 = tight
    ry0, ry1, rx0, rx1 = region
    gy, gx = guard * (ry1 - ry0), guard * (rx1 - rx0)
    return (ry0 > 0 and y0 < ry0 + gy, ry1 < size[0] and y1 > ry1 - gy,
            rx0 > 0 and x0 < rx0 + gx, rx1 < size[1] and x1 > rx1 - gx)


def follow_box(tight: tuple[int, int, int, int], previous: tuple[int, int, int, int] | None,
               cut: tuple[bool, bool, bool, bool] = (False,) * 4,
               grow: float = ZOOM_GROW) -> tuple[int, int, int, int]:
    """The box the next crop must hold: the person's tight box, extended by their motion since `previous`
    (their tight box a frame ago: where they will be next frame) and by `grow` of their size past every
    `cut` side (the part of them the crop did not show)."""
    y0, y1, x0, x1 = tight
    if previous is not None:
        dy = (y0 + y1 - previous[0] - previous[1]) // 2
        dx = (x0 + x1 - previous[2] - previous[3]) // 2
        y0, y1 = min(y0, y0 + dy), max(y1, y1 + dy)
        x0, x1 = min(x0, x0 + dx), max(x1, x1 + dx)
    gy, gx = int(grow * (tight[1] - tight[0])), int(grow * (tight[3] - tight[2]))
    return int(y0 - gy * cut[0]), int(y1 + gy * cut[1]), int(x0 - gx * cut[2]), int(x1 + gx * cut[3])
