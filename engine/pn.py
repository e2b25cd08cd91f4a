"""Patch-based normalisation (PN): masked per-patch moments and the PN transfer, as pure functions.

Sufficient statistics. For a feature map x (B,C,h,w), a region weight m (B,1,h,w) in [0,1] and a GxG
patch grid (row y belongs to patch row floor(y*G/h), column likewise), each patch i holds

    S0_i = sum m,   S1_i = sum m*x,   S2_i = sum m*x^2      (per channel for S1, S2)

divided by the nominal patch area h*w/G^2. The normalisation makes S0_i the patch's coverage (about 0..1),
makes the statistics independent of the resolution (so a state vector survives a change of net size and
its size does not depend on h, w), and keeps them O(1) for the EMA in fp32. The region's global sums are
the mean of the patch sums (= sums / (h*w)). Both regions (foreground = mask, reference = the background
region the person is matched to) are stored; one block's statistics are a (B, 2, 1+2C, G*G) tensor
flattened to (B, stats_size(C, G)).

Temporal smoothing happens on these sums (`ema`), never on means/stds, so that averaging frames is
exact (a weighted pooled moment) and a patch a person walks out of decays instead of jumping.

Moments: mean = S1/(S0+eps), var = clamp(S2/(S0+eps) - mean^2, 0), std = sqrt(var + var_eps). A patch
with little coverage is blended towards its region's global moments with weight S0/(S0+patch_tau); a
region with little coverage (no person, an empty reference) towards the other region's with weight
coverage/(coverage+region_tau): the reference first (towards the foreground), then the foreground towards
the repaired reference, so an empty reference gives exactly the identity transfer. Every division has a
positive denominator and every sqrt a positive argument: outputs and gradients stay finite for empty
patches, all-foreground or all-background masks and zero variance.

Everything is written with ops that export to ONNX with dynamic h, w: patch membership matrices come from
cumsum/floor/eq on the mask itself (no Python ints from shapes, no adaptive pooling with sizes that do not
divide), and patch sums are two matmuls, Ph @ X @ Pw^T.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Moments(NamedTuple):
    """A region's moments derived from (smoothed) sufficient statistics."""

    patch_mean: Tensor  # (B, C, P) per-patch means, blended towards `mean` where the patch is empty
    patch_var: Tensor  # (B, C, P) per-patch variances, blended likewise
    mean: Tensor  # (B, C) global mean of the region
    var: Tensor  # (B, C) global variance of the region
    coverage: Tensor  # (B, 1) global S0: fraction of the frame the region covers


def stats_size(channels: int, grid: int) -> int:
    """Length of one block's flat statistics: 2 regions x (S0 + C S1 + C S2) x G^2 patches."""
    return 2 * (1 + 2 * channels) * grid * grid


def patch_membership(ones: Tensor, grid: int) -> Tensor:
    """(grid, n) 0/1 matrix: entry (g, i) is 1 where floor(i*grid/n) == g.

    Args:
        ones: (n,) tensor of ones whose length is the axis size (a slice of a real input, so the size
            stays symbolic in an ONNX export).
        grid: number of patches along the axis.
    """
    n = ones.sum()
    position = torch.cumsum(ones, 0) - 1.0  # 0..n-1
    # Exact in fp32 for n < 2^24: position*grid is an exact integer and IEEE division rounds correctly.
    index = torch.floor(position * grid / n)
    patches = torch.arange(grid, device=ones.device, dtype=ones.dtype)
    return (index.unsqueeze(0) == patches.unsqueeze(1)).to(ones.dtype)


def patch_sums(z: Tensor, grid: int) -> Tensor:
    """Per-patch sums of z (B,K,h,w) divided by the nominal patch area h*w/grid^2 -> (B, K, grid^2)."""
    # Membership in fp32 whatever z's dtype: fp16 holds integers exactly only up to 2048, and
    # position*grid exceeds that at 512 px.
    ones_h = torch.ones_like(z[0, 0, :, 0], dtype=torch.float32)
    ones_w = torch.ones_like(z[0, 0, 0, :], dtype=torch.float32)
    area = ones_h.sum() * ones_w.sum() / (grid * grid)
    rows = (patch_membership(ones_h, grid) / area).to(z.dtype)  # (G, h), carries the 1/area
    cols = patch_membership(ones_w, grid).to(z.dtype)  # (G, w)
    return torch.matmul(torch.matmul(rows, z), cols.transpose(0, 1)).flatten(2)  # (B, K, G*G)


