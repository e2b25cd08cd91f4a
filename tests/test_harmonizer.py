"""engine.Harmonizer: edge cases, background exactness, strength, estimate/apply on later frames, temporal
state, and clear errors on bad input."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from engine.harmonizer import NO_PERSON, Correction, Harmonizer
from engine.phnet import create_model
from engine.resampling import net_shape


@pytest.fixture(scope="module")
def harmonizer():
    """The stats model on torch/CPU: deterministic, no weights needed, changes the person visibly."""
    with Harmonizer(model="stats", backend="torch", device="cpu") as h:
        yield h


def _scene(h, w, seed=0, person=(0.9, 0.6, 0.5), background=(0.2, 0.3, 0.7)):
    """A textured 'person' ellipse of one colour on a textured background of another."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((h, w, 3), dtype=np.float32), (0, 0), 2) - 0.5
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((yy - h / 2) / (0.35 * h)) ** 2 + ((xx - w / 2) / (0.2 * w)) ** 2 <= 1).astype(np.float32)
    mask = cv2.GaussianBlur(mask, (0, 0), max(h, w) / 200)
    img = np.where(mask[..., None] > 0.5, person, background) + 0.3 * noise
    return np.clip(img * 255, 0, 255).astype(np.uint8), mask


def _check(out, comp, mask):
    assert out.dtype == np.uint8 and out.shape == comp.shape
    background = np.asarray(mask) == 0
    assert np.array_equal(out[background], comp[background])


