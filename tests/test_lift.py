"""engine.lifts, engine.corrections and engine.resampling: the low-res -> full-res correction methods, against NumPy
references and synthetic truths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine import corrections, lifts, resampling

RNG = np.random.default_rng(0)
A = np.array([[0.8, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.7]], np.float32)
B = np.array([0.05, 0.02, 0.1], np.float32)


def _texture(h, w, smooth=False, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3), dtype=np.float32), (0, 0), 8 if smooth else 2)
    img = (img - img.min()) / (img.max() - img.min())
    return (0.15 + 0.7 * img).astype(np.float32)


def _affine(x):
    return (x @ A.T + B).astype(np.float32)


def _mask(h, w):
    m = np.zeros((h, w), np.float32)
    m[h // 5: 4 * h // 5, w // 4: 3 * w // 4] = 1
    return m


def _low(full, size):
    return cv2.resize(full, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def test_taps_match_cv2_resize():
    src = RNG.random((9, 7, 5), dtype=np.float32)
    ref = cv2.resize(src, (53, 41), interpolation=cv2.INTER_LINEAR)
    got = resampling.upsample_box(src, (41, 53), (0, 41, 0, 53))
    np.testing.assert_allclose(got, ref, atol=2e-3)  # cv2 uses fixed-point weights
    part = resampling.upsample_box(src, (41, 53), (5, 30, 7, 50))
    np.testing.assert_array_equal(part, got[5:30, 7:50])
    fast = resampling.resize_box(src, (41, 53), (5, 30, 7, 50))  # positions quantised to 1/32 px
    np.testing.assert_allclose(fast, part, atol=0.03)
    smooth = cv2.resize(src[..., :3], (5, 4), interpolation=cv2.INTER_AREA)  # smooth, like the delta map
    np.testing.assert_allclose(resampling.resize_box(smooth, (41, 53), (0, 41, 0, 53)),
                               resampling.upsample_box(smooth, (41, 53), (0, 41, 0, 53)), atol=0.01)


@pytest.mark.parametrize("method", corrections.METHODS)
def test_global_colour_change_recovered_on_smooth_image(method):
    """Every method recovers a pure global colour change at full resolution (smooth image: delta too)."""
    full = _texture(360, 640, smooth=True)
    low = _low(full, (144, 256))
    m = _mask(144, 256)
    # delta's default smoothing of the correction (detail_sigma) trades exactness on gain changes for less
    # flicker and no lost texture; the raw difference is what must be exact here.
    options = {"detail_sigma": 0} if method == "delta" else {}
    params = lifts.fit_lift(method, low, _affine(low), m, **options)
    out = corrections.apply_lift(params, full)
    inside = (slice(90, 270), slice(170, 470))
    tol = 0.01 if method == "delta" else 2e-3
    assert np.abs(out[inside] - _affine(full)[inside]).max() < tol
    if method == "delta":  # the default stays close: within 3 levels of 255
        smoothed = corrections.apply_lift(lifts.fit_lift(method, low, _affine(low), m), full)
        assert np.abs(smoothed[inside] - _affine(full)[inside]).max() < 0.03


@pytest.mark.parametrize("method", ["affine-grid", "poly"])
def test_texture_keeps_its_contrast(method):
    """On fine texture the colour transforms are exact; the additive delta cannot be (it misses gain)."""
    full = _texture(360, 640)
    low = _low(full, (144, 256))
    m = _mask(144, 256)
    inside = (slice(90, 270), slice(170, 470))
    out = corrections.apply_lift(lifts.fit_lift(method, low, _affine(low), m), full)
    assert np.abs(out[inside] - _affine(full)[inside]).max() < 2e-3
    delta = corrections.apply_lift(lifts.fit_lift("delta", low, _affine(low), m), full)
    assert np.abs(delta[inside] - _affine(full)[inside]).max() > 0.02


def test_delta_is_exact_for_an_offset():
    full = _texture(200, 300)
    low = _low(full, (80, 120))
    m = _mask(80, 120)
    out = corrections.apply_lift(lifts.fit_delta(low, low + 0.1, m), full)
    np.testing.assert_allclose(out, np.clip(full + 0.1, 0, 1), atol=1e-5)


def _reference_affine_grid(comp, harm, mask, grid, lam, lam_global):
    """Plain NumPy float64 reference: loops over nodes, explicit tent weights, np.linalg.solve."""
    h, w = mask.shape
    ny, nx = lifts.grid_shape(h, w, grid)

    def tent(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        weights = np.zeros((n_out, n_in))
        for j, p in enumerate(pos):
            i0 = int(np.floor(p))
            i1 = min(i0 + 1, n_in - 1)
            weights[j, i0] += 1 - (p - i0)
            weights[j, i1] += p - i0
        return weights

    c, y, m = comp.astype(np.float64), harm.astype(np.float64), mask.astype(np.float64)
    mu = (c * m[..., None]).reshape(-1, 3).sum(0) / m.sum()
    x = np.concatenate([c - mu, np.ones((h, w, 1))], -1).reshape(-1, 4)
    yv = y.reshape(-1, 3)
    mv = m.reshape(-1)
    xtx = (x * mv[:, None]).T @ x
    diag = np.diag(xtx)
    prior = np.vstack([np.eye(3), mu])
    reg = np.diag(lam_global * diag + 1e-6)
    a_global = np.linalg.solve(xtx + reg, (x * mv[:, None]).T @ yv + reg @ prior)
    ty, tx = tent(h, ny), tent(w, nx)
    out = np.zeros((ny, nx, 4, 3))
    reg = np.diag(lam * diag / (ny * nx) + 1e-6)
    for i in range(ny):
        for j in range(nx):
            wt = (ty[:, i][:, None] * tx[:, j][None, :]).reshape(-1) * mv
            xw = x * wt[:, None]
            out[i, j] = np.linalg.solve(xw.T @ x + reg, xw.T @ yv + reg @ a_global)
    out[..., 3, :] -= np.einsum("k,ijkc->ijc", mu, out[..., :3, :])
    return out.reshape(ny, nx, 12)


def test_affine_grid_fit_matches_numpy_reference():
    comp = _texture(48, 64, seed=1)
    # A spatially varying correction (left half warmer): the grid must follow it, the reference too.
    harm = _affine(comp)
    harm[:, :32, 0] += 0.05
    mask = _mask(48, 64)
    mask[10:20, 20:30] = 0.5
    got = lifts.fit_affine_grid(comp, harm, mask, grid=6, lam=0.05, lam_global=0.01)
    ref = _reference_affine_grid(comp, harm, mask, 6, 0.05, 0.01)
    np.testing.assert_allclose(got.data, ref, atol=2e-3)


def test_affine_grid_apply_matches_dense_reference():
    params = corrections.LiftParams("affine-grid", RNG.normal(size=(5, 7, 12)).astype(np.float32))
    full = RNG.random((301, 411, 3), dtype=np.float32)
    coef = cv2.resize(params.data, (411, 301), interpolation=cv2.INTER_LINEAR)
    ref = (np.einsum("hwck,hwk->hwc", coef[..., :9].reshape(301, 411, 3, 3).transpose(0, 1, 3, 2), full)
           + coef[..., 9:])
    got = corrections.apply_affine_grid(params, full)
    np.testing.assert_allclose(got, ref, atol=5e-3)
    box = (17, 290, 33, 400)
    np.testing.assert_allclose(corrections.apply_affine_grid(params, full, box), got[17:290, 33:400], atol=1e-5)


def test_poly_matches_lstsq_reference_without_ridge():
    comp = _texture(40, 50, seed=3)
    harm = np.clip(comp ** 1.5 * 0.9 + 0.05, 0, 1).astype(np.float32)
    mask = np.ones((40, 50), np.float32)
    params = lifts.fit_poly(comp, harm, mask, degree=2, lam=0.0)
    feats = corrections.poly_features(comp.reshape(-1, 3).astype(np.float64) - params.centre, 2)
    ref, *_ = np.linalg.lstsq(feats, harm.reshape(-1, 3).astype(np.float64), rcond=None)
    np.testing.assert_allclose(feats @ params.data, feats @ ref, atol=2e-3)


def test_uint8_frames_and_float_frames_agree():
    full = (_texture(120, 160) * 255).astype(np.uint8)
    low = _low(full.astype(np.float32) / 255, (60, 80))
    m = _mask(60, 80)
    for method in corrections.METHODS:
        params = lifts.fit_lift(method, low, _affine(low), m)
        np.testing.assert_allclose(corrections.apply_lift(params, full), corrections.apply_lift(params, full / np.float32(255)),
                                   atol=1e-5)


@pytest.mark.parametrize("method", corrections.METHODS)
def test_empty_and_flat_persons_are_finite_identity_like(method):
    comp = np.full((32, 32, 3), 0.4, np.float32)
    harm = np.full((32, 32, 3), 0.6, np.float32)
    empty = lifts.fit_lift(method, comp, harm, np.zeros((32, 32), np.float32))
    np.testing.assert_allclose(corrections.apply_lift(empty, comp), comp, atol=1e-6)
    flat = lifts.fit_lift(method, comp, harm, _mask(32, 32))  # zero colour variance: singular X^T X
    out = corrections.apply_lift(flat, comp)
    assert np.isfinite(flat.data).all()
    np.testing.assert_allclose(out[16, 16], 0.6, atol=1e-3)
    assert out.dtype == np.float32


def test_float64_and_bad_inputs_rejected():
    comp = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        lifts.fit_lift("delta", comp.astype(np.float64), comp, comp[..., 0])
    with pytest.raises(ValueError, match="size"):
        lifts.fit_lift("delta", comp, np.zeros((8, 9, 3), np.float32), comp[..., 0])
    with pytest.raises(ValueError, match="unknown lift method"):
        lifts.fit_lift("bicubic", comp, comp, comp[..., 0])
    with pytest.raises(ValueError, match="degree"):
        lifts.fit_poly(comp, comp, comp[..., 0], degree=5)


def test_blend_params_is_an_ema_of_corrections():
    comp = _texture(40, 60)
    m = _mask(40, 60)
    for method in corrections.METHODS:
        a = lifts.fit_lift(method, comp, _affine(comp), m)
        options = {"centre": a.centre} if method == "poly" else {}
        b = lifts.fit_lift(method, comp, np.clip(comp + 0.1, 0, 1), m, **options)
        mixed = corrections.blend_params(a, b, 0.75)
        np.testing.assert_allclose(corrections.apply_lift(mixed, comp, (8, 32, 15, 45)),
                                   0.75 * corrections.apply_lift(a, comp, (8, 32, 15, 45))
                                   + 0.25 * corrections.apply_lift(b, comp, (8, 32, 15, 45)), atol=2e-3)
        assert corrections.blend_params(None, b, 0.75) is b and corrections.blend_params(a, b, 0.0) is b


def test_apply_delta_blend_matches_float_reference():
    """The camera-rate uint8 path equals composite + weight * (saturate(composite + upsampled delta) -
    composite), rounded, within 1 level; untouched where the weight is 0."""
    from engine.corrections import LiftParams, apply_delta_blend

    rng = np.random.default_rng(3)
    composite = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    delta = ((rng.random((18, 32, 3)) - 0.5) * 0.4).astype(np.float32)
    weight = np.zeros((90, 160), np.float32)
    weight[20:80, 30:120] = rng.random((60, 90), dtype=np.float32)
    box = (10, 85, 20, 140)
    got = apply_delta_blend(LiftParams("delta", delta), composite, weight[10:85, 20:140], box)
    up = cv2.resize(delta, (160, 90), interpolation=cv2.INTER_LINEAR)
    corrected = np.clip(np.round(composite.astype(np.float32) + up * 255), 0, 255)
    ref = np.round(composite + weight[..., None] * (corrected - composite))[10:85, 20:140]
    assert got.dtype == np.uint8 and got.shape == (75, 120, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    untouched = weight[10:85, 20:140] == 0
    assert np.array_equal(got[untouched], composite[10:85, 20:140][untouched])


def test_delta_drops_the_networks_lost_texture_but_keeps_the_colour_change():
    """A soft network output (blurred composite + a colour shift) gives a correction that is the colour
    shift, not the composite's texture with a minus sign (which would blur the person at full resolution)."""
    rng = np.random.default_rng(5)
    composite = rng.random((64, 96, 3), dtype=np.float32)  # pure texture
    shift = np.array([0.1, -0.05, 0.02], np.float32)
    harmonized = cv2.GaussianBlur(composite, (0, 0), 3) + shift
    mask = np.ones((64, 96), np.float32)
    smoothed = lifts.fit_delta(composite, harmonized, mask).data
    raw = lifts.fit_delta(composite, harmonized, mask, detail_sigma=0).data
    texture = lambda d: float(np.abs(d - d.mean(axis=(0, 1))).mean())  # noqa: E731
    assert texture(smoothed) < 0.5 * texture(raw)
    np.testing.assert_allclose(smoothed.mean(axis=(0, 1)), shift, atol=0.01)


