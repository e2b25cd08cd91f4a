"""engine.gate (features, the MLP in NumPy, scaling a correction), trainer.gate (the exact gain of a blend,
the fit) and the Harmonizer's use of a gate: amount 0 leaves the person untouched, 1 changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import colour_prior as cp
from engine import gate as gm
from engine.harmonizer import Harmonizer
from trainer import gate as tg
from trainer.metrics import mse, psnr_from_mse


def _random_gate(rng, hidden=8, max_amount=1.0) -> gm.Gate:
    f = gm.FEATURES
    return gm.Gate({"mean": rng.normal(0, 1, f), "scale": rng.uniform(0.5, 2, f),
                    "w1": rng.normal(0, 0.1, (hidden, f)), "b1": rng.normal(0, 0.1, hidden),
                    "w2": rng.normal(0, 0.1, (hidden, hidden)), "b2": rng.normal(0, 0.1, hidden),
                    "w3": rng.normal(0, 0.5, (1, hidden)), "b3": rng.normal(0, 0.1, 1)}, max_amount)


def _scene(rng, h=48, w=64):
    """A soft-lit picture with a person-shaped block whose colours fit the rest, and its mask."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.clip(0.45 + 0.3 * xx[..., None] - 0.2 * yy[..., None] + rng.normal(0, 0.04, (h, w, 3)), 0, 1)
    image = np.round(image * 255).astype(np.uint8)
    mask = np.zeros((h, w), np.float32)
    mask[10:44, 20:44] = 1.0
    return image, mask


class _Fixed:
    """A gate that always answers `amount` (and remembers what it saw)."""

    def __init__(self, amount: float):
        self.amount, self.seen = amount, None

    def __call__(self, features):
        self.seen = np.asarray(features)
        return self.amount


def test_gate_features_compare_the_corrected_person_with_the_reference_and_with_itself():
    rng = np.random.default_rng(0)
    image, mask = _scene(rng)
    x = image.astype(np.float64) / 255
    features = cp.colour_features(x, mask)
    unchanged = gm.gate_features(features, x, mask)
    assert unchanged.shape == (gm.FEATURES,) and np.isfinite(unchanged).all()
    np.testing.assert_allclose(unchanged[:cp.FEATURES], features)
    r = cp.REGION_FEATURES
    # Left as it was: the person less itself is zero, the person less the reference is the prior's own
    # difference block.
    np.testing.assert_allclose(unchanged[cp.FEATURES + r:], 0, atol=1e-12)
    np.testing.assert_allclose(unchanged[cp.FEATURES:cp.FEATURES + r], features[2 * r:3 * r], atol=1e-12)
    brighter = np.clip(x * 1.2, 0, 1)
    moved = gm.gate_features(features, brighter, mask)
    assert moved[cp.FEATURES + r] > 0.05  # the person's mean red went up
    with pytest.raises(ValueError, match="colour features"):
        gm.gate_features(features[:10], x, mask)


def test_numpy_gate_equals_torch_and_stays_in_its_range():
    rng = np.random.default_rng(1)
    gate = _random_gate(rng, max_amount=1.25)
    t = gate.tensors
    gelu = torch.nn.GELU(approximate="tanh")
    net = torch.nn.Sequential(torch.nn.Linear(gm.FEATURES, 8), gelu, torch.nn.Linear(8, 8), gelu,
                              torch.nn.Linear(8, 1)).double()
    with torch.no_grad():
        for layer, k in zip((net[0], net[2], net[4]), (1, 2, 3)):
            layer.weight.copy_(torch.from_numpy(t[f"w{k}"]))
            layer.bias.copy_(torch.from_numpy(t[f"b{k}"]))
    features = rng.normal(0, 3, (6, gm.FEATURES))
    standard = torch.from_numpy((features - t["mean"]) / t["scale"])
    with torch.no_grad():
        expected = 1.25 * torch.sigmoid(net(standard))[:, 0].numpy()
    np.testing.assert_allclose(gate(features), expected, rtol=1e-9)
    assert isinstance(gate(features[0]), float)
    assert 0 <= gate(features[0] * 1e6) <= 1.25  # saturates, no overflow


def test_gate_file_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    gate = _random_gate(rng, max_amount=0.9)
    path = gate.save(tmp_path / "g.safetensors", {"note": "test"})
    loaded = gm.Gate.load(path)
    features = rng.normal(0, 1, (3, gm.FEATURES))
    np.testing.assert_allclose(loaded(features), gate(features), rtol=1e-5)
    assert loaded.max_amount == 0.9
    with pytest.raises(FileNotFoundError, match="gate not found"):
        gm.Gate.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable"):
        gm.Gate.load(tmp_path / "junk.safetensors")
    prior = cp.ColourPrior.load()  # a real safetensors file of another kind
    other = prior.save(tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="not a harmony gate"):
        gm.Gate.load(other)
    bad = dict(gate.tensors, w1=np.full_like(gate.tensors["w1"], np.nan))
    with pytest.raises(ValueError, match="not finite"):
        gm.Gate(bad)


def test_scale_correction_moves_parameters_towards_the_identity():
    identity = np.asarray(cp.IDENTITY, np.float32).reshape(12)
    data = np.random.default_rng(3).normal(0, 1, (4, 5, 12)).astype(np.float32)
    np.testing.assert_array_equal(gm.scale_correction(data, identity, 0.0), np.broadcast_to(identity, data.shape))
    np.testing.assert_allclose(gm.scale_correction(data, identity, 1.0), data)
    np.testing.assert_allclose(gm.scale_correction(data, identity, 0.25), identity + 0.25 * (data - identity),
                               rtol=1e-6)