def region_sums(x: Tensor, mask: Tensor, reference: Tensor, grid: int) -> Tensor:
    """Flat sufficient statistics of the foreground (mask) and reference regions -> (B, stats_size)."""
    # One patch_sums call for both regions (one pair of membership matrices, one pair of matmuls);
    # channel order [S0, S1, S2] of the foreground then of the reference = the (B, 2, 1+2C, P) layout.
    mx, rx = mask * x, reference * x
    return patch_sums(torch.cat([mask, mx, mx * x, reference, rx, rx * x], dim=1), grid).flatten(1)


def ema(stats_in: Tensor, current: Tensor, momentum: Tensor) -> Tensor:
    """stats_out = momentum*stats_in + (1-momentum)*current. momentum 0 returns `current` exactly.

    momentum and stats_in take current's dtype, so an fp16 model fed the contract's fp32 momentum stays
    fp16 (type promotion would otherwise turn the rest of the network fp32).
    """
    momentum = momentum.to(current.dtype)
    return momentum * stats_in.to(current.dtype) + (1.0 - momentum) * current


def moments(sums: Tensor, eps: float, patch_tau: float) -> Moments:
    """Moments of one region from its sums (B, 1+2C, P), empty patches blended towards global moments."""
    channels = (sums.shape[1] - 1) // 2
    s0 = sums[:, 0:1]
    s1 = sums[:, 1 : 1 + channels]
    s2 = sums[:, 1 + channels :]
    g0, g1, g2 = s0.mean(-1), s1.mean(-1), s2.mean(-1)  # global sums / (h*w)
    mean = g1 / (g0 + eps)
    var = torch.clamp(g2 / (g0 + eps) - mean * mean, min=0.0)
    patch_mean = s1 / (s0 + eps)
    patch_var = torch.clamp(s2 / (s0 + eps) - patch_mean * patch_mean, min=0.0)
    trust = s0 / (s0 + patch_tau)  # (B,1,P): 0 for an empty patch, -> 1 for a covered one
    patch_mean = trust * patch_mean + (1.0 - trust) * mean.unsqueeze(-1)
    patch_var = trust * patch_var + (1.0 - trust) * var.unsqueeze(-1)
    return Moments(patch_mean, patch_var, mean, var, g0)


def fall_back(own: Moments, other: Moments, tau: float) -> Moments:
    """Blend a sparsely covered region's moments towards another region's (weight coverage/(coverage+tau))."""
    trust = own.coverage / (own.coverage + tau)  # (B,1)
    keep = trust.unsqueeze(-1)
    return Moments(
        keep * own.patch_mean + (1.0 - keep) * other.patch_mean,
        keep * own.patch_var + (1.0 - keep) * other.patch_var,
        trust * own.mean + (1.0 - trust) * other.mean,
        trust * own.var + (1.0 - trust) * other.var,
        own.coverage,
    )


def region_moments(
    stats: Tensor, channels: int, grid: int, eps: float, patch_tau: float, region_tau: float
) -> tuple[Moments, Moments]:
    """Foreground and reference moments from one block's flat statistics (B, stats_size(C, G))."""
    sums = stats.reshape(-1, 2, 1 + 2 * channels, grid * grid)
    fg = moments(sums[:, 0], eps, patch_tau)
    ref = fall_back(moments(sums[:, 1], eps, patch_tau), fg, region_tau)
    # The foreground falls back to the (already repaired) reference, so that an empty reference gives
    # exactly fg == ref (identity transfer), and an empty foreground (which the mask hides) stays finite.
    return fall_back(fg, ref, region_tau), ref


