"""The reference region: the part of the background whose light the person is matched to (`--reference`).

One parser, whichever way the value arrives (a flag, the config file, the control page):

    "x,y,w,h"   a rectangle in pixels, or in fractions of the frame when all four are <= 1 and one of them
                is written with a "." ("0.1,0.2,0.3,0.4"); spaces around the numbers are allowed
    a path      a mask image (white = reference), resized to the frame

`check_reference(spec)` is what `vcam.config` runs on every RunConfig: everything that can be judged
without the frame (four finite numbers >= 0, a non-empty rectangle, fractions that stay inside 0..1).
`check_reference(spec, size)` adds what only the frame can tell (a pixel rectangle inside it); the running
pipeline calls it in `request`, so a rectangle the frame cannot hold is refused at the door instead of
aborting a batch of settings between two frames. `reference_mask(spec, size)` is what the harmonize stage
consumes, built from the same parse.
"""

from __future__ import annotations

import math
from pathlib import Path

EPSILON = 1e-9  # "0.7,0,0.3,1" must not fail on 0.7 + 0.3 > 1 in binary floating point


def _rectangle(spec: str) -> tuple[tuple[float, float, float, float], bool] | None:
    """((x, y, w, h), fractions?) of a rectangle spec; None when `spec` names a mask image.

    Raises:
        ValueError: four parts that are not finite numbers >= 0 with a non-empty area, or fractions that
            reach past the frame's edge.
    """
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 4 or Path(spec).exists():
        return None
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--reference must be x,y,w,h (numbers) or a mask image, got {spec!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"--reference x,y,w,h must be finite numbers >= 0, got {spec!r}")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ValueError(f"--reference {spec!r} is an empty rectangle (width and height must be > 0)")
    fractions = all(v <= 1 for v in values) and any("." in p for p in parts)
    if fractions and (x + w > 1 + EPSILON or y + h > 1 + EPSILON):
        raise ValueError(f"--reference {spec!r} reaches past the frame's edge (x + w and y + h must be <= 1)")
    return values, fractions


def _pixels(spec: str, rectangle: tuple[tuple[float, ...], bool], size: tuple[int, int]) -> tuple[int, ...]:
    """(x0, y0, x1, y1) of the rectangle in a `size` = (width, height) frame.

    Raises:
        ValueError: a rectangle that is not inside the frame or covers no whole pixel.
    """
    width, height = size
    (x, y, w, h), fractions = rectangle
    if fractions:  # edges, not widths, are rounded: 0.3 + 0.7 of 5 pixels stays 5
        x0, y0, x1, y1 = round(x * width), round(y * height), round((x + w) * width), round((y + h) * height)
    else:
        x0, y0 = round(x), round(y)
        x1, y1 = x0 + round(w), y0 + round(h)
    if x1 <= x0 or y1 <= y0 or x1 > width or y1 > height:
        raise ValueError(f"--reference {spec!r} is not a rectangle inside the {width}x{height} frame")
    return x0, y0, x1, y1


def check_reference(spec: str, size: tuple[int, int] | None = None) -> str:
    """Check a --reference value; returns it stripped.

    Args:
        spec: "x,y,w,h" or a mask image's path.
        size: the frame's (width, height) when it is known: then a rectangle must lie inside it, and a
            mask image must exist.

    Raises:
        ValueError: a malformed rectangle, one past the frame's edge, or (with `size`) outside the frame.
        FileNotFoundError: (with `size`) a mask image that does not exist.
    """
    spec = spec.strip()
    rectangle = _rectangle(spec)
    if size is not None and rectangle is not None:
        _pixels(spec, rectangle, size)
    elif size is not None and not Path(spec).is_file():
        raise FileNotFoundError(f"--reference mask image not found: {spec}")
    return spec


def reference_mask(spec: str | None, size: tuple[int, int]):
    """The reference region as a float32 H×W mask in [0, 1] for a `size` = (width, height) frame, or None.

    Raises:
        ValueError: as `check_reference(spec, size)`.
        FileNotFoundError / VcamError: a mask image that is missing or unreadable.
    """
    if spec is None:
        return None
    import cv2  # the frame's libraries, only where a mask is built (vcam.config imports this module)
    import numpy as np

    from vcam.errors import VcamError

    spec = check_reference(spec, size)
    width, height = size
    rectangle = _rectangle(spec)
    if rectangle is not None:
        x0, y0, x1, y1 = _pixels(spec, rectangle, size)
        mask = np.zeros((height, width), np.float32)
        mask[y0:y1, x0:x1] = 1.0
        return mask
    image = cv2.imread(spec, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise VcamError(f"cannot read --reference mask image {spec!r}")
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
