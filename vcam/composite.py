"""Composite: the person over the virtual background, composite = foreground·m + background·(1-m).

At the soft edge (0 < m < 1) a camera pixel is a mix of the person and the room behind them; blending the
camera picture itself would carry the room's colour into the new composite as a light or dark rim around
hair and shoulders. So the person's own colour is estimated there first (`estimate_foreground`: one level
of the approximate fast foreground colour estimation by blurs, Forte & Pitié 2021 / Germer et al.,
computed at a quarter of the box's resolution and evaluated only on the edge pixels), and the foreground
is blended instead of the camera picture. Where m is 1 the foreground is the camera picture bit for bit.
The blend's weight at the edge is the mask lowered where the pixel's colour says it holds more of the room
than the mask does (`colour_alpha`: a hair strand the segmenter spread over the room); the frame's mask is
updated to it, so a later stage that recomposes m·foreground + (1-m)·background gets the same composite.

Work is limited to the person's box (the segmenter's `box`): outside it the composite is the background.
Inside it, one uint8 copy of the mask sorts the pixels: the camera picture is copied where the person is
certain (one masked copy), and only the soft edge's pixels (about 1 % of a 720p frame) are blended, in
float32 with `cv2.blendLinear`'s rounding; a float32 blend of the whole box cost 4x more CPU. Where m is
exactly 0 the result is exactly the background, where m is exactly 1 exactly the camera picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.blend import blend_edge, edge_points, flat_index, mask_box, put_pixels, round_u8, take_pixels
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


FOREGROUND_SCALE = 4  # the blurs of the foreground estimate run at 1/4 of the box's resolution
FOREGROUND_RADIUS = 1  # their box radius there (3x3: the nearest 12 px; wider radii measured worse)


ALPHA_MIN_CONTRAST = 30.0  # levels: nearer local person and room means, colour cannot tell them apart
ALPHA_MAX_RESIDUAL = 0.5  # a pixel farther than this (x their distance) from the line between them is neither


def colour_alpha(pixels: np.ndarray, f_hat: np.ndarray, b_hat: np.ndarray, mask: np.ndarray,
                 weight: np.ndarray, weight2: np.ndarray) -> np.ndarray:
    """The soft edge's alpha: the mask, lowered where the pixel's colour says it holds more of the room.

    Seen as a mix of the local person and room means, a pixel is I = s·F̂ + (1-s)·B̂, s = <I - B̂, F̂ - B̂> /
    |F̂ - B̂|². The means are themselves mixed where the window holds soft pixels: with m̄ and m̄² the
    window's means of m and m², F̂ holds p = m̄²/m̄ of the person and B̂ holds q = (m̄ - m̄²)/(1 - m̄), so the
    pixel's share of person is a = q + s·(p - q) (exact for pixels that are linear mixes by m). Where
    colour can tell (F̂ and B̂ at least ALPHA_MIN_CONTRAST levels apart, the pixel within ALPHA_MAX_RESIDUAL
    of their distance from the line between them, the window holding some of both) the mask is lowered to
    a, never raised: a hair strand the segmenter spread over the room lets the room through, and a pixel
    already soft is not made more person. scripts/edge_colour.py measures it (docs/benchmarks.md).

    Args:
        pixels, f_hat, b_hat: float32 n×3, the pixels and their local person and room means.
        mask, weight, weight2: float32 n, the mask at the pixels and the window's means of m and m².

    Returns:
        float32 n: the alpha, at most `mask`.
    """
    direction = f_hat - b_hat
    distance2 = np.einsum("ij,ij->i", direction, direction)
    offset = pixels - b_hat
    share = np.einsum("ij,ij->i", offset, direction) / np.maximum(distance2, 1e-3)
    # |I - B̂ - s·(F̂ - B̂)|² = |I - B̂|² - s²·|F̂ - B̂|² (s is the projection's coefficient)
    residual2 = np.einsum("ij,ij->i", offset, offset) - share * share * distance2
    person_in_f = weight2 / np.maximum(weight, 1e-3)
    person_in_b = (weight - weight2) / np.maximum(1 - weight, 1e-3)
    share = person_in_b + share * (person_in_f - person_in_b)
    told = ((distance2 >= ALPHA_MIN_CONTRAST ** 2) & (residual2 <= ALPHA_MAX_RESIDUAL ** 2 * distance2)
            & (weight > 0.02) & (weight < 0.98))
    return np.where(told, np.minimum(mask, np.clip(share, 0.0, 1.0)), mask).astype(np.float32)


def _edge_foreground(image: np.ndarray, mask: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                     at_points: tuple[np.ndarray, np.ndarray], scale: int = FOREGROUND_SCALE,
                     radius: int = FOREGROUND_RADIUS, alpha: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(foreground estimate float32 n×3, alpha float32 n) at the points (ys, xs) (see `estimate_foreground`).

    `at_points` is (the mask's values, the image's pixels) at those points, gathered once by the caller;
    `scale` and `radius` as FOREGROUND_SCALE and FOREGROUND_RADIUS (scripts/edge_colour.py compares others);
    `alpha`: the mask lowered by `colour_alpha` (else the mask as it is)."""
    height, width = mask.shape
    low_w, low_h = max(width // scale, 1), max(height // scale, 1)
    # Bilinear, not area: 20x cheaper, and the box blurs that follow do the averaging.
    image_low = cv2.resize(image, (low_w, low_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    mask_low = cv2.resize(mask, (low_w, low_h), interpolation=cv2.INTER_LINEAR)
    kernel = (2 * radius + 1,) * 2
    # Window sums of m, m·I and I; the room's are the rest (I·(1-m) = I - I·m), and the means are taken
    # only at the edge pixels, with the nearest low-resolution window (a few percent of the box).
    weight = cv2.blur(mask_low, kernel)
    weight2 = cv2.blur(mask_low * mask_low, kernel) if alpha else None  # how mixed the window's means are
    person_sum = cv2.blur(image_low * mask_low[..., None], kernel)
    image_sum = cv2.blur(image_low, kernel)
    low = flat_index(ys * low_h // height, xs * low_w // width, low_w)
    w = take_pixels(weight, low)
    p_sum = take_pixels(person_sum, low)
    f_hat = p_sum / np.maximum(w, 1e-3)[:, None]
    b_hat = (take_pixels(image_sum, low) - p_sum) / np.maximum(1 - w, 1e-3)[:, None]
    pixels = at_points[1].astype(np.float32)
    m = at_points[0]
    if alpha:
        m = colour_alpha(pixels, f_hat, b_hat, m, w, take_pixels(weight2, low))
    m2 = m[:, None]
    # F = F̂ + m·(I - m·F̂ - (1-m)·B̂)
    return f_hat + m2 * (pixels - m2 * f_hat - (1 - m2) * b_hat), m


def estimate_foreground(image: np.ndarray, mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The person's own colours: `image` where the mask is 0 or 1, un-mixed from the backdrop between.

    F = F̂ + m·(I - m·F̂ - (1-m)·B̂), with F̂ and B̂ the mask-weighted and (1-mask)-weighted local means of
    the image (box blurs at 1/FOREGROUND_SCALE resolution): the pixel's colour minus what the local
    backdrop contributes to it, so the room's colour does not come along into the new composite.

    Args:
        image: RGB uint8 h×w×3 (a box of the camera picture).
        mask: float32 h×w in [0, 1], the same box of the mask.
        out: h×w×3 uint8 holding `image`'s pixels, to write the edge's estimates into (default: a copy).

    Returns:
        `out`: RGB uint8 h×w×3.
    """
    out = image.copy() if out is None else out
    ys, xs, _ = edge_points(mask)
    if ys.size:
        # for this mask as it is (the caller blends with it): no lowered alpha
        at_points = (mask[ys, xs], image[ys, xs])
        out[ys, xs] = round_u8(_edge_foreground(image, mask, ys, xs, at_points, alpha=False)[0])
    return out


def composite_person(image: np.ndarray, background: np.ndarray, mask: np.ndarray,
                     box: tuple[int, int, int, int] | None = None,
                     foreground: np.ndarray | None = None, alpha: np.ndarray | None = None,
                     scale: int = FOREGROUND_SCALE, radius: int = FOREGROUND_RADIUS,
                     lower_alpha: bool = True) -> np.ndarray:
    """The person's estimated own colours over the background, computed in the person's box only.

    Inside the box, three kinds of pixel: the background's where the mask is 0, the camera picture's where
    it is 1 (one masked copy), and the blend of the foreground estimate and the background at the soft
    edge (a few percent of the box), rounded as `cv2.blendLinear` rounds. At the edge the blend's weight is
    the mask lowered where the pixel's colour says it holds more of the room (`colour_alpha`).

    Args:
        image, background: RGB uint8 H×W×3.
        mask: float32 H×W in [0, 1], 0 outside `box`.
        box: (y0, y1, x0, x1) around the person (default: found from the mask); None-like with no person.
        foreground: an H×W×3 uint8 copy of `image`; the estimated foreground is written into its box.
        alpha: an H×W float32 C-contiguous array (the frame's mask itself) to write the edge's blend weights
            into, so that composite = alpha·foreground + (1-alpha)·background holds for a later stage.
        scale, radius: the estimate's resolution divisor and box-blur radius (FOREGROUND_SCALE, _RADIUS).
        lower_alpha: lower the edge's weight by colour (`colour_alpha`); off: the mask as it is.

    Returns:
        RGB uint8 H×W×3: the background where the mask is 0, the camera picture where it is 1.

    Raises:
        TypeError, ValueError: as `composite`.
    """
    composite(image[:1, :1], background[:1, :1], mask[:1, :1])  # the checks, on one pixel
    if image.shape != background.shape or mask.shape != image.shape[:2]:
        raise ValueError(f"expected image H×W×3, background of the same shape and mask H×W; got "
                         f"{image.shape}, {background.shape}, {mask.shape}")
    # Whole C-contiguous arrays (no-ops for the pipeline's frames): the edge is read through flat indices.
    mask = np.ascontiguousarray(mask, dtype=np.float32)
    image = np.ascontiguousarray(image)
    box = mask_box(mask) if box is None else box
    out = np.array(background, order="C")  # a copy
    if box is None:
        return out
    y0, y1, x0, x1 = box
    m, person = mask[y0:y1, x0:x1], image[y0:y1, x0:x1]
    region = out[y0:y1, x0:x1]
    ys, xs, certain = edge_points(m)
    cv2.copyTo(person, certain, region)  # in place: region is a view of out with the right size and type
    if ys.size:
        # One flat index into the whole frame for every gather and scatter (image, mask, out and foreground
        # are whole, C-contiguous H×W arrays; `flat_index`).
        index = flat_index(ys, xs, image.shape[1], y0, x0)
        values, weight = _edge_foreground(person, m, ys, xs, (take_pixels(mask, index), take_pixels(image, index)),
                                          scale, radius, lower_alpha)
        estimate = round_u8(values)
        if foreground is not None:  # it holds the camera picture: the edge's estimates are written into it
            put_pixels(foreground, index, estimate)
        if alpha is not None:
            put_pixels(alpha, index, weight)
        blend_edge(out, index, estimate.astype(np.float32), weight)
    return out


class Compositor:
    """The composite stage: `frame.composite` (and `frame.foreground`, valid inside `frame.box`) from image,
    background and mask.

    The composite and the foreground are new arrays each frame, since the harmonizer's worker may still
    hold the last ones. `keep_foreground` (set by the pipeline: only harmonization reads it) skips the
    foreground's copy when nothing will read it.
    """

    def __init__(self) -> None:
        self.keep_foreground = True

    def __call__(self, frame: Frame) -> Frame:
        image, background, mask = frame.image, frame.background, frame.mask
        box = frame.box if frame.box is not None else mask_box(mask)
        frame.foreground = None
        if self.keep_foreground:
            # The foreground is only ever read inside the box: only the box is copied (it is edited there).
            frame.foreground = np.empty_like(image)
            if box is not None:
                y0, y1, x0, x1 = box
                frame.foreground[y0:y1, x0:x1] = image[y0:y1, x0:x1]
        # The frame's mask becomes the composite's alpha (lowered at the edge where the colour says room), so
        # that the harmonizer's m·T(foreground) + (1-m)·background recomposes this composite.
        if mask.dtype != np.float32 or not mask.flags.c_contiguous or not mask.flags.writeable:
            mask = frame.mask = np.array(mask, dtype=np.float32, order="C")
        frame.composite = composite_person(image, background, mask, box, frame.foreground, alpha=mask)
        frame.box = box
        return frame

    def close(self) -> None:
        pass