def local_moments(region: Moments, alpha: Tensor, beta: Tensor, var_eps: float) -> tuple[Tensor, Tensor]:
    """Paper eq. for local stats: mu_loc = sum_i alpha_i mu_i, sigma_loc = sqrt(sum_i beta_i sigma_i^2 / P).

    alpha, beta: (C, P) per-channel, per-patch scores. The clamp keeps sqrt's argument positive should
    training push beta negative. Returns (mean, std), each (B, C).
    """
    mean = (alpha * region.patch_mean).sum(-1)
    var = torch.clamp((beta * region.patch_var).mean(-1), min=0.0)
    return mean, torch.sqrt(var + var_eps)


def _expand(t: Tensor) -> Tensor:
    return t.unsqueeze(-1).unsqueeze(-1)  # (B, C) -> (B, C, 1, 1)


def transfer_coefficients(fg: Moments, ref: Moments, alpha: Tensor, beta: Tensor, var_eps: float):
    """The paper's normalised images (eqs. 5-9) as per-channel affine maps of x, each (scale, shift):

    F_glob = (x - mu_F) * sigma_B / sigma_F + mu_B
    F_loc  = (x - mu_F) * sigma_loc(B) / sigma_F + mu_loc(B)
    B_loc  = (x - mu_B) * sigma_loc(B) / sigma_B + mu_loc(B)

    Every term is affine in x with coefficients that depend only on statistics, so blocks combine the
    coefficients at (B, C) size and touch the full-resolution map once (the cheap path on a CPU).
    Returns ((s_glob, b_glob), (s_loc, b_loc), (s_bg, b_bg)), each tensor (B, C, 1, 1).
    """
    std_fg = torch.sqrt(fg.var + var_eps)
    std_ref = torch.sqrt(ref.var + var_eps)
    loc_mean, loc_std = local_moments(ref, alpha, beta, var_eps)
    glob_scale = std_ref / std_fg
    loc_scale = loc_std / std_fg
    bg_scale = loc_std / std_ref
    return (
        (_expand(glob_scale), _expand(ref.mean - fg.mean * glob_scale)),
        (_expand(loc_scale), _expand(loc_mean - fg.mean * loc_scale)),
        (_expand(bg_scale), _expand(loc_mean - ref.mean * bg_scale)),
    )


def blend(x: Tensor, mask: Tensor, fg_affine, bg_affine) -> Tensor:
    """(s_f x + b_f) * mask + (s_b x + b_b) * (1 - mask), written to touch full-resolution maps 4 times."""
    (fg_scale, fg_shift), (bg_scale, bg_shift) = fg_affine, bg_affine
    return x * (bg_scale + (fg_scale - bg_scale) * mask) + (bg_shift + (fg_shift - bg_shift) * mask)


def check_inputs(composite, mask, reference, stats_in, momentum, stats_size: int) -> None:
    """Boundary check of the forward contract shared by every model (skipped while tracing/compiling).

    Raises:
        TypeError: an input is not a floating-point torch.Tensor.
        ValueError: a shape does not match the contract (names the expected and the actual shape).
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    named = {
        "composite": composite,
        "mask": mask,
        "reference": reference,
        "stats_in": stats_in,
        "momentum": momentum,
    }
    for name, value in named.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {kind}")
    if composite.dim() != 4 or composite.shape[1] != 3:
        raise ValueError(f"composite must be (B,3,H,W), got {tuple(composite.shape)}")
    batch, _, height, width = composite.shape
    if height % 8 or width % 8 or height < 8 or width < 8:
        raise ValueError(f"H and W must be multiples of 8 (>= 8), got {height}x{width}")
    for name in ("mask", "reference"):
        if tuple(named[name].shape) != (batch, 1, height, width):
            raise ValueError(f"{name} must be {(batch, 1, height, width)}, got {tuple(named[name].shape)}")
    if tuple(stats_in.shape) != (batch, stats_size):
        raise ValueError(f"stats_in must be {(batch, stats_size)}, got {tuple(stats_in.shape)}")
    if momentum.numel() != 1:
        raise ValueError(f"momentum must have one element (shape (1,)), got {tuple(momentum.shape)}")
