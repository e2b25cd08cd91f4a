"""trainer.distribution (the gain's distribution), trainer.camera (camera-like frames) and the Harmonizer's
smoothing as a time constant: the same response after the same time, whatever the estimate rate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.harmonizer import MAX_SMOOTHING, Harmonizer
from trainer.camera import CAST_RB, CameraRecipe, camera_like, light_gains, person_cast
from trainer.distribution import format_distribution, gain_distribution, gain_row, group_of, summarize_gains


def test_gain_distribution_by_hand():
    rows = [gain_row("pixabay_1_1_1", 30.0, 18.0), gain_row("pixabay_2_1_1", 27.0, 26.0),
            gain_row("webcam_d6_f0_1_1", 29.0, 31.0), gain_row("hagrid_x_1_1", 32.5, 33.0)]
    assert [r["group"] for r in rows] == ["pixabay", "pixabay", "webcam", "hagrid"]
    assert group_of("ccp_0001_1_2") == "ccp"
    dist = gain_distribution(rows)
    everything = dist["all"]
    assert everything["count"] == 4
    assert everything["mean_gain"] == pytest.approx((12 + 1 - 2 - 0.5) / 4)
    assert everything["share_worse"] == 0.5 and everything["share_worse_1db"] == 0.25
    assert everything["worst_gain"] == -2.0
    assert dist["buckets"]["< 20 dB"]["count"] == 1 and dist["buckets"]["20-25 dB"]["count"] == 0
    assert dist["buckets"][">= 30 dB"]["mean_gain"] == pytest.approx(-1.25)
    assert dist["groups"]["pixabay"]["share_worse"] == 0.0
    table = format_distribution(dist, "t")
    assert "| >= 30 dB | 2 | -1.25 dB | 100.0 % | 50.0 % | -2.00 dB |" in table
    assert "| 20-25 dB | 0 |" in table
    assert summarize_gains([]) == {"count": 0}


def _photo(rng, h=600, w=800):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.clip(100 + 80 * xx[..., None] + 40 * yy[..., None] * np.array([1, 0.5, -0.5]), 0, 255)
    mask = np.zeros((h, w), np.float32)
    mask[h // 6:5 * h // 6, 5 * w // 16:11 * w // 16] = 1
    return image.astype(np.uint8), mask


def test_camera_like_frames_are_small_noisy_and_off_in_exposure_and_reproducible():
    image, mask = _photo(np.random.default_rng(0))
    frame, m = camera_like(image, mask, np.random.default_rng(1))
    again, _ = camera_like(image, mask, np.random.default_rng(1))
    np.testing.assert_array_equal(frame, again)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and 240 <= max(frame.shape[:2]) <= 640
    assert m.shape == frame.shape[:2] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    # no resize, no noise, no JPEG loss worth the name, one stop under: the frame is darker everywhere
    dark = CameraRecipe(long_side=(800, 800), exposure_stops=(-1, -1), white_balance=0.0, noise=(0, 0),
                        jpeg_quality=(100, 100))
    frame, _ = camera_like(image, mask, np.random.default_rng(2), dark)
    assert frame.shape == image.shape
    expected = ((image / 255.0) ** 2.2 * 0.5) ** (1 / 2.2) * 255
    assert np.abs(frame - expected).mean() < 1.5
    with pytest.raises(ValueError, match="uint8 RGB"):
        camera_like(image.astype(np.float32), mask, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mask shape"):
        camera_like(image, mask[:10], np.random.default_rng(0))


def test_a_person_cast_leaves_the_background_and_moves_red_against_blue():
    image, mask = _photo(np.random.default_rng(0))
    comp = person_cast(image, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(comp, person_cast(image, mask, np.random.default_rng(5)))
    np.testing.assert_array_equal(comp[mask == 0], image[mask == 0])  # the scene keeps its own light
    person = mask == 1
    log_ratio = np.log(comp[person].astype(np.float64) + 1) - np.log(image[person].astype(np.float64) + 1)
    # in linear light the red-blue log gain is at least CAST_RB[0]; through gamma 2.2 about 1/2.2 of it
    assert abs(np.median(log_ratio[:, 0] - log_ratio[:, 2])) > CAST_RB[0] / 2.2 * 0.8
    expected = ((image / 255.0) ** 2.2 * np.array([2.0, 1.0, 0.5])).clip(0, 1) ** (1 / 2.2) * 255
    np.testing.assert_allclose(light_gains(image, [2.0, 1.0, 0.5]), expected, atol=0.51)


def test_the_casts_slice_is_written_in_the_iharmony_layout(tmp_path):
    import importlib.util

    import cv2

    spec = importlib.util.spec_from_file_location(
        "make_cast_slice", Path(__file__).resolve().parents[1] / "scripts" / "make_cast_slice.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    make_slice = script.make_slice

    heldout = tmp_path / "heldout"
    for sub in ("masks", "real_images"):
        (heldout / sub).mkdir(parents=True)
    image, mask = _photo(np.random.default_rng(0), 120, 160)
    cv2.imwrite(str(heldout / "real_images" / "p_a.jpg"), image[..., ::-1])
    cv2.imwrite(str(heldout / "masks" / "p_a_1.png"), (mask * 255).astype(np.uint8))
    out = tmp_path / "casts"
    assert make_slice(heldout, out) == 1
    assert (out / "casts_test.txt").read_text() == "p_a_1_1.jpg\n"
    comp = cv2.imread(str(out / "composite_images" / "p_a_1_1.jpg"))
    real = cv2.imread(str(out / "real_images" / "p_a.jpg"))
    assert comp.shape == real.shape and np.abs(comp.astype(int) - real)[mask == 1].mean() > 5


def test_smoothing_is_a_time_constant_the_same_at_any_estimate_rate():
    """The share of a change still to follow after 0.5 s is exp(-0.5 / tau) at 30 estimates a second and
    at 4 (the CPU worker's rate) alike; the first estimate and a reset have momentum 0."""
    with Harmonizer(smoothing=0.1) as h:
        assert h.momentum(0.0) == pytest.approx(math.exp(-1 / 30 / 0.1))  # no estimate yet: one frame
        h._last_time = 10.0
        fast = h.momentum(10.0 + 1 / 30) ** 15
        slow = h.momentum(10.0 + 0.25) ** 2
        assert fast == pytest.approx(slow) == pytest.approx(math.exp(-0.5 / 0.1))
        assert h.momentum(9.0) == pytest.approx(math.exp(-1 / 30 / 0.1))  # time going backwards: one frame
        image, mask = _photo(np.random.default_rng(3), 96, 128)
        assert h.estimate(image, mask, timestamp=0.0).momentum == 0.0
        assert h.estimate(image, mask, timestamp=0.25).momentum == pytest.approx(math.exp(-2.5))
        h.reset()
        assert h.estimate(image, mask, timestamp=0.5).momentum == 0.0
        h.smoothing = 0.0
        assert h.estimate(image, mask, timestamp=0.6).momentum == 0.0
        with pytest.raises(ValueError, match="time constant"):
            h.smoothing = MAX_SMOOTHING + 1


def test_the_training_mixture_has_every_strength_including_none():
    from trainer import mixture

    # A photo large enough that a camera-like frame (longest side <= 640) is told apart from a crop
    # (at least 60 % of each side: >= 1080 px)
    image, mask = _photo(np.random.default_rng(4), 1350, 1800)
    strengths = [mixture.draw_strength(np.random.default_rng(k)) for k in range(400)]
    assert 0.08 < np.mean([t == 0 for t in strengths]) < 0.22
    assert 0.6 * mixture.PARTIAL_SHARE < np.mean([0 < t < 1 for t in strengths]) < 1.4 * mixture.PARTIAL_SHARE
    seen, cameras = set(), []
    for k in range(60):
        comp, real, m, t = mixture.draw_composite(image, mask, np.random.default_rng(k))
        cameras.append(max(real.shape[:2]) <= 640)
        assert comp.dtype == real.dtype == np.uint8 and comp.shape == real.shape and m.shape == real.shape[:2]
        outside = m == 0
        np.testing.assert_array_equal(comp[outside], real[outside])  # only the person is re-coloured
        if t == 0:
            np.testing.assert_array_equal(comp, real)  # nothing to do: the composite is the photo
        seen.add("none" if t == 0 else "partial" if t < 1 else "full")
    assert seen == {"none", "partial", "full"}
    assert 0.5 * mixture.CAMERA_SHARE < np.mean(cameras) < 1.5 * mixture.CAMERA_SHARE
