"""The affine colour-transform head (engine.affine, PHNet output="affine"): its maths against the NumPy twin
in engine.corrections, identity at initialisation, exactness at full resolution through the Harmonizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import affine, corrections, recolour
from engine.export import example_inputs
from engine.harmonizer import Harmonizer
from engine.phnet import create_model, harmonized_image, output_names

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _random_grid(ny, nx, seed=0, spread=0.2):
    """Coefficients near the identity with random variation from cell to cell."""
    rng = np.random.default_rng(seed)
    return (np.array(affine.IDENTITY, np.float32) + spread * rng.standard_normal((ny, nx, 12))).astype(np.float32)


def _model(seed=0):
    torch.manual_seed(seed)
    model = create_model("phnet-xs", output="affine").eval()
    with torch.no_grad():
        for p in list(model.head.parameters()) + list(model.global_transform.fc2.parameters()):
            p.normal_(std=0.02)
    return model


def test_apply_matches_the_numpy_affine_grid():
    grid = _random_grid(5, 7)
    rng = np.random.default_rng(1)
    image = rng.random((37, 53, 3), dtype=np.float32)
    expected = corrections.apply_affine_grid(corrections.LiftParams("affine-grid", grid), image)
    got = affine.apply(torch.from_numpy(grid).permute(2, 0, 1)[None], torch.from_numpy(image).permute(2, 0, 1)[None],
                       clamp=False)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_camera_rate_blend_matches_the_float_reference():
    # A trained head's grid varies gently (warpAffine samples at 1/32 px: steep grids would differ more).
    grid = _random_grid(6, 9, seed=2, spread=0.05)
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    box = (10, 80, 20, 150)
    weight = rng.random((70, 130), dtype=np.float32)
    params = corrections.LiftParams("affine-grid", grid)
    got = recolour.apply_affine_blend(params, frame, weight, box)
    corrected = corrections.apply_lift(params, frame, box) * 255
    part = frame[10:80, 20:150].astype(np.float32)
    expected = part + weight[..., None] * (corrected - part)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(np.float32) - expected).max() <= 2.0  # uint8 rounding twice, 1/32 px positions
    zero = recolour.apply_affine_blend(params, frame, np.zeros_like(weight), box)
    assert np.array_equal(zero, frame[10:80, 20:150])  # weight 0 is the composite bit for bit


def test_untrained_affine_model_is_the_identity():
    model = create_model("phnet-xs", output="affine").eval()
    inputs = example_inputs(model, 64, 96)
    with torch.no_grad():
        coefficients, _ = model(*inputs)
    assert output_names(model) == ("coefficients", "stats_out")
    assert coefficients.shape == (1, 12, 16, 24)
    assert torch.equal(harmonized_image(coefficients, inputs[0], "coefficients"), inputs[0].clamp(0, 1))


def test_every_parameter_gets_a_gradient():
    model = _model().train()
    coefficients, _ = model(*example_inputs(model, 64, 64, batch=2))
    composite = example_inputs(model, 64, 64, batch=2)[0]
    harmonized_image(coefficients, composite, "coefficients").mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_harmonizer_applies_the_grid_exactly_at_full_resolution():
    """The network runs at 64 px; the 4x larger frame gets the same transforms, so it equals the frame
    transformed by the upsampled grid (no fitted lift, no lost texture)."""
    model = _model(seed=4)
    rng = np.random.default_rng(5)
    frame = (rng.random((256, 192, 3)) * 255).astype(np.uint8)
    mask = np.zeros((256, 192), np.float32)
    mask[40:220, 50:150] = 1.0
    # The grid alone: white noise looks sharpened to engine.sharpness, whose filter would come first.
    with Harmonizer(model=model, backend="torch", device="cpu", net_size=64, sharpness=False) as h:
        correction = h.estimate(frame, mask)
        out = h.apply(correction, frame, mask)
    assert correction.params.method == "affine-grid" and correction.params.data.shape == (16, 12, 12)
    coef = torch.from_numpy(correction.params.data).permute(2, 0, 1)[None]
    full = affine.apply(coef, torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)
    expected = (full[0].permute(1, 2, 0).numpy() * 255)
    inside = mask > 0
    assert np.abs(out[inside].astype(np.float32) - expected[inside]).max() <= 2.0
    assert np.array_equal(out[~inside], frame[~inside])


def test_momentum_zero_equals_a_single_image_and_smoothing_averages():
    model = _model(seed=6)
    rng = np.random.default_rng(7)
    frames = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(3)]
    mask = np.zeros((96, 128), np.float32)
    mask[20:90, 30:100] = 1.0
    with Harmonizer(model=model, backend="torch", device="cpu", net_size=64, smoothing=0.0) as h:
        singles = []
        for f in frames:
            h.reset()
            singles.append(h.estimate(f, mask).params.data)
        h.reset()
        stream = [h.estimate(f, mask).params.data for f in frames]
    for a, b in zip(singles, stream):
        np.testing.assert_array_equal(a, b)


def test_no_background_to_match_leaves_the_composite_as_it_is():
    """A person filling the frame (no reference region) gets no correction, whatever the head says."""
    model = _model(seed=8)
    rng = np.random.default_rng(9)
    frame = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    with Harmonizer(model=model, backend="torch", device="cpu", net_size=64) as h:
        correction = h.estimate(frame, np.ones((96, 128), np.float32))
        assert correction.params is None
        assert np.array_equal(h.apply(correction, frame, np.ones((96, 128), np.float32)), frame)


def test_global_head_stays_bounded_when_the_reference_vanishes():
    model = _model(seed=10)
    with torch.no_grad():
        model.global_transform.fc2.weight.normal_(std=5.0)  # a head that extrapolates wildly
        composite = torch.rand(1, 3, 64, 64)
        coefficients, _ = model(composite, torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64),
                                torch.zeros(1, model.stats_size), torch.zeros(1))
    assert torch.isfinite(coefficients).all()
    assert (coefficients - torch.tensor(affine.IDENTITY).view(1, 12, 1, 1)).abs().max() < 2.5


def test_cells_only_nudge_the_global_transform():
    """The per-cell part is bounded and averages to zero over the person: with the global head at zero,
    the person's mean transform is the identity whatever the cells say."""
    import torch.nn.functional as F

    from engine.phnet import LOCAL_BOUND

    model = create_model("phnet-xs", output="affine").eval()
    with torch.no_grad():
        model.head.weight.normal_(std=1.0)  # cells that would like to do a lot
        composite, mask, reference, stats_in, momentum = example_inputs(model, 64, 96)
        coefficients, _ = model(composite, mask, reference, stats_in, momentum)
    cells = F.avg_pool2d(mask, 4)
    mean = (coefficients * cells).sum(dim=(2, 3)) / cells.sum(dim=(2, 3))
    torch.testing.assert_close(mean, torch.tensor(affine.IDENTITY).view(1, 12), atol=1e-5, rtol=0)
    assert (coefficients - torch.tensor(affine.IDENTITY).view(1, 12, 1, 1)).abs().max() <= 2 * LOCAL_BOUND


