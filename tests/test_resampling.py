"""One implementation per per-frame step: each NumPy function the CPU path runs against the torch function the
GPU frame path runs for the same step (engine.resampling, engine.corrections, engine.recolour, engine.blend,
engine.sharpness, engine.scene), on the CPU.

Tolerances: float maths, 1e-5 relative to the values' range (summation order); uint8 results equal, or
within 1 level on under 0.5 % of the values where a float rounding tie can fall either way."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine import blend, corrections, recolour, resampling, scene
from engine.harmonizer import REFERENCE_ADAPTATION, SCENE_CHANGE

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _chw(a: np.ndarray) -> torch.Tensor:
    """(h, w[, C]) NumPy -> (1, C, h, w) torch."""
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _grid(ny, nx, seed=0):
    rng = np.random.default_rng(seed)
    return (corrections.IDENTITY12 + 0.2 * rng.standard_normal((ny, nx, 12))).astype(np.float32)


@pytest.mark.parametrize("size, net", [((360, 640), (144, 256)), ((720, 1280), (144, 256)), ((12, 20), (16, 24))])
def test_the_resize_to_the_network_is_one_resize(size, net):
    """network_resize (cv2) and network_resize_torch (its matrices): a uint8 frame rounded alike, a mask
    to float rounding. Enlarging (a frame smaller than the network), cv2 interpolates a uint8 frame in
    fixed point (11-bit weights): within a level there, on many values; the GPU path's frames are larger."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    mask = cv2.GaussianBlur((rng.random(size) > 0.5).astype(np.float32), (0, 0), 3)
    ry, rx_t = (torch.from_numpy(m) for m in resampling.resize_matrices(size, net))
    planes = torch.cat([_chw(image).float(), _chw(mask)], dim=1)
    low = resampling.network_resize_torch(planes, ry, rx_t, uint8_planes=3)
    diff = np.abs(_hwc(low[:, :3]) - resampling.network_resize(image, net))
    shrinking = net[0] <= size[0]
    assert diff.max() <= 1 and ((diff > 0).mean() < 0.005 or not shrinking)  # a .5 tie can round either way
    np.testing.assert_allclose(_hwc(low[:, 3:])[..., 0], resampling.network_resize(mask, net), atol=1e-5)


@pytest.mark.parametrize("size", [(180, 320), (37, 53), (720, 1280)])
def test_the_grid_upsample_is_one_upsample(size):
    """upsample_box (exact, NumPy), upsample_grid_torch (F.interpolate) and the fast OpenCV resize_box."""
    grid = _grid(9, 16)
    exact = resampling.upsample_box(grid, size, (0, size[0], 0, size[1]))
    np.testing.assert_allclose(_hwc(resampling.upsample_grid_torch(_chw(grid), size)), exact, atol=1e-5)
    box = (size[0] // 5, size[0] - 3, size[1] // 7, size[1] - 1)
    part = resampling.resize_box(grid, size, box, whole=False)
    # OpenCV quantises the sample positions to 1/32 of a node: off by at most 1/32 of a step between two
    # neighbouring nodes along each axis (this random grid's steps are far steeper than a network's).
    steepest = max(np.abs(np.diff(grid, axis=0)).max(), np.abs(np.diff(grid, axis=1)).max())
    np.testing.assert_allclose(part, exact[box[0]:box[1], box[2]:box[3]], atol=2 * steepest / 32)


def test_the_transforms_are_one_apply():
    grid, rng = _grid(5, 7), np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 60, 3)).astype(np.float32)
    coef = resampling.upsample_box(grid, (40, 60), (0, 40, 0, 60))
    expected = corrections.transform(coef, image, 255.0)
    got = corrections.transform_torch(_chw(coef), _chw(image), 255.0)
    np.testing.assert_allclose(_hwc(got), expected, rtol=1e-5, atol=1e-3)


