"""Camera-like frames from photos: what a webcam does to a picture before vcam sees it.

Stock photos are large, clean and well exposed; vcam's input is a webcam frame: small, noisy, compressed,
and with the whole frame's exposure and white balance off the way auto-exposure and auto white balance
get them wrong. `camera_like` turns a photo (and its person mask) into such a frame. It acts on the whole
frame, person and background alike, so the degraded photo is still a picture whose person fits its
background: the ground truth of a composite made from it (trainer.recolor re-colours the person after).
All randomness comes from the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraRecipe:
    """Ranges of the degradations (each drawn uniformly unless said otherwise)."""

    long_side: tuple[int, int] = (240, 640)  # the frame's longer side (never enlarged)
    exposure_stops: tuple[float, float] = (-0.8, 0.5)  # the whole frame's exposure error, in stops
    white_balance: float = 0.12  # std of the log gain of red and of blue against green
    noise: tuple[float, float] = (0.5, 6.0)  # sensor noise std at mid grey (0..255), shot-noise shaped
    jpeg_quality: tuple[int, int] = (35, 92)


DEFAULT_CAMERA = CameraRecipe()


def camera_like(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                recipe: CameraRecipe = DEFAULT_CAMERA) -> tuple[np.ndarray, np.ndarray]:
    """(frame uint8 RGB, mask float32) of a photo as a webcam would give it.

    Args:
        image: uint8 RGB (H, W, 3).
        mask: (H, W) float in [0, 1], the person; resized with the frame.
        rng: the source of every random choice.

    Raises:
        ValueError: an image that is not uint8 (H, W, 3), or a mask of another size.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    h, w = image.shape[:2]
    side = int(rng.integers(recipe.long_side[0], recipe.long_side[1] + 1))
    if max(h, w) > side:
        scale = side / max(h, w)
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    # Exposure and white balance act on light, so in (approximately) linear values: sRGB gamma 2.2.
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    stops = rng.uniform(*recipe.exposure_stops)
    log_wb = rng.normal(0.0, recipe.white_balance, size=2)
    gains = np.float32(2.0 ** stops) * np.exp(np.array([log_wb[0], 0.0, log_wb[1]], np.float32))
    frame = np.clip(linear * gains, 0.0, 1.0) ** (1 / 2.2) * 255.0
    # Shot noise grows with the signal's square root; read noise is the floor. Colour noise per channel.
    sigma = rng.uniform(*recipe.noise)
    frame = frame + rng.normal(0.0, 1.0, frame.shape).astype(np.float32) * sigma * np.sqrt(
        np.maximum(frame, 8.0) / 128.0)
    frame = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    quality = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1))
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        frame = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return frame, np.clip(mask, 0.0, 1.0).astype(np.float32)


def relight(image: np.ndarray, rng: np.random.Generator, stops: tuple[float, float] = (-1.0, 1.0),
            white_balance: float = 0.15) -> np.ndarray:
    """The whole picture under other light: an exposure change (stops drawn from `stops`) and a white
    balance change (log gains of red and blue, std `white_balance`), in linear light; uint8 in and out."""
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    log_wb = rng.normal(0.0, white_balance, size=2)
    gains = np.float32(2.0 ** rng.uniform(*stops)) * np.exp(np.array([log_wb[0], 0.0, log_wb[1]], np.float32))
    return np.clip(np.round(np.clip(linear * gains, 0.0, 1.0) ** (1 / 2.2) * 255.0), 0, 255).astype(np.uint8)


def light_gains(image: np.ndarray, gains) -> np.ndarray:
    """The picture under light whose (r, g, b) gains against the old are `gains`, applied in linear light
    (sRGB gamma 2.2); uint8 in and out."""
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    out = np.clip(linear * np.asarray(gains, np.float32), 0.0, 1.0) ** (1 / 2.2) * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


#: A strong cast on the person: log gain of red against blue (split evenly, opposite signs), of |0.25-0.6|
#: (a camera white-balanced for daylight under a warm lamp, or the other way round, is about 1.0; auto white
#: balance leaves a share of it), green +-0.08 and exposure +-0.7 stops.
CAST_RB = (0.25, 0.6)
CAST_GREEN = 0.08
CAST_STOPS = 0.7


def person_cast(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A composite whose person is under a strong colour cast (CAST_*) and whose background is the photo's
    own: m * cast(photo) + (1 - m) * photo, uint8. The photo is the ground truth: the person filmed under
    one light and pasted into a scene under another, the case the FFHQH recipe (mild hue and saturation
    changes) barely covers."""
    rb = rng.uniform(*CAST_RB) * rng.choice([-1.0, 1.0])
    log_gains = np.array([rb / 2, rng.uniform(-CAST_GREEN, CAST_GREEN), -rb / 2])
    gains = np.exp(log_gains) * 2.0 ** rng.uniform(-CAST_STOPS, CAST_STOPS)
    m = np.clip(mask, 0.0, 1.0)[..., None].astype(np.float32)
    out = m * light_gains(image, gains) + (1.0 - m) * image
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


__all__ = ["CAST_GREEN", "CAST_RB", "CAST_STOPS", "DEFAULT_CAMERA", "CameraRecipe", "camera_like", "light_gains",
           "person_cast", "relight"]
