"""The statistics-only harmonizer ("stats"): PHNet's PN transfer applied to the image itself.

No learned weights: one PN block on the RGB composite with a GxG grid (default 5x5, like the PFE),
foreground = local_weight*F_loc + (1-local_weight)*F_glob (engine.pn.transfer_coefficients, uniform patch
scores), background unchanged. Same forward contract, same temporal smoothing of sufficient statistics as
PHNet (engine/phnet.py), so it runs through every backend and the Harmonizer unchanged.

It is the baseline every trained model must beat, and it is expected to be worse than doing nothing on
portraits (a person should not take on the background's colour statistics); it is useful to check the
plumbing (reference regions, temporal smoothing, export) without trained weights.
"""

from __future__ import annotations

import torch
from torch import nn

from engine import pn
from engine.config import StatsConfig


class StatsTransfer(nn.Module):
    """Foreground colour statistics matched to the reference region's, globally and per patch."""

    def __init__(self, config: StatsConfig | None = None):
        super().__init__()
        self.name = "stats"
        self.config = config or StatsConfig()
        self.stats_size: int = pn.stats_size(3, self.config.grid)
        self.stats_layout: tuple[tuple[str, int, int], ...] = (("transfer", 0, self.stats_size),)
        patches = self.config.grid**2
        # Constants, not parameters (nothing to train) and not persistent (nothing to save).
        self.register_buffer("alpha", torch.full((3, patches), 1.0 / patches), persistent=False)
        self.register_buffer("beta", torch.ones(3, patches), persistent=False)

    def forward(self, composite, mask, reference, stats_in, momentum):
        """See engine/phnet.py for the contract. Returns (harmonized (B,3,H,W) in [0,1], stats_out)."""
        pn.check_inputs(composite, mask, reference, stats_in, momentum, self.stats_size)
        cfg = self.config
        stats = pn.ema(stats_in, pn.region_sums(composite, mask, reference, cfg.grid), momentum)
        fg, ref = pn.region_moments(stats, 3, cfg.grid, cfg.eps, cfg.patch_tau, cfg.region_tau)
        (s_glob, b_glob), (s_loc, b_loc), _ = pn.transfer_coefficients(
            fg, ref, self.alpha, self.beta, cfg.var_eps
        )
        w0, w1 = cfg.local_weight, 1.0 - cfg.local_weight
        identity = (torch.ones_like(s_glob), torch.zeros_like(b_glob))
        harmonized = pn.blend(composite, mask, (w0 * s_loc + w1 * s_glob, w0 * b_loc + w1 * b_glob), identity)
        return torch.clamp(harmonized, 0.0, 1.0), stats
