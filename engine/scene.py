"""The scene-change test: has the background behind the person changed (a new virtual background, a cut)?

The temporal smoothing averages the statistics and the correction over time; a new scene must start
afresh, a person moving must not. So the test compares only the pixels that are surely background in both
frames (reference > 0.9 in each): a person moving uncovers and covers background, which changes nothing on
a still background, while a new background or a cut changes the same pixels. Per 2x2 quadrant of the
network-size picture, the mean colour of those shared pixels; a quadrant where they cover 5 % or less is
not judged; a change above `threshold` (0..1, the largest over channels and quadrants) is a new scene.

`scene_changed` (NumPy, engine.Harmonizer's test) and `scene_changed_torch` (the GPU frame path's: static
shapes, no branch on a tensor's value, CUDA-graph safe) are the same test; tests/test_resampling.py holds
them together on the CPU.
"""

from __future__ import annotations

import numpy as np

#: Where the reference region is above this, a pixel is surely background.
SURELY_BACKGROUND = 0.9
#: A quadrant whose shared background is this share of it or less is not judged.
MIN_SHARED = 0.05


def quadrants(h: int, w: int) -> tuple[tuple[slice, slice], ...]:
    """The 2x2 quadrants of an (h, w) picture (a 1-pixel side is not split into an empty half)."""
    top, left = slice(0, h // 2 or 1), slice(0, w // 2 or 1)
    bottom, right = slice(h // 2, h), slice(w // 2, w)
    return ((top, left), (top, right), (bottom, left), (bottom, right))


def scene_changed(last: tuple[np.ndarray, np.ndarray], picture: np.ndarray, reference: np.ndarray,
                  threshold: float) -> bool:
    """Whether the shared background moved by more than `threshold` since `last`.

    Args:
        last: (picture, surely background) of the last frame, as `signature` returned them.
        picture: (h, w, 3) float in [0, 1] at the network's size; reference: (h, w) in [0, 1].
    """
    last_picture, last_background = last
    if last_picture.shape != picture.shape:
        return True
    shared = (reference > SURELY_BACKGROUND) & last_background
    for ys, xs in quadrants(*shared.shape):
        where = shared[ys, xs]
        if where.sum() <= MIN_SHARED * where.size:  # too little shared background there to judge
            continue
        change = np.abs(picture[ys, xs][where].mean(0) - last_picture[ys, xs][where].mean(0)).max()
        if float(change) > threshold:
            return True
    return False


def signature(picture: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the next frame is compared with: the picture and where it is surely background."""
    return picture, reference > SURELY_BACKGROUND


def scene_changed_torch(last_picture, last_background, picture, reference, threshold: float):
    """`scene_changed` on a device: last_picture and picture (1, 3, h, w), last_background bool (h, w),
    reference (1, 1, h, w). Returns (changed, this frame's surely-background (h, w)) as tensors; the caller
    says whether there was a last frame at all."""
    import torch

    background = reference[0, 0] > SURELY_BACKGROUND
    shared = (background & last_background).to(picture.dtype)
    changed = torch.zeros((), dtype=torch.bool, device=picture.device)
    for ys, xs in quadrants(*shared.shape):
        where = shared[ys, xs]
        count = where.sum()
        judged = count > MIN_SHARED * where.numel()
        now = (picture[0, :, ys, xs] * where).sum(dim=(1, 2))
        before = (last_picture[0, :, ys, xs] * where).sum(dim=(1, 2))
        change = ((now - before) / count.clamp_min(1)).abs().amax()
        changed = changed | (judged & (change > threshold))
    return changed, background


__all__ = ["MIN_SHARED", "SURELY_BACKGROUND", "quadrants", "scene_changed", "scene_changed_torch", "signature"]
