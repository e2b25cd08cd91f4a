"""PN statistics (engine/pn.py) against a NumPy reference, and their numerical guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import pn

EPS, PATCH_TAU, REGION_TAU, VAR_EPS = 1e-6, 0.02, 1e-3, 1e-5



def masked_sums(x, weight, grid):
    """One region's area-normalised [S0; S1; S2] -> (B, 1+2C, grid^2): pn.region_sums per region."""
    wx = weight * x
    return pn.patch_sums(torch.cat([weight, wx, wx * x], dim=1), grid)


def transfer_terms(x, fg, ref, alpha, beta, var_eps):
    """(F_glob, F_loc, B_loc) of pn.transfer_coefficients evaluated on x (each shaped like x)."""
    return tuple(scale * x + shift for scale, shift in pn.transfer_coefficients(fg, ref, alpha, beta, var_eps))

def reference_sums(x: np.ndarray, weight: np.ndarray, grid: int) -> np.ndarray:
    """Loop-based [S0; S1; S2] per patch, divided by the nominal patch area: (B, 1+2C, G*G)."""
    batch, channels, h, w = x.shape
    rows = np.floor(np.arange(h) * grid / h).astype(int)
    cols = np.floor(np.arange(w) * grid / w).astype(int)
    out = np.zeros((batch, 1 + 2 * channels, grid * grid))
    area = h * w / grid**2
    for gy in range(grid):
        for gx in range(grid):
            sel = np.ix_(rows == gy, cols == gx)
            for b in range(batch):
                m = weight[b, 0][sel]
                out[b, 0, gy * grid + gx] = m.sum() / area
                for c in range(channels):
                    v = x[b, c][sel]
                    out[b, 1 + c, gy * grid + gx] = (m * v).sum() / area
                    out[b, 1 + channels + c, gy * grid + gx] = (m * v * v).sum() / area
    return out


def reference_moments(sums: np.ndarray):
    """NumPy version of pn.moments in float64: (patch_mean, patch_var, mean, var, coverage)."""
    channels = (sums.shape[1] - 1) // 2
    s0, s1, s2 = sums[:, :1], sums[:, 1 : 1 + channels], sums[:, 1 + channels :]
    g0, g1, g2 = s0.mean(-1), s1.mean(-1), s2.mean(-1)
    mean = g1 / (g0 + EPS)
    var = np.maximum(g2 / (g0 + EPS) - mean**2, 0)
    pmean = s1 / (s0 + EPS)
    pvar = np.maximum(s2 / (s0 + EPS) - pmean**2, 0)
    trust = s0 / (s0 + PATCH_TAU)
    pmean = trust * pmean + (1 - trust) * mean[..., None]
    pvar = trust * pvar + (1 - trust) * var[..., None]
    return pmean, pvar, mean, var, g0


def test_patch_membership_matches_floor_rule_for_non_divisible_sizes():
    for n, grid in [(7, 3), (8, 5), (24, 4), (5, 5), (3, 5), (40, 3)]:
        got = pn.patch_membership(torch.ones(n), grid).numpy()
        expected = np.floor(np.arange(n) * grid / n).astype(int)
        assert got.shape == (grid, n)
        np.testing.assert_array_equal(got.argmax(0), expected)
        np.testing.assert_array_equal(got.sum(0), np.ones(n))  # every position in exactly one patch


@pytest.mark.parametrize(
    "shape,grid", [((2, 3, 8, 8), 3), ((1, 4, 24, 40), 5), ((2, 2, 13, 7), 4), ((1, 1, 6, 6), 1)]
)
def test_masked_sums_match_numpy_reference(shape, grid):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    weight = rng.uniform(size=(shape[0], 1, *shape[2:])).astype(np.float32)
    weight[:, :, : shape[2] // 2, : shape[3] // 2] = 0  # empty patches in one corner
    got = masked_sums(torch.from_numpy(x), torch.from_numpy(weight), grid).numpy()
    np.testing.assert_allclose(got, reference_sums(x, weight, grid), rtol=1e-5, atol=1e-5)


def test_global_sums_are_the_mean_of_patch_sums():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(1, 2, 13, 21)).astype(np.float32))
    weight = torch.from_numpy(rng.uniform(size=(1, 1, 13, 21)).astype(np.float32))
    sums = masked_sums(x, weight, 4)
    total = torch.cat([weight.sum((2, 3)), (weight * x).sum((2, 3)), (weight * x * x).sum((2, 3))], 1) / (
        13 * 21
    )
    torch.testing.assert_close(sums.mean(-1), total, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["random", "empty_patches", "all_zero", "all_one", "constant_x"])