def test_harmonizes_the_person_and_keeps_the_background(harmonizer):
    comp, mask = _scene(240, 320)
    out = harmonizer.harmonize(comp, mask)
    _check(out, comp, mask)
    inside = mask > 0.99
    assert np.abs(out[inside].astype(int) - comp[inside]).mean() > 5  # the person did change
    # towards the background's blue: the stats model matches the person's statistics to it
    assert out[inside][:, 2].mean() > comp[inside][:, 2].mean()


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (33, 17), (101, 203), (480, 640)])
def test_odd_and_tiny_sizes(harmonizer, size):
    comp, mask = _scene(*size, seed=size[0])
    if mask.max() < NO_PERSON:
        mask[size[0] // 2, size[1] // 2] = 1.0
    out = harmonizer.harmonize(comp, mask)
    _check(out, comp, mask)


def test_4k_frame(harmonizer):
    comp, mask = _scene(2160, 3840, seed=4)
    correction = harmonizer.estimate(comp, mask)
    assert correction.net_size == (144, 256)
    out = harmonizer.apply(correction, comp, mask)
    _check(out, comp, mask)


def test_empty_mask_returns_the_composite(harmonizer):
    comp, _ = _scene(64, 96)
    for mask in (np.zeros((64, 96), np.float32), np.full((64, 96), 3, np.uint8)):
        out = harmonizer.harmonize(comp, mask)
        assert np.array_equal(out, comp) and out is not comp


def test_full_mask_one_pixel_and_constant_image(harmonizer):
    comp, _ = _scene(64, 96)
    full = np.ones((64, 96), np.float32)
    out = harmonizer.harmonize(comp, full)
    assert out.dtype == np.uint8 and np.isfinite(out).all()
    one = np.zeros((64, 96), np.uint8)
    one[30, 40] = 255
    _check(harmonizer.harmonize(comp, one), comp, one)
    flat = np.full((64, 96, 3), 128, np.uint8)
    for mask in (full, one, _scene(64, 96)[1]):
        out = harmonizer.harmonize(flat, mask)
        _check(out, flat, mask)
        assert np.abs(out.astype(int) - 128).max() <= 2  # nothing to match: stays grey


def test_strength_zero_and_blend(harmonizer):
    comp, mask = _scene(120, 160)
    full_out = harmonizer.harmonize(comp, mask)
    harmonizer.strength = 0.0
    try:
        assert np.array_equal(harmonizer.harmonize(comp, mask), comp)
        harmonizer.strength = 0.5
        half = harmonizer.harmonize(comp, mask)
    finally:
        harmonizer.strength = 1.0
    inside = mask > 0.99
    expected = (comp[inside].astype(float) + full_out[inside]) / 2
    assert np.abs(half[inside] - expected).max() <= 1.0


def test_estimate_applies_to_a_later_frame(harmonizer):
    comp0, mask0 = _scene(120, 160, seed=1)
    correction = harmonizer.estimate(comp0, mask0)
    assert isinstance(correction, Correction) and correction.size == (120, 160)
    # the person moved 10 px right in the next frame
    comp1 = np.roll(comp0, 10, axis=1)
    mask1 = np.roll(mask0, 10, axis=1)
    out = harmonizer.apply(correction, comp1, mask1)
    _check(out, comp1, mask1)
    fresh = harmonizer.harmonize(comp1, mask1)
    inside = mask1 > 0.99
    assert np.abs(out[inside].astype(int) - fresh[inside]).mean() < 3  # nearly what a fresh estimate gives
    with pytest.raises(ValueError, match="estimated on a 120x160 frame"):
        harmonizer.apply(correction, comp1[:100], mask1[:100])


def test_harmonize_equals_apply_of_estimate(harmonizer):
    comp, mask = _scene(90, 130)
    a = harmonizer.harmonize(comp, mask)
    b = harmonizer.apply(harmonizer.estimate(comp, mask), comp, mask)
    assert np.array_equal(a, b)


def test_smoothing_state_reset_and_scene_change(caplog):
    with Harmonizer(model="stats", backend="torch", device="cpu", smoothing=0.9) as h:
        comp, mask = _scene(96, 128)
        first = h.apply(h.estimate(comp, mask, timestamp=0.0), comp, mask)
        c = h.estimate(comp, mask, timestamp=1 / 30)
        assert c.momentum == pytest.approx(np.exp(-1 / 30 / 0.9)) and not c.scene_change
        # same frame again at momentum 0.9: the smoothed statistics equal this frame's, same output
        assert np.abs(h.apply(c, comp, mask).astype(int) - first).max() <= 1
        h.reset()
        assert h.estimate(comp, mask).momentum == 0.0
        caplog.set_level(logging.INFO, logger="engine.harmonizer")
        other, _ = _scene(96, 128, background=(0.9, 0.9, 0.2))
        c = h.estimate(other, mask)
        assert c.scene_change and c.momentum == 0.0 and "scene change" in caplog.text
        # a frame size change resets too
        small, small_mask = _scene(48, 64)
        assert h.estimate(small, small_mask).momentum == 0.0
        # momentum 0: identical to a fresh stateless harmonizer
        h.smoothing = 0.0
        h.harmonize(other, mask)
        with Harmonizer(model="stats", backend="torch", device="cpu") as fresh:
            assert np.array_equal(h.harmonize(comp, mask), fresh.harmonize(comp, mask))


def test_reference_region_steers_the_colour(harmonizer):
    comp, mask = _scene(96, 128)
    comp[:, :30] = (230, 20, 20)  # a red strip on the left of the background
    comp[:, -30:] = (20, 20, 230)  # a blue strip on the right
    red = np.zeros(mask.shape, np.float32)
    red[:, :30] = 1
    blue = np.zeros(mask.shape, np.float32)
    blue[:, -30:] = 1
    inside = mask > 0.99
    to_red = harmonizer.harmonize(comp, mask, red)[inside].astype(int)
    to_blue = harmonizer.harmonize(comp, mask, blue)[inside].astype(int)
    assert (to_red[:, 0] - to_red[:, 2]).mean() > (to_blue[:, 0] - to_blue[:, 2]).mean() + 20


def test_the_shipped_weights_follow_a_chosen_region_and_leave_the_default_alone():
    """The affine head: a red region makes the person redder than a blue one; no reference (the whole
    background) leaves the network's correction untouched, and naming the whole background explicitly
    changes next to nothing."""
    comp, mask = _scene(96, 128)
    comp[:, :30] = (230, 20, 20)
    comp[:, -30:] = (20, 20, 230)
    red, blue = np.zeros(mask.shape, np.float32), np.zeros(mask.shape, np.float32)
    red[:, :30], blue[:, -30:] = 1, 1
    inside = mask > 0.99
    with Harmonizer() as h:
        assert h.backend_name and h.model_description.startswith("default")
        to_red = h.harmonize(comp, mask, red)[inside].astype(int)
        to_blue = h.harmonize(comp, mask, blue)[inside].astype(int)
        plain = h.harmonize(comp, mask)
        whole = h.harmonize(comp, mask, (mask < 0.5).astype(np.float32))
    assert (to_red[:, 0] - to_red[:, 2]).mean() > (to_blue[:, 0] - to_blue[:, 2]).mean() + 20
    assert np.abs(plain.astype(int) - whole).max() <= 3


def test_onnxruntime_and_torch_harmonizers_agree():
    comp, mask = _scene(120, 160)
    with Harmonizer(model="stats", backend="torch", device="cpu") as a, \
            Harmonizer(model="stats", backend="onnxruntime", device="cpu") as b:
        assert "onnxruntime" in b.backend_name
        assert np.abs(a.harmonize(comp, mask).astype(int) - b.harmonize(comp, mask)).max() <= 1


def test_default_model_falls_back_to_stats_with_a_warning(caplog):
    from engine.weights import DEFAULT_WEIGHTS

    caplog.set_level(logging.WARNING, logger="engine.weights")
    with Harmonizer(backend="torch", device="cpu") as h:
        if DEFAULT_WEIGHTS.is_file():
            assert h.model_name != "stats" or "default" in h.model_description
        else:
            assert h.model_name == "stats" and "no trained weights ship yet" in caplog.text


def test_module_and_weights_arguments(tmp_path):
    from engine.weights import save_weights

    tiny = create_model("phnet-xs", widths=(4, 4, 8, 8, 8, 8)).eval()
    path = save_weights(tiny, tmp_path / "tiny.safetensors")
    comp, mask = _scene(64, 64)
    with Harmonizer(weights=path, backend="torch", device="cpu") as h:
        assert h.model_name == "phnet-xs"
        _check(h.harmonize(comp, mask), comp, mask)
    with Harmonizer(model=tiny, backend="torch", device="cpu", lift="delta") as h:
        _check(h.harmonize(comp, mask), comp, mask)
    with pytest.raises(ValueError, match="hold model 'phnet-xs'"):
        Harmonizer(model="stats", weights=path, backend="torch", device="cpu")


def test_non_finite_network_output_never_reaches_the_frame():
    class Broken(torch.nn.Module):
        name, stats_size = "broken", 4

        def forward(self, composite, mask, reference, stats_in, momentum):
            return torch.full_like(composite, float("nan")), torch.full_like(stats_in, float("inf"))

    comp, mask = _scene(64, 64)
    with Harmonizer(model=Broken(), backend="torch", device="cpu", smoothing=0.5) as h:
        out = h.harmonize(comp, mask)
        _check(out, comp, mask)
        assert np.abs(out.astype(int) - comp).max() <= 1  # replaced by the composite, not garbage
        assert h.estimate(comp, mask).momentum == 0.0  # the non-finite state was dropped


def test_bad_inputs_raise_clear_errors(harmonizer):
    comp, mask = _scene(32, 48)
    with pytest.raises(TypeError, match="uint8"):
        harmonizer.harmonize(comp.astype(np.float32), mask)
    with pytest.raises(TypeError, match="numpy array"):
        harmonizer.harmonize(comp.tolist(), mask)
    with pytest.raises(ValueError, match=r"H x W x 3"):
        harmonizer.harmonize(comp[..., :2], mask)
    with pytest.raises(ValueError, match=r"\(32, 48\)"):
        harmonizer.harmonize(comp, mask[:31])
    with pytest.raises(TypeError, match="dtype int64"):
        harmonizer.harmonize(comp, mask.astype(np.int64))
    with pytest.raises(ValueError, match="reference"):
        harmonizer.harmonize(comp, mask, np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match="Correction"):
        harmonizer.apply("nope", comp, mask)
    with pytest.raises(ValueError, match="strength"):
        harmonizer.strength = 1.5
    with pytest.raises(ValueError, match="smoothing"):
        harmonizer.smoothing = 5.0
    with pytest.raises(ValueError, match="net_size"):
        Harmonizer(model="stats", backend="torch", device="cpu", net_size=250)
    with pytest.raises(ValueError, match="lift"):
        Harmonizer(model="stats", backend="torch", device="cpu", lift="bicubic")
    with pytest.raises(ValueError, match="unknown model"):
        Harmonizer(model="phnet-xxl", backend="torch", device="cpu")


def test_net_shape_keeps_aspect_in_multiples_of_8():
    assert net_shape(1080, 1920, 256) == (144, 256)
    assert net_shape(1920, 1080, 256) == (256, 144)
    assert net_shape(480, 640, 256) == (192, 256)
    assert net_shape(1, 1, 256) == (8, 8)
    assert net_shape(100, 60, 256) == (104, 64)  # small frames are not blown up to net_size
    for h, w in [(2160, 3840), (7, 5), (333, 777)]:
        nh, nw = net_shape(h, w, 512)
        assert nh % 8 == 0 and nw % 8 == 0 and max(nh, nw) <= 512


def test_apply_with_foreground_corrects_the_person_then_composites(harmonizer):
    """With the foreground and background, apply = m * T(foreground) + (1 - m) * background: at the soft
    edge the correction per unit of person equals the inside's, where blending T(composite) with the mask
    gives the edge the correction of a mix of person and background."""
    from engine.recolour import apply_person

    person, mask = _scene(120, 160, seed=4)
    background = np.full_like(person, (40, 60, 160))
    composite = np.round(mask[..., None] * person + (1 - mask[..., None]) * background).astype(np.uint8)
    correction = harmonizer.estimate(composite, mask)
    out = harmonizer.apply(correction, composite, mask, foreground=person, background=background)
    _check(out, composite, mask)
    y0, y1, x0, x1 = box = (0, 120, 0, 160)
    expected = apply_person(correction.params, person, background, mask, 1.0, box)
    assert np.array_equal(out[y0:y1, x0:x1][mask > 0], expected[mask > 0])
    boxed = harmonizer.apply(correction, composite, mask, foreground=person, background=background,
                             box=(10, 110, 20, 140))
    assert np.abs(boxed.astype(int) - out).max() <= 1
    with pytest.raises(ValueError, match="foreground and background"):
        harmonizer.apply(correction, composite, mask, foreground=person)
