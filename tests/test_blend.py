"""engine.blend: the person over a background, blended on the soft edge only, against cv2.blendLinear."""

from __future__ import annotations

import cv2
import numpy as np

from engine.blend import edge_points, person_over


def test_person_over_equals_blend_linear_within_a_level_and_keeps_both_sides_exact():
    rng = np.random.default_rng(5)
    person = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), np.float32)
    mask[10:50, 20:60] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)  # a soft edge all round, exact 0 far outside
    mask[0, 0], mask[0, 1] = 1e-4, 1 - 1e-4  # within half a level of 0 and 1
    out = person_over(person, background, mask)
    reference = cv2.blendLinear(person, background, mask, cv2.subtract(1.0, mask))
    assert out.dtype == np.uint8 and out.shape == person.shape
    assert np.abs(out.astype(int) - reference).max() <= 1
    ys, xs, certain = edge_points(mask)
    assert 0 < ys.size < mask.size // 2  # there is an edge, and it is the minority
    assert np.array_equal(out[mask == 0], background[mask == 0])
    assert np.array_equal(out[certain > 0], person[certain > 0])
    assert tuple(out[0, 0]) == tuple(background[0, 0]) and tuple(out[0, 1]) == tuple(person[0, 1])