def test_moments_match_numpy_reference(case):
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=(2, 3, 16, 24)).astype(np.float32)
    weight = rng.uniform(size=(2, 1, 16, 24)).astype(np.float32)
    if case == "empty_patches":
        weight[:, :, :, :12] = 0
    elif case == "all_zero":
        weight[:] = 0
    elif case == "all_one":
        weight[:] = 1
    elif case == "constant_x":
        x[:] = 0.7
    sums = masked_sums(torch.from_numpy(x), torch.from_numpy(weight), 3)
    got = pn.moments(sums.double(), EPS, PATCH_TAU)
    expected = reference_moments(reference_sums(x, weight, 3))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-4, atol=1e-5)
    if case == "empty_patches":
        # A patch with no coverage takes exactly the region's global moments.
        np.testing.assert_allclose(got.patch_mean[:, :, 0].numpy(), got.mean.numpy(), rtol=1e-6)
    if case == "constant_x":
        np.testing.assert_allclose(got.patch_mean.numpy(), 0.7, rtol=1e-4)
        assert float(got.var.max()) < 1e-5


def test_empty_reference_falls_back_to_identity_transfer():
    x = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    reference = torch.zeros_like(mask)  # nothing to match to
    stats = pn.region_sums(x, mask, reference, 3)
    fg, ref = pn.region_moments(stats, 3, 3, EPS, PATCH_TAU, REGION_TAU)
    torch.testing.assert_close(ref.mean, fg.mean)
    torch.testing.assert_close(ref.var, fg.var)
    alpha, beta = torch.full((3, 9), 1 / 9), torch.ones(3, 9)
    f_glob, _, _ = transfer_terms(x, fg, ref, alpha, beta, VAR_EPS)
    torch.testing.assert_close(f_glob, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["empty", "full", "one_pixel", "constant", "random"])
def test_transfer_outputs_and_gradients_are_finite(case):
    torch.manual_seed(0)
    x = torch.rand(2, 4, 16, 24)
    mask = (torch.rand(2, 1, 16, 24) > 0.5).float()
    if case == "empty":
        mask.zero_()
    elif case == "full":
        mask.fill_(1)
    elif case == "one_pixel":
        mask.zero_()
        mask[:, :, 3, 5] = 1
    elif case == "constant":
        x.fill_(0.25)
    x.requires_grad_(True)
    mask.requires_grad_(True)
    alpha = torch.full((4, 16), 1 / 16, requires_grad=True)
    beta = torch.ones(4, 16, requires_grad=True)
    stats = pn.ema(
        torch.zeros(2, pn.stats_size(4, 4)), pn.region_sums(x, mask, 1 - mask, 4), torch.tensor([0.3])
    )
    fg, ref = pn.region_moments(stats, 4, 4, EPS, PATCH_TAU, REGION_TAU)
    terms = transfer_terms(x, fg, ref, alpha, beta, VAR_EPS)
    out = sum(t * mask + t * (1 - mask) for t in terms)
    assert torch.isfinite(out).all()
    (out.square().mean()).backward()
    for tensor in (x, mask, alpha, beta):
        assert torch.isfinite(tensor.grad).all()


def test_stats_size_counts_both_regions():
    x = torch.rand(1, 5, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    assert pn.region_sums(x, mask, mask, 3).shape == (1, pn.stats_size(5, 3)) == (1, 2 * 11 * 9)


def test_ema_momentum_zero_is_exactly_current():
    current = torch.randn(3, 50)
    stats_in = torch.randn(3, 50) * 1e6
    assert torch.equal(pn.ema(stats_in, current, torch.tensor([0.0])), current)
    torch.testing.assert_close(
        pn.ema(stats_in, current, torch.tensor([0.25])), 0.25 * stats_in + 0.75 * current
    )


def test_region_sums_layout_is_foreground_then_reference():
    x, mask, reference = torch.rand(2, 3, 16, 24), torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24)
    stats = pn.region_sums(x, mask, reference, 4).reshape(2, 2, 7, 16)
    torch.testing.assert_close(stats[:, 0], masked_sums(x, mask, 4))
    torch.testing.assert_close(stats[:, 1], masked_sums(x, reference, 4))
