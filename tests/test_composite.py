"""Composite: exact where the mask is certain, within rounding of the float64 formula elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from vcam.composite import composite


def test_composite_matches_the_formula_and_is_exact_at_0_and_1():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (36, 64, 3), dtype=np.uint8)
    mask = rng.random((36, 64)).astype(np.float32)
    mask[:10], mask[10:20] = 0.0, 1.0
    out = composite(image, background, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    expected = image * mask[..., None].astype(np.float64) + background * (1 - mask[..., None].astype(np.float64))
    assert np.abs(out.astype(int) - np.round(expected)).max() <= 1
    assert np.array_equal(out[:10], background[:10]) and np.array_equal(out[10:20], image[10:20])


def test_composite_rejects_bad_inputs():
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        composite(image.astype(np.float32), image, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="expected image"):
        composite(image, np.zeros((4, 5, 3), np.uint8), np.zeros((4, 4), np.float32))
