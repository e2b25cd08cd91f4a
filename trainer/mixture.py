"""The training mixture of composites: every strength of mismatch, pictures already right, camera frames.

The FFHQH recipe (trainer.recolor) re-colours every person by a random but always noticeable amount, so
a model trained on it alone learns that something must always change: it shifts the colours of a person
who already fits the scene, and over-corrects one who nearly does. `draw_composite` draws from a mixture
instead (docs/model_card.md, "Do no harm"):

- t = 0 for EASY_SHARE of the draws: the photo itself, where the right answer is to change nothing;
- t uniform in (0, 1) for PARTIAL_SHARE: part of the way, composite = photo + t * (re-coloured - photo);
- the full re-colouring otherwise;
- for RELIT_SHARE of the draws that need something, the other way round: the person keeps their own
  natural colours and the BACKGROUND is under other light (trainer.camera.relight: exposure and white
  balance), and the truth is the whole photo under that light. This is vcam's own case, a real person
  on a scene lit differently (a virtual background, a lamp switched on), where the person looks natural
  and still does not fit: without it a model learns to spot unnatural colours, not a mismatch;
- a random crop half the time (other proportions of person and background), and for CAMERA_SHARE of
  the draws a camera-like frame first (trainer.camera: small, noisy, compressed, the whole frame's
  exposure and white balance off), which is then the ground truth.

The harmony gate (trainer.gate) draws from it; so can the colour prior (`trainer.prior --mixture`, tried
and not kept: docs/model_card.md).
"""

from __future__ import annotations

import numpy as np

EASY_SHARE = 0.15  # composites that need nothing (the photo itself)
PARTIAL_SHARE = 0.25  # composites re-coloured part of the way
CAMERA_SHARE = 1 / 3  # camera-like frames
CROP_SHARE = 0.5
RELIT_SHARE = 0.3  # of the draws that need something: the background relit instead of the person re-coloured


def draw_strength(rng: np.random.Generator) -> float:
    """t: 0 (EASY_SHARE), uniform in (0, 1) (PARTIAL_SHARE) or 1."""
    u = rng.random()
    if u < EASY_SHARE:
        return 0.0
    return float(rng.uniform(0.0, 1.0)) if u < EASY_SHARE + PARTIAL_SHARE else 1.0


def draw_composite(real: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(composite uint8, truth uint8, mask float32, strength t) of one draw from the mixture.

    Args:
        real: uint8 RGB (H, W, 3), a photo of a person.
        mask: (H, W) float in [0, 1], the person.
        rng: the source of every random choice.
    """
    from trainer.camera import camera_like, relight
    from trainer.prior import crop
    from trainer.recolor import composite as make_composite

    if rng.random() < CROP_SHARE:
        real, mask = crop(real, mask, rng)
    real, mask = np.ascontiguousarray(real), np.ascontiguousarray(mask, dtype=np.float32)
    if rng.random() < CAMERA_SHARE:
        real, mask = camera_like(real, mask, rng)
    t = draw_strength(rng)
    if t > 0 and rng.random() < RELIT_SHARE:  # the scene's light changed, the person's did not
        relit = relight(real, rng)
        alpha = np.clip(mask, 0.0, 1.0)[..., None]
        full = np.clip(np.round(real * alpha + relit * (1.0 - alpha)), 0, 255).astype(np.uint8)
        real = relit  # the truth: the person under the scene's light too
    else:
        full = make_composite(real, mask, rng)
    comp = np.clip(np.round(real + t * (full.astype(np.float32) - real)), 0, 255).astype(np.uint8)
    return comp, real, mask, t


__all__ = ["CAMERA_SHARE", "CROP_SHARE", "EASY_SHARE", "PARTIAL_SHARE", "RELIT_SHARE", "draw_composite",
           "draw_strength"]
