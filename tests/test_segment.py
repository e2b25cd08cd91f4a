"""Segmentation: the maths against NumPy references, and real MediaPipe on real portraits."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest

from vcam.segment import Segmenter, adaptive_ema, box_mean, fast_guided_filter, guided_coefficients, stretch


def _box_reference(image, radius):
    padded = np.pad(image.astype(np.float64), radius, mode="symmetric")
    out = np.zeros(image.shape, np.float64)
    size = 2 * radius + 1
    for dy in range(size):
        for dx in range(size):
            out += padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
    return out / size**2


def test_box_mean_matches_numpy():
    image = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    np.testing.assert_allclose(box_mean(image, 2), _box_reference(image, 2), atol=1e-5)


def test_guided_filter_matches_the_textbook_formula():
    rng = np.random.default_rng(1)
    guide = rng.random((24, 32)).astype(np.float32)
    mask = (rng.random((24, 32)) > 0.5).astype(np.float32)
    r, eps = 2, 1e-3
    mi, mp = _box_reference(guide, r), _box_reference(mask, r)
    a = (_box_reference(guide * mask, r) - mi * mp) / (_box_reference(guide * guide, r) - mi * mi + eps)
    b = mp - a * mi
    expected = _box_reference(a, r) * guide + _box_reference(b, r)
    mean_a, mean_b = guided_coefficients(guide, mask, r, eps)
    np.testing.assert_allclose(mean_a * guide + mean_b, expected, atol=1e-4)
    # Same size in and out: the fast filter is the plain guided filter.
    np.testing.assert_allclose(fast_guided_filter(guide, mask, guide, r, eps), expected, atol=1e-4)


def test_guided_upsampling_snaps_to_the_image_edge():
    # A sharp edge at x=101 in the full image; the low-res mask only knows it to within 4 px.
    full = np.zeros((64, 256), np.float32)
    full[:, 101:] = 1.0
    truth = full.copy()
    low_guide = cv2.resize(full, (64, 16), interpolation=cv2.INTER_AREA)
    low_mask = low_guide.copy()
    refined = np.clip(fast_guided_filter(low_guide, low_mask, full, radius=1, eps=1e-4), 0, 1)
    bilinear = cv2.resize(low_mask, (256, 64), interpolation=cv2.INTER_LINEAR)
    assert np.abs(refined - truth).mean() < 0.5 * np.abs(bilinear - truth).mean()


def test_adaptive_ema_follows_motion_and_damps_flicker():
    rng = np.random.default_rng(2)
    base = np.full((10, 10), 0.5, np.float32)
    state, outputs = None, []
    for _ in range(50):
        state = adaptive_ema(state, base + rng.normal(0, 0.05, base.shape).astype(np.float32))
        outputs.append(state.copy())
    assert np.std(outputs[10:], axis=0).mean() < 0.65 * 0.05, "flicker must be damped"
    moved = adaptive_ema(np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(moved, 1.0)  # a real move is followed at once: no trailing mask
    prev, new = np.float32([[0.2]]), np.float32([[0.3]])
    alpha = 0.25 + 0.75 * 0.1 / 0.35
    np.testing.assert_allclose(adaptive_ema(prev, new), 0.2 + alpha * 0.1, rtol=1e-5)
    with pytest.raises(ValueError, match="differ"):
        adaptive_ema(np.zeros((2, 2), np.float32), np.zeros((3, 3), np.float32))


def test_stretch_makes_certain_pixels_exact():
    out = stretch(np.float32([[0.0, 0.1, 0.5, 0.95, 1.0]]), 0.1, 0.9)
    np.testing.assert_allclose(out, [[0, 0, 0.5, 1, 1]], atol=1e-6)


@pytest.fixture(scope="module")
def portrait(shared_data):
    paths = sorted(glob.glob(str(shared_data / "portraits" / "volcomix_*.jpg")))
    if not paths:
        pytest.skip("no portraits in the shared data")
    image = cv2.cvtColor(cv2.imread(paths[0]), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    return cv2.resize(image, (w // 2 * 2 // 2, h // 2 * 2 // 2)) if w > 1000 else image


@pytest.mark.parametrize("model_selection", [0, 1])
def test_real_mediapipe_finds_the_person(portrait, model_selection):
    segmenter = Segmenter(model_selection)
    mask = segmenter.mask_for(portrait)
    segmenter.close()
    assert mask.shape == portrait.shape[:2] and mask.dtype == np.float32
    assert np.isfinite(mask).all() and mask.min() == 0.0 and mask.max() == 1.0
    assert 0.05 < (mask > 0.5).mean() < 0.95
    assert (mask == 0).mean() > 0.05, "certain background must be exactly 0"


def test_tasks_segmenter_with_a_model_file(portrait):
    import mediapipe

    path = glob.glob(f"{mediapipe.__path__[0]}/modules/selfie_segmentation/selfie_segmentation_landscape.tflite")
    if not path:
        pytest.skip("this mediapipe wheel has no bundled .tflite to use as a user model")
    segmenter = Segmenter(model_path=path[0])
    reference = Segmenter(1)
    a, b = segmenter.mask_for(portrait), reference.mask_for(portrait)
    segmenter.close()
    reference.close()
    assert ((a > 0.5) == (b > 0.5)).mean() > 0.95


def test_segmenter_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="segmenter model not found"):
        Segmenter(model_path=str(tmp_path / "missing.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load segmenter model"):
        Segmenter(model_path=str(bad))
    with pytest.raises(ValueError, match="model_selection"):
        Segmenter(model_selection=3)