def test_a_gate_that_says_nothing_to_do_leaves_the_person_exactly_as_they_are():
    rng = np.random.default_rng(4)
    image, mask = _scene(rng, 96, 128)
    image[mask > 0] = np.clip(image[mask > 0] * np.array([1.4, 1.0, 0.7]), 0, 255).astype(np.uint8)  # a cast
    zero = _Fixed(0.0)
    with Harmonizer(gate=zero) as h0, Harmonizer(gate=_Fixed(1.0)) as h1, Harmonizer(gate=False) as plain:
        correction = h0.estimate(image, mask)
        assert correction.amount == 0.0 and zero.seen.shape == (gm.FEATURES,)
        np.testing.assert_array_equal(h0.apply(correction, image, mask), image)
        # amount 1 is the ungated Harmonizer, bit for bit
        np.testing.assert_array_equal(h1.harmonize(image, mask), plain.harmonize(image, mask))
        assert not np.array_equal(plain.harmonize(image, mask), image)


def test_a_gate_is_found_beside_the_weights_it_was_fitted_for(tmp_path):
    """No gate ships (docs/model_card.md, "Do no harm"): Harmonizer() applies every correction whole. A
    gate saved as <weights>.gate.safetensors beside a copy of the weights is picked up by default."""
    import shutil

    from engine.weights import DEFAULT_WEIGHTS

    assert not gm.GATE_PATH.is_file(), "a shipped gate needs the model card's real-video check first"
    rng = np.random.default_rng(8)
    image, mask = _scene(rng, 96, 128)
    with Harmonizer() as shipped:
        assert shipped._gate is None and shipped.estimate(image, mask).amount == 1.0
    for f in DEFAULT_WEIGHTS.parent.glob(DEFAULT_WEIGHTS.stem + ".*"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(DEFAULT_WEIGHTS.parent / "colour_prior.safetensors", tmp_path / "colour_prior.safetensors")
    _random_gate(rng, max_amount=0.5).save(tmp_path / f"{DEFAULT_WEIGHTS.stem}.gate.safetensors")
    with Harmonizer(weights=tmp_path / DEFAULT_WEIGHTS.name) as h:
        assert isinstance(h._gate, gm.Gate) and h._gate.max_amount == 0.5
        assert 0.0 < h.estimate(image, mask).amount <= 0.5


def test_trainer_gains_are_the_psnr_gain_of_the_blended_picture():
    rng = np.random.default_rng(5)
    real = rng.integers(0, 256, (20, 30, 3)).astype(np.float64)
    comp = np.clip(real + rng.normal(0, 20, real.shape), 0, 255)
    out = np.clip(comp + 0.7 * (real - comp) + rng.normal(0, 5, real.shape), 0, 255)
    r, d = real - comp, out - comp
    sums = np.array([[(r * r).mean(), (r * d).mean(), (d * d).mean()]])
    for a in (0.0, 0.5, 1.0, 1.3):
        blended = comp + a * d
        expected = psnr_from_mse(mse(blended, real)) - psnr_from_mse(mse(comp, real))
        np.testing.assert_allclose(tg.gains(sums, np.array([a]))[0], expected, atol=1e-9)


def test_the_fit_learns_to_act_where_the_correction_helps_and_not_where_it_harms():
    rng = np.random.default_rng(6)
    n = 512
    helps = rng.random(n) < 0.5
    features = rng.normal(0, 1, (n, gm.FEATURES)).astype(np.float32)
    features[:, 0] = np.where(helps, 2.0, -2.0)  # what tells the two apart
    rr = rng.uniform(50, 500, n)
    # helps: d = r (the whole correction is right); harms: d is as large but orthogonal to r
    sums = np.stack([rr, np.where(helps, rr, 0.0), rr], 1)
    gate = tg.fit(features, sums, hidden=8, epochs=40, dropout=0.0, weight_decay=0.0, batch=64, lr=1e-2,
                  progress=False)
    amount = gate(features)
    assert amount[helps].mean() > 0.8 and amount[~helps].mean() < 0.2


def test_torch_gate_equals_the_numpy_gate():
    """The GPU frame path's twin (engine.gate.TorchGate), on the CPU torch device, float64 and float32."""
    rng = np.random.default_rng(7)
    gate = _random_gate(rng, max_amount=1.0)
    image, mask = _scene(rng)
    x = image.astype(np.float64) / 255
    corrected = np.clip(x * np.array([1.1, 0.95, 0.9]) + 0.02, 0, 1)
    features = cp.colour_features(x, mask)
    expected = gate(gm.gate_features(features, corrected, mask))
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        twin = gm.TorchGate(gate, "cpu", dtype)
        img_t = torch.from_numpy(x).permute(2, 0, 1)[None].to(dtype)
        mask_t = torch.from_numpy(mask)[None, None].to(dtype)
        corr_t = torch.from_numpy(corrected).permute(2, 0, 1)[None].to(dtype)
        features_t = cp.colour_features_torch(img_t, mask_t, constants=twin.constants)
        np.testing.assert_allclose(twin.features(features_t, corr_t, mask_t).double().numpy(),
                                   gm.gate_features(features, corrected, mask), atol=tol * 10)
        assert float(twin.amount(features_t, corr_t, mask_t)) == pytest.approx(expected, abs=tol)
