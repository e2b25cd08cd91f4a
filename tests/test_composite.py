"""Composite: exact where the mask is certain, within rounding of the float64 formula elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from engine.blend import edge_points
from vcam.composite import (
    ALPHA_MAX_RESIDUAL,
    ALPHA_MIN_CONTRAST,
    Compositor,
    colour_alpha,
    composite,
    composite_person,
    estimate_foreground,
    mask_box,
)
from vcam.frame import Frame


def _scene(seed: int, height: int, width: int, band: int):
    """Random image, background and soft mask; the mask's first `band` rows 0, the next `band` rows 1."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.random((height, width)).astype(np.float32)
    mask[:band], mask[band:2 * band] = 0.0, 1.0
    return image, background, mask


def test_composite_matches_the_formula_and_is_exact_at_0_and_1():
    image, background, mask = _scene(0, 36, 64, 10)
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


def _edge_scene(h=60, w=80, person=(200, 150, 120), room=(40, 200, 60)):
    """A person colour left of a soft vertical edge, the room's colour right of it, the camera picture a
    true mix of the two by the mask (as a camera sees hair or a blurred outline)."""
    mask = np.clip((w / 2 + 4 - np.arange(w, dtype=np.float32)) / 8 + 0.5, 0, 1)[None].repeat(h, 0)
    image = mask[..., None] * np.float32(person) + (1 - mask[..., None]) * np.float32(room)
    return np.round(image).astype(np.uint8), np.ascontiguousarray(mask)


def test_estimate_foreground_takes_the_room_out_of_the_edge():
    image, mask = _edge_scene()
    foreground = estimate_foreground(image, mask)
    edge = (mask > 0.05) & (mask < 0.95)
    person = np.float32((200, 150, 120))
    before = np.abs(image[edge].astype(np.float32) - person).mean()
    after = np.abs(foreground[edge].astype(np.float32) - person).mean()
    assert after < 0.6 * before, (before, after)  # one level of the estimate: about half the error left
    certain = (mask == 0) | (mask == 1)
    assert np.array_equal(foreground[certain], image[certain])  # only the soft edge is estimated


def test_composite_person_is_exact_where_certain_and_cleaner_at_the_edge():
    image, mask = _edge_scene()
    background = np.full_like(image, (10, 10, 240))
    out = composite_person(image, background, mask)
    assert np.array_equal(out[mask == 0], background[mask == 0])
    assert np.array_equal(out[mask == 1], image[mask == 1])
    truth = mask[..., None] * np.float32((200, 150, 120)) + (1 - mask[..., None]) * np.float32((10, 10, 240))
    plain = composite(image, background, mask)
    edge = (mask > 0.05) & (mask < 0.95)
    assert np.abs(out[edge] - truth[edge]).mean() < 0.6 * np.abs(plain[edge] - truth[edge]).mean()
    # The box: the same result computed in the person's box only; nobody: the background.
    assert mask_box(mask) == (0, 60, 0, mask_box(mask)[3])
    np.testing.assert_array_equal(composite_person(image, background, mask, mask_box(mask)), out)
    assert np.array_equal(composite_person(image, background, np.zeros_like(mask)), background)
    with pytest.raises(ValueError, match="expected image"):
        composite_person(image, background[:, :10], mask)


def test_the_stage_fills_composite_foreground_and_box():
    image, mask = _edge_scene()
    background = np.full_like(image, 30)
    frame = Compositor()(Frame(index=0, captured_at=0.0, image=image, mask=mask.copy(), background=background))
    assert frame.box == mask_box(mask)
    np.testing.assert_array_equal(frame.composite, composite_person(image, background, mask))
    expected, alpha = image.copy(), mask.copy()
    composite_person(image, background, mask, frame.box, expected, alpha=alpha)
    y0, y1, x0, x1 = frame.box
    np.testing.assert_array_equal(frame.foreground[y0:y1, x0:x1], expected[y0:y1, x0:x1])
    # The frame's mask is the composite's alpha (the harmonizer recomposes m·foreground + (1-m)·background).
    np.testing.assert_array_equal(frame.mask, alpha)
    assert np.abs(frame.composite.astype(int) - composite(frame.foreground, background, frame.mask)).max() <= 1
    assert frame.foreground is not image and np.array_equal(image, _edge_scene()[0])  # the camera picture kept
    # Harmonization off: the same composite, and no copy of the person's colours that nobody reads.
    stage = Compositor()
    stage.keep_foreground = False
    plain = stage(Frame(index=0, captured_at=0.0, image=image, mask=mask, background=background))
    assert plain.foreground is None
    np.testing.assert_array_equal(plain.composite, frame.composite)