def test_keep_detail_restores_the_frames_texture_under_a_flattening_transform():
    """Transforms that halve contrast, applied with detail_sigma, keep the frame's fine texture as it was
    (and still move its low-pass colour); without it the texture is halved."""
    import cv2

    rng = np.random.default_rng(11)
    frame = np.clip(128 + 40 * rng.standard_normal((120, 160, 3)), 0, 255).astype(np.uint8)
    grid = np.broadcast_to(np.array([0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5, 0.3, 0.2, 0.1], np.float32), (6, 8, 12))
    params = corrections.LiftParams("affine-grid", grid.copy())
    box, weight = (0, 120, 0, 160), np.ones((120, 160), np.float32)

    def high(a):
        a = a.astype(np.float32)
        return a - cv2.GaussianBlur(a, (0, 0), 3)

    flat = recolour.apply_affine_blend(params, frame, weight, box)
    kept = recolour.apply_affine_blend(params, frame, weight, box, detail_scale=4)
    assert high(flat).std() < 0.6 * high(frame).std()
    assert abs(high(kept).std() / high(frame).std() - 1) < 0.1
    assert abs(kept.mean() - flat.mean()) < 2.0  # the colour change itself is the same


def test_keep_detail_is_a_config_setting_the_harmonizer_reads(tmp_path):
    from engine.weights import load_weights, save_weights

    model = create_model("phnet-xs", output="affine", keep_detail=1.5)
    path = save_weights(model, tmp_path / "w.safetensors")
    assert load_weights(path).config.keep_detail == 1.5
    with pytest.raises(ValueError, match="keep_detail"):
        create_model("phnet-xs", output="affine", keep_detail=-1.0)