def test_the_camera_rate_apply_is_the_device_apply():
    """affine_corrected (uint8, OpenCV) and the GPU path's upsample, transform at 0..255 and rounding."""
    grid, rng = _grid(9, 16), np.random.default_rng(2)
    image = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    box = (0, 180, 0, 320)
    expected = corrections.affine_corrected(corrections.LiftParams("affine-grid", grid), image, box)
    c = resampling.upsample_grid_torch(_chw(grid), (180, 320))
    got = torch.round(corrections.transform_torch(c, _chw(image).float(), 255.0).clamp(0, 255))
    diff = np.abs(_hwc(got) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005


def test_the_blend_is_one_blend():
    """blend_linear (cv2.blendLinear) and blend_linear_torch: equal on every value, ties included."""
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    weight = rng.random((64, 96), dtype=np.float32)
    weight[:8] = 0.0  # where the weight is 0: b's pixel bit for bit
    weight[8:16] = 0.5  # ties
    expected = corrections.blend_linear(a, b, weight)
    got = corrections.blend_linear_torch(_chw(a).float(), _chw(b).float(), _chw(weight))
    assert np.array_equal(_hwc(got).astype(np.uint8), expected)
    assert np.array_equal(expected[:8], b[:8])


def _photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth shading with texture on it (a camera picture's two scales), uint8."""
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.uniform(30, 220, (6, 9, 3)).astype(np.float32), (width, height))
    return np.clip(smooth + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("keep_detail", [False, True])
@pytest.mark.parametrize("size, scale", [((180, 320), 4), ((720, 1280), 15), ((250, 333), 7)])
def test_the_fast_apply_is_one_apply_wherever_the_box_lies(size, scale, keep_detail):
    """recolour.affine_corrected_fast (the CPU: the blocks around the person's box) and its torch twin (the
    GPU path: the whole frame) within a level on under 0.5 % of the values; and two boxes give the same
    pixels where they overlap, bit for bit: the 1/scale image is the frame's, not the box's. The last size
    is no multiple of the scale (the frame's last blocks are filled with its edge)."""
    height, width = size
    image = _photo_like(height, width, 4)
    params = corrections.LiftParams("affine-grid", _grid(9, 16, seed=5), detail_gain=1.3)
    gain = recolour.gain_matrix(params.data, keep_detail, params.detail_gain)
    wy, wx = (torch.from_numpy(recolour.grid_weights(n, g, scale)) for n, g in zip(size, params.data.shape[:2]))
    whole = _hwc(recolour.affine_corrected_fast_torch(_chw(params.data), _chw(image).float(), scale,
                                                     torch.from_numpy(gain), wy, wx))
    boxes = [(0, height, 0, width), (height // 5, height - 3, width // 3 + 1, width), (7, height // 2, 5, width // 2)]
    parts = [recolour.affine_corrected_fast(params, image, box, scale, keep_detail) for box in boxes]
    for (y0, y1, x0, x1), part in zip(boxes, parts):
        diff = np.abs(part.astype(np.int16) - whole[y0:y1, x0:x1])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.005, (diff.max(), (diff > 0).mean())
    y0, y1, x0, x1 = boxes[1]
    assert np.array_equal(parts[1], parts[0][y0:y1, x0:x1])


def test_the_person_composite_is_one_composite():
    """blend.person_over (the soft edge alone, from the mask's uint8 levels) and person_over_torch (every
    pixel): equal on every value, the mask's certain and empty pixels and ties included."""
    rng = np.random.default_rng(7)
    person, background = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    mask = rng.random((64, 96), dtype=np.float32)
    mask[:8], mask[8:16], mask[16:24] = 0.0, 1.0, 0.5
    mask[24:32] = rng.integers(0, 256, (8, 96)) / np.float32(255)  # exactly on the levels
    expected = blend.person_over(person, background, mask)
    got = blend.person_over_torch(_chw(person).float(), _chw(background).float(), _chw(mask))
    assert np.array_equal(_hwc(got).astype(np.uint8), expected)


@pytest.mark.parametrize("person", [True, False])
def test_the_kept_textures_gain_is_one_gain(person):
    """recolour.contrast_gain and contrast_gain_torch: the grid's stretch of the person's grey contrast at
    1/3 of the network picture; 1 where there is nobody to measure."""
    image = _photo_like(144, 256, 8).astype(np.float32) / 255
    mask = np.zeros((144, 256), np.float32)
    mask[30:130, 80:180] = 1.0 if person else 0.0
    grid = _grid(9, 16, seed=9)
    expected = recolour.contrast_gain(corrections.LiftParams("affine-grid", grid), image, mask, 3)
    ry, rx_t = (torch.from_numpy(m) for m in resampling.resize_matrices((144, 256), (48, 85)))
    got = float(recolour.contrast_gain_torch(_chw(grid), _chw(image), _chw(mask), ry, rx_t))
    assert got == pytest.approx(expected, rel=2e-3)
    assert (expected != 1.0) == person


@pytest.mark.parametrize("empty", [False, True])
def test_the_reference_gain_is_one_gain(empty):
    rng = np.random.default_rng(4)
    image = rng.random((36, 64, 3), dtype=np.float32)
    mask = np.zeros((36, 64), np.float32)
    mask[10:, 20:40] = 1.0
    reference = np.zeros_like(mask)
    if not empty:
        reference[:, :16] = 1.0
        image[:, :16] *= np.float32([1.3, 1.0, 0.6])  # a region lit differently from the room
    expected = corrections.reference_light_gain(image, mask, reference, REFERENCE_ADAPTATION)
    got = corrections.reference_light_gain_torch(_chw(image), _chw(mask), _chw(reference), REFERENCE_ADAPTATION)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert empty == bool(np.all(expected == 1.0))
    grid = _grid(4, 8)
    np.testing.assert_allclose(_hwc(corrections.scale_grid_outputs_torch(_chw(grid), got)),
                               corrections.scale_grid_outputs(grid, expected), rtol=1e-6)


def test_the_temporal_average_is_written_once():
    previous, current = _grid(3, 4, 0), _grid(3, 4, 1)
    expected = corrections.blend_params(corrections.LiftParams("affine-grid", previous),
                                        corrections.LiftParams("affine-grid", current), 0.8).data
    got = corrections.ema(torch.from_numpy(previous), torch.from_numpy(current), torch.tensor(0.8))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def _scene_frame(person_x: int, background: np.ndarray):
    """A network-size picture with a person (a bar) at person_x over `background`, and its reference."""
    mask = np.zeros(background.shape[:2], np.float32)
    mask[20:, person_x:person_x + 30] = 1.0
    picture = background * (1 - mask[..., None]) + np.float32([0.8, 0.6, 0.5]) * mask[..., None]
    return picture.astype(np.float32), 1 - mask


@pytest.mark.parametrize("case, expected", [("person moves", False), ("new background", True),
                                            ("small change", False), ("person fills a quadrant", False)])
def test_the_scene_test_is_one_test(case, expected):
    """A person moving over a still background is one scene; a new background is a new one; both paths
    decide alike (the device one without a branch on a tensor)."""
    rng = np.random.default_rng(5)
    still = rng.random((72, 128, 3), dtype=np.float32)
    last = _scene_frame(10, still)
    now = {"person moves": _scene_frame(40, still),
           "new background": _scene_frame(40, rng.random((72, 128, 3), dtype=np.float32) * 0.3),
           "small change": _scene_frame(10, np.clip(still + 0.05, 0, 1)),
           "person fills a quadrant": _scene_frame(0, still)}[case]
    if case == "person fills a quadrant":
        now[1][:40, :70] = 0.0  # too little shared background top left: that quadrant is not judged
        now[0][:40, :70] = 0.0
    signature = scene.signature(*last)
    assert scene.scene_changed(signature, *now, SCENE_CHANGE) == expected
    changed, background = scene.scene_changed_torch(_chw(last[0]), torch.from_numpy(signature[1]), _chw(now[0]),
                                                    _chw(now[1]), SCENE_CHANGE)
    assert bool(changed) == expected
    assert np.array_equal(background.numpy(), scene.signature(*now)[1])



def _sharpened_person(height=120, width=160, seed=10):
    """A photo-like picture whose person (an ellipse, soft edge) was sharpened as the FFHQH recipe does."""
    from engine import sharpness

    image = _photo_like(height, width, seed)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = cv2.GaussianBlur(((((yy - 70) / 40.0) ** 2 + ((xx - 80) / 30.0) ** 2) <= 1).astype(np.float32), (0, 0), 2)
    sharp = np.clip(sharpness.sharpen(image, 4.0), 0, 255).astype(np.uint8)
    return np.where(mask[..., None] > 0.5, sharp, image).astype(np.uint8), mask


def test_the_sharpness_detector_is_one_detector():
    """sharpness_features / undo_share(oversharpened) and their torch twins on a sharpened person; and no
    features (share 0) where the person fills nothing."""
    from engine import sharpness

    image, mask = _sharpened_person()
    expected = sharpness.sharpness_features(image, mask)
    constants = sharpness.torch_constants("cpu")
    features, valid = sharpness.sharpness_features_torch(_chw(image).float(), _chw(mask), constants)
    assert bool(valid)
    np.testing.assert_allclose(features.numpy(), expected, rtol=1e-4, atol=1e-4)
    share = sharpness.undo_share(sharpness.oversharpened(expected))
    assert float(sharpness.undo_share_torch(features, valid, constants)) == pytest.approx(share, abs=1e-5)
    assert share > 0.5  # the detector does see this sharpening
    nobody = np.zeros_like(mask)
    assert sharpness.sharpness_features(image, nobody) is None
    found = sharpness.sharpness_features_torch(_chw(image).float(), _chw(nobody), constants)
    assert float(sharpness.undo_share_torch(*found, constants)) == 0.0


@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_the_unsharpen_is_one_filter(strength):
    """engine.sharpness.unsharpen_person (the person's box, RADIUS pixels of margin) and unsharpen_torch (the
    whole frame): the same pixels, the frame's edges included (the box touches the left edge)."""
    from engine import sharpness

    image, mask = _sharpened_person()
    mask[:, :60] = np.maximum(mask[:, :60], 0.7)  # the person reaches the frame's left edge
    box = blend.mask_box(mask)
    expected = sharpness.unsharpen_person(image, mask, box, strength)
    whole = _hwc(sharpness.unsharpen_torch(_chw(image).float(), torch.tensor(strength), sharpness.torch_constants("cpu")))
    got = np.where(mask[..., None] > 0, whole, image)
    diff = np.abs(got.astype(np.int16) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