def test_edge_points_sort_the_mask_by_its_uint8_level():
    mask = np.array([[0.0, 0.0009, 0.002, 0.5], [0.997, 0.9991, 1.0, 0.3]], np.float32)
    ys, xs, person = edge_points(mask)
    # Within 1/510 of 0 or 1 a uint8 blend cannot move by half a level: background or person for certain.
    assert sorted(zip(ys.tolist(), xs.tolist(), strict=True)) == [(0, 2), (0, 3), (1, 0), (1, 3)]
    assert person.tolist() == [[0, 0, 0, 0], [0, 255, 255, 0]]
    assert edge_points(np.zeros((3, 3), np.float32))[0].size == 0


def test_composite_person_blends_the_edge_as_blend_linear_rounds():
    image, background, mask = _scene(1, 40, 50, 8)
    foreground, alpha = image.copy(), mask.copy()
    out = composite_person(image, background, mask, foreground=foreground, alpha=alpha)
    # The edge is the estimated foreground over the background by the edge's alpha, within rounding of
    # composite()'s blend; the alpha is the mask or lower, and the mask where it is 0 or 1.
    assert np.abs(out.astype(int) - composite(foreground, background, alpha)).max() <= 1
    assert (alpha <= mask).all() and np.array_equal(alpha[:16], mask[:16])
    assert np.array_equal(out[:8], background[:8]) and np.array_equal(out[8:16], image[8:16])


def _colour_alpha_reference(pixels, f_hat, b_hat, mask, weight, weight2):
    """colour_alpha pixel by pixel in float64, written out from its docstring."""
    out = mask.astype(np.float64).copy()
    for i in range(len(mask)):
        d = f_hat[i].astype(np.float64) - b_hat[i]
        s = float(np.dot(pixels[i] - b_hat[i], d) / max(np.dot(d, d), 1e-3))
        residual = np.linalg.norm(pixels[i] - b_hat[i] - s * d)
        p = weight2[i] / max(weight[i], 1e-3)
        q = (weight[i] - weight2[i]) / max(1 - weight[i], 1e-3)
        if (np.linalg.norm(d) >= ALPHA_MIN_CONTRAST and residual <= ALPHA_MAX_RESIDUAL * np.linalg.norm(d)
                and 0.02 < weight[i] < 0.98):
            out[i] = min(mask[i], min(max(q + s * (p - q), 0.0), 1.0))
    return out


def test_colour_alpha_matches_its_formula():
    rng = np.random.default_rng(3)
    n = 400
    pixels, f_hat, b_hat = (rng.uniform(0, 255, (n, 3)).astype(np.float32) for _ in range(3))
    mask = rng.uniform(0, 1, n).astype(np.float32)
    weight = rng.uniform(0, 1, n).astype(np.float32)
    weight2 = (weight * rng.uniform(weight, 1)).astype(np.float32)  # a window's m̄² lies in [m̄·m̄, m̄]
    got = colour_alpha(pixels, f_hat, b_hat, mask, weight, weight2)
    np.testing.assert_allclose(got, _colour_alpha_reference(pixels, f_hat, b_hat, mask, weight, weight2),
                               atol=1e-4)
    assert (got < mask - 1e-3).any() and (got == mask).any()  # both branches taken


def test_colour_alpha_lowers_a_room_pixel_and_never_raises():
    person, room = np.float32([200, 150, 120]), np.float32([40, 200, 60])
    pure = np.float32([1.0])
    f_hat, b_hat = person[None], room[None]
    window = (pure * 0.5, pure * 0.5)  # half person, of 0s and 1s only (m̄² = m̄): both means pure
    # a pixel all room the mask calls 0.6: lowered to 0; one all person the mask calls 0.4: left at 0.4
    assert colour_alpha(room[None], f_hat, b_hat, pure * 0.6, *window)[0] == 0.0
    assert colour_alpha(person[None], f_hat, b_hat, pure * 0.4, *window)[0] == np.float32(0.4)
    # colour cannot tell: means 20 levels apart, or a pixel far off the line between them
    near = room + np.float32([10, -10, 10])
    assert colour_alpha(room[None], near[None], b_hat, pure * 0.6, *window)[0] == np.float32(0.6)
    off = np.float32([120, 175, 255])
    assert colour_alpha(off[None], f_hat, b_hat, pure * 0.6, *window)[0] == np.float32(0.6)


def test_colour_alpha_keeps_a_true_linear_mix():
    """Where the camera pixel is a true mix of person and room by the mask (a blurred outline), the colour
    says what the mask says: the window's means are mixed too, and the correction for it (p, q) makes that
    exact, so such an edge is not lowered (no bite)."""
    image, mask = _edge_scene()
    alpha = mask.copy()
    composite_person(image, np.zeros_like(image), mask, alpha=alpha)
    edge = (mask > 0) & (mask < 1)
    assert np.abs(alpha[edge] - mask[edge]).max() < 0.01, np.abs(alpha[edge] - mask[edge]).max()