@pytest.mark.parametrize("method", ["delta", "affine-grid"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_apply_person_corrects_the_person_then_composites(method, strength):
    """m * T_s(foreground) + (1 - m) * background within 1 level (T_s: T blended with the identity by the
    strength); the background bit for bit where m is 0; the edge gets the inside's correction."""
    from engine.corrections import LiftParams, delta_corrected
    from engine.recolour import affine_corrected_fast, apply_person

    rng = np.random.default_rng(5)
    foreground = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    if method == "delta":
        params = LiftParams("delta", ((rng.random((18, 32, 3)) - 0.5) * 0.4).astype(np.float32))
    else:
        grid = np.tile(np.float32([0.8, 0.1, 0, 0, 0.9, 0, 0.05, 0, 1.1, 0.05, -0.02, 0.01]), (6, 8, 1))
        params = LiftParams("affine-grid", (grid + rng.normal(0, 0.02, grid.shape)).astype(np.float32))
    box = (10, 85, 20, 140)
    mask = rng.random((75, 120), dtype=np.float32)
    mask[:10] = 0.0
    got = apply_person(params, foreground, background, mask, strength, box)
    corrected = (delta_corrected if method == "delta" else affine_corrected_fast)(params, foreground, box)
    part, back = foreground[10:85, 20:140].astype(np.float32), background[10:85, 20:140].astype(np.float32)
    person = np.round(part + strength * (corrected - part))
    ref = np.round(mask[..., None] * person + (1 - mask[..., None]) * back)
    assert got.dtype == np.uint8 and got.shape == (75, 120, 3)
    assert np.abs(got.astype(int) - ref).max() <= 2
    assert np.array_equal(got[:10], background[10:20, 20:140])
    with pytest.raises(ValueError, match="'delta' or 'affine-grid'"):
        apply_person(LiftParams("poly", np.zeros((10, 3), np.float32), 2), foreground, background, mask, 1.0, box)


def test_the_camera_rate_affine_path_is_close_to_the_exact_one():
    """affine_corrected_fast (the grid's mean gain on the detail, the rest at 1/4 resolution) against the
    exact per-pixel 3x4 product, on a real photo: exact for one global transform (within rounding); for a
    grid that varies over the frame, off by about a level on average."""
    from skimage import data

    from engine.corrections import LiftParams, affine_corrected
    from engine.recolour import affine_corrected_fast

    photo = np.ascontiguousarray(data.astronaut()[:, 64:448])  # 512 x 384 RGB uint8
    base = np.float32([0.85, 0.05, 0.0, 0.02, 0.9, 0.0, 0.0, 0.05, 1.1, 0.06, -0.03, 0.02])
    box = (20, 500, 30, 370)
    flat = LiftParams("affine-grid", np.tile(base, (6, 8, 1)))
    assert np.abs(affine_corrected_fast(flat, photo, box).astype(int)
                  - affine_corrected(flat, photo, box).astype(int)).max() <= 1
    yy, xx = np.mgrid[0:6, 0:8].astype(np.float32)
    ramp = (0.08 * (xx / 7 - 0.5) + 0.05 * (yy / 5 - 0.5))[..., None] * np.float32([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1])
    varying = LiftParams("affine-grid", (np.tile(base, (6, 8, 1)) + ramp).astype(np.float32))
    exact = affine_corrected(varying, photo, box).astype(int)
    error = np.abs(affine_corrected_fast(varying, photo, box).astype(int) - exact)
    assert error.mean() < 1.0 and np.percentile(error, 99) <= 4, (error.mean(), np.percentile(error, 99))
    assert np.abs(exact - photo[20:500, 30:370]).mean() > 10  # a real correction, not the identity


def test_reference_light_gain_matches_a_per_pixel_reference():
    rng = np.random.default_rng(3)
    image = rng.random((12, 16, 3)).astype(np.float32)
    mask = np.zeros((12, 16), np.float32)
    mask[3:9, 5:11] = 0.8  # the person (>= 0.5): left out of both means
    reference = np.zeros((12, 16), np.float32)
    reference[:, :6] = 1.0  # the region, overlapping the person's left columns
    gain = corrections.reference_light_gain(image, mask, reference, 0.5)
    region, whole = [], []
    for y in range(12):
        for x in range(16):
            if mask[y, x] < 0.5:
                whole.append(image[y, x])
                if reference[y, x] > 0:
                    region.append(image[y, x])
    eps = 1 / 255
    expected = np.clip(((np.mean(region, 0) + eps) / (np.mean(whole, 0) + eps)) ** 0.5, 0.5, 2.0)
    np.testing.assert_allclose(gain, expected, rtol=1e-5)
    assert np.array_equal(corrections.reference_light_gain(image, mask, reference, 0.0), np.ones(3, np.float32))
    assert np.array_equal(corrections.reference_light_gain(image, mask, np.zeros_like(mask), 0.5), np.ones(3, np.float32))
    red = np.zeros_like(image)
    red[..., 0], red[:, 8:, 2] = 1.0, 1.0  # right half magenta, left half red: the red region has no blue
    assert tuple(corrections.reference_light_gain(red, np.zeros_like(mask), reference, 1.0)[[0, 2]]) == (1.0, 0.5)


def test_scaled_grid_outputs_equal_the_grid_then_the_gain():
    rng = np.random.default_rng(4)
    grid = (corrections.IDENTITY12 + rng.normal(0, 0.1, (5, 6, 12))).astype(np.float32)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    gain = np.array([1.3, 0.9, 0.6], np.float32)
    scaled = corrections.LiftParams("affine-grid", corrections.scale_grid_outputs(grid, gain))
    plain = corrections.LiftParams("affine-grid", grid)
    np.testing.assert_allclose(corrections.apply_affine_grid(scaled, image), corrections.apply_affine_grid(plain, image) * gain,
                               rtol=1e-5, atol=1e-3)


def test_contrast_gain_is_the_grids_stretch_of_the_persons_grey_contrast():
    from engine.corrections import LiftParams
    from engine.recolour import contrast_gain

    image = _texture(60, 90, smooth=True)
    mask = np.zeros((60, 90), np.float32)
    mask[10:55, 20:70] = 1
    # A global transform that stretches contrast by 1.4 (nothing clips: the texture spans 0.15..0.85).
    stretch = np.float32([1.4, 0, 0, 0, 1.4, 0, 0, 0, 1.4, -0.2, -0.2, -0.2])
    params = LiftParams("affine-grid", np.tile(stretch, (4, 6, 1)))
    small = cv2.resize(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), (30, 20), interpolation=cv2.INTER_AREA)
    person = cv2.resize(mask, (30, 20), interpolation=cv2.INTER_AREA) > 0.5
    grey = small.astype(np.float32) @ corrections.GREY
    after = 1.4 * grey - 0.2 * 255  # the NumPy reference of the same stretch
    expected = np.clip(after[person].std() / grey[person].std(), 0.5, 2.0)
    assert contrast_gain(params, image, mask, 3) == pytest.approx(expected, rel=0.02)
    identity = LiftParams("affine-grid", np.tile(np.float32([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]), (4, 6, 1)))
    assert contrast_gain(identity, image, mask, 3) == pytest.approx(1.0, abs=0.01)
    assert contrast_gain(params, image, np.zeros_like(mask), 3) == 1.0  # nobody: nothing to measure


def test_kept_detail_follows_the_detail_gain_and_the_gain_is_averaged_over_time():
    from engine.corrections import LiftParams, blend_params
    from engine.recolour import affine_corrected_fast

    photo = (np.clip(_texture(96, 128), 0, 1) * 255).astype(np.uint8)
    grid = np.tile(np.float32([0.9, 0, 0, 0, 0.9, 0, 0, 0, 0.9, 0.05, 0.05, 0.05]), (4, 6, 1))
    kept, boosted = LiftParams("affine-grid", grid), LiftParams("affine-grid", grid, detail_gain=1.5)
    box, scale = (0, 96, 0, 128), 4
    base = affine_corrected_fast(kept, photo, box, scale=scale, keep_detail=True).astype(np.float32)
    more = affine_corrected_fast(boosted, photo, box, scale=scale, keep_detail=True).astype(np.float32)
    # The coarse part is the same; the texture (the image minus its 1/scale version) is 1.5x as strong.
    coarse = cv2.resize(cv2.resize(photo, (32, 24), interpolation=cv2.INTER_AREA), (128, 96),
                        interpolation=cv2.INTER_LINEAR).astype(np.float32)
    texture = photo.astype(np.float32) - coarse
    inner = (slice(8, -8), slice(8, -8))
    unclipped = (more > 2) & (more < 253)
    np.testing.assert_allclose((more - base)[inner][unclipped[inner]], 0.5 * texture[inner][unclipped[inner]], atol=1.01)
    mixed = blend_params(kept, boosted, 0.75)
    assert mixed.detail_gain == pytest.approx(0.75 * 1.0 + 0.25 * 1.5)
