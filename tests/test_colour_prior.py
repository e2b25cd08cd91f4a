"""engine.colour_prior (features, the MLP in NumPy, composing transforms), trainer.prior (drawing samples,
the fit) and the Harmonizer's use of the shipped prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import colour_prior as cp
from engine.corrections import LiftParams, apply_affine_grid
from trainer.recolor import composite as recolour_composite


def _random_prior(rng, hidden=16) -> cp.ColourPrior:
    f = cp.FEATURES
    return cp.ColourPrior({"mean": rng.normal(0, 1, f), "scale": rng.uniform(0.5, 2, f),
                           "w1": rng.normal(0, 0.1, (hidden, f)), "b1": rng.normal(0, 0.1, hidden),
                           "w2": rng.normal(0, 0.1, (hidden, hidden)), "b2": rng.normal(0, 0.1, hidden),
                           "w3": rng.normal(0, 0.1, (12, hidden)), "b3": rng.normal(0, 0.1, 12)})


def _picture(rng, h=40, w=56):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.clip(rng.uniform(0.2, 0.8, 3) + 0.3 * xx[..., None] - 0.2 * yy[..., None]
                    + rng.normal(0, 0.03, (h, w, 3)), 0, 1).astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    mask[8:36, 16:40] = 1.0
    return image, mask


def test_features_have_the_documented_size_and_read_uint8_like_float():
    rng = np.random.default_rng(0)
    image, mask = _picture(rng)
    f = cp.colour_features(image, mask)
    assert f.shape == (cp.FEATURES,) and np.isfinite(f).all()
    as_uint8 = cp.colour_features(np.round(image * 255).astype(np.uint8), (mask * 255).astype(np.uint8))
    np.testing.assert_allclose(as_uint8, cp.colour_features(np.round(image * 255) / 255, mask), atol=1e-6)
    # The person's mean red is the first feature; the reference's the first of the second block.
    np.testing.assert_allclose(f[0], image[mask >= 0.5][:, 0].mean(), atol=1e-9)
    np.testing.assert_allclose(f[cp.REGION_FEATURES], image[mask < 0.5][:, 0].mean(), atol=1e-9)


def test_features_of_an_empty_region_or_a_flat_picture_are_finite():
    flat = np.full((16, 16, 3), 0.5, np.float32)
    for mask in (np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32)):
        assert np.isfinite(cp.colour_features(flat, mask)).all()


def test_numpy_mlp_equals_torch_with_tanh_gelu():
    rng = np.random.default_rng(1)
    prior = _random_prior(rng)
    t = prior.tensors
    net = torch.nn.Sequential(torch.nn.Linear(cp.FEATURES, 16), torch.nn.GELU(approximate="tanh"),
                              torch.nn.Linear(16, 16), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(16, 12))
    with torch.no_grad():
        for layer, k in zip((net[0], net[2], net[4]), (1, 2, 3)):
            layer.weight.copy_(torch.from_numpy(t[f"w{k}"]))
            layer.bias.copy_(torch.from_numpy(t[f"b{k}"]))
    features = rng.normal(0, 1, (5, cp.FEATURES))
    expected = net(torch.from_numpy((features - t["mean"]) / t["scale"]).float()).detach().numpy()
    np.testing.assert_allclose(prior.change(features), expected, atol=1e-5)


def test_a_prior_with_a_zero_last_layer_is_the_identity():
    rng = np.random.default_rng(2)
    prior = _random_prior(rng)
    prior.tensors["w3"][:] = 0
    prior.tensors["b3"][:] = 0
    image, mask = _picture(rng)
    np.testing.assert_allclose(prior.matrix(image, mask), cp.IDENTITY)
    np.testing.assert_allclose(cp.recolour(image, mask, cp.IDENTITY), image, atol=1e-7)


def test_compose_is_the_prior_then_the_grid():
    """Applying compose(M, grid) to x equals applying the grid to x re-coloured by M (inside [0, 1])."""
    rng = np.random.default_rng(3)
    image = rng.uniform(0.3, 0.6, (24, 32, 3)).astype(np.float32)
    matrix = cp.IDENTITY + rng.normal(0, 0.05, (4, 3))
    grid = (np.tile(np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], np.float32), (3, 4, 1))
            + rng.normal(0, 0.05, (3, 4, 12)).astype(np.float32))
    first = cp.recolour(image, np.ones(image.shape[:2], np.float32), matrix)
    assert 0 < first.min() and first.max() < 1  # no clipping: the identity is exact
    expected = apply_affine_grid(LiftParams("affine-grid", grid), first)
    got = apply_affine_grid(LiftParams("affine-grid", cp.compose(matrix, grid)), image)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_recolour_leaves_the_background_and_blends_the_soft_edge():
    rng = np.random.default_rng(4)
    image, _ = _picture(rng)
    mask = np.zeros(image.shape[:2], np.float32)
    mask[:, 20:] = 1.0
    mask[:, 20] = 0.5
    matrix = cp.IDENTITY * 0.5  # halves every colour
    out = cp.recolour(image, mask, matrix)
    np.testing.assert_array_equal(out[:, :20], image[:, :20])
    np.testing.assert_allclose(out[:, 21:], image[:, 21:] * 0.5, atol=1e-6)
    np.testing.assert_allclose(out[:, 20], image[:, 20] * 0.75, atol=1e-6)


def test_save_load_round_trip_and_clear_errors(tmp_path):
    rng = np.random.default_rng(5)
    prior = _random_prior(rng)
    path = prior.save(tmp_path / "p.safetensors", {"note": "test"})
    loaded = cp.ColourPrior.load(path)
    features = rng.normal(0, 1, cp.FEATURES)
    np.testing.assert_allclose(loaded.change(features), prior.change(features), atol=1e-4)
    with pytest.raises(FileNotFoundError, match="colour prior not found"):
        cp.ColourPrior.load(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        cp.ColourPrior.load(tmp_path / "bad.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a colour prior"):
        cp.ColourPrior.load(tmp_path / "other.safetensors")
    broken = dict(prior.tensors, w1=np.full_like(prior.tensors["w1"], np.nan))
    with pytest.raises(ValueError, match="not finite"):
        cp.ColourPrior(broken)
    with pytest.raises(ValueError, match="shape"):
        cp.ColourPrior(dict(prior.tensors, mean=np.zeros(3)))


def test_the_shipped_prior_harmonizes_unseen_photos(shared_data):
    """FFHQH composites of photos with published masks (humanseg is never trained on): the prior's one
    transform brings the person closer to the truth than the untouched composite, on average by > 1 dB."""
    from conftest import photos_with_published_masks

    from trainer.prior import shrink

    prior = cp.load_prior()
    gains = []
    for k, (photo, mask) in enumerate(photos_with_published_masks(shared_data, per_group=4)):
        photo, m = shrink(photo), shrink(mask.astype(np.float32) / 255.0)
        comp = recolour_composite(photo, m, np.random.default_rng(k))
        out = cp.recolour(comp.astype(np.float32) / 255, m, prior.matrix(comp, m))
        real = photo.astype(np.float32) / 255
        before = np.mean((comp.astype(np.float32) / 255 - real) ** 2)
        after = np.mean((np.round(out * 255) / 255 - real) ** 2)
        gains.append(10 * np.log10(before / after))
    assert np.mean(gains) > 1.0, gains


def test_harmonizer_runs_the_network_behind_the_prior_its_weights_name():
    from engine import Harmonizer

    shipped = Harmonizer(sharpness=False)
    assert shipped._model.config.colour_prior, "the shipped weights were trained behind a colour prior"
    assert shipped._prior is not None
    bare = Harmonizer(sharpness=False, prior=False)
    assert bare._prior is None
    rng = np.random.default_rng(6)
    image, mask = _picture(rng, 64, 96)
    comp = np.round(image * 255).astype(np.uint8)
    a, b = shipped.harmonize(comp, mask), bare.harmonize(comp, mask)
    assert a.shape == b.shape == comp.shape and np.abs(a.astype(int) - b).max() > 0
    # The background is untouched either way.
    np.testing.assert_array_equal(a[mask == 0], comp[mask == 0])


def test_a_model_without_a_prior_gets_none_and_a_missing_prior_is_named(tmp_path):
    from engine.phnet import create_model
    from engine.weights import load_weights, save_weights

    model = create_model("phnet-xs", output="affine")
    assert cp.prior_for(model) is None
    model.config.colour_prior = "nowhere.safetensors"
    path = save_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        cp.prior_for(load_weights(path))


@pytest.mark.parametrize("case", ["person", "no person", "no background", "flat"])
def test_torch_features_match_numpy(case):
    """The device twin (vcam.gpu_frame runs it) against the NumPy reference, empty regions included."""
    rng = np.random.default_rng(7)
    image, mask = _picture(rng, 36, 52)
    if case == "no person":
        mask[:] = 0
    elif case == "no background":
        mask[:] = 1
    elif case == "flat":
        image[:] = 0.4
        image[:2, :2] = (0, 1, 0.5)  # clipped values and a near-flat region
    t_image = torch.from_numpy(image).permute(2, 0, 1)[None]
    t_mask = torch.from_numpy(mask)[None, None]
    got = cp.colour_features_torch(t_image.double(), t_mask.double()).numpy()
    np.testing.assert_allclose(got, cp.colour_features(image, mask), atol=1e-9)
    got32 = cp.colour_features_torch(t_image, t_mask).numpy()
    np.testing.assert_allclose(got32, cp.colour_features(image, mask), atol=2e-5)


def test_torch_prior_recolour_and_compose_match_numpy():
    rng = np.random.default_rng(8)
    prior = _random_prior(rng)
    image, mask = _picture(rng)
    t_image = torch.from_numpy(image).permute(2, 0, 1)[None]
    t_mask = torch.from_numpy(mask)[None, None]
    matrix = cp.TorchPrior(prior, "cpu", torch.float64).matrix(t_image.double(), t_mask.double()).numpy()
    np.testing.assert_allclose(matrix, prior.matrix(image, mask), atol=1e-9)
    m32 = torch.from_numpy(matrix).float()
    np.testing.assert_allclose(cp.recolour_torch(t_image, t_mask, m32)[0].permute(1, 2, 0).numpy(),
                               cp.recolour(image, mask, matrix), atol=1e-6)
    grid = rng.normal(0, 0.3, (2, 3, 12)).astype(np.float32)
    t_grid = torch.from_numpy(grid).permute(2, 0, 1)[None]
    np.testing.assert_allclose(cp.compose_torch(m32, t_grid)[0].permute(1, 2, 0).numpy(),
                               cp.compose(matrix, grid), atol=1e-5)


def test_region_features_take_numpys_percentiles_from_histograms_on_uint8_colours():
    """The network-size picture's colours are uint8 levels: region_features reads their percentiles from
    histograms (engine.order_stats), and they must be np.percentile's bit for bit (the prior was trained
    on those)."""
    from engine import order_stats

    rng = np.random.default_rng(3)
    values = (rng.integers(0, 256, (5000, 3)).astype(np.float32) * np.float32(1 / 255))  # as _to_network_size
    rgb = values.T.astype(np.float64)
    assert order_stats.lattice_codes(rgb) is not None  # the histogram path is the one taken
    rows = np.concatenate([rgb, cp.OPPONENT.T @ rgb, (rgb.max(0) - rgb.min(0))[None]])
    expected = np.percentile(rows, cp.PERCENTILES, axis=1)
    feats = cp.region_features(values)
    np.testing.assert_array_equal(feats[6:33], expected[:, 0:3].ravel())
    np.testing.assert_array_equal(feats[39:66], expected[:, 3:6].ravel())
    chroma = [cp.PERCENTILES.index(q) for q in cp.CHROMA_PERCENTILES]
    np.testing.assert_array_equal(feats[-3:], expected[chroma, 6])
