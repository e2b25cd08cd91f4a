"""PHNet: Patch-based Normalization for Portrait Harmonization (Efremyan et al.), with temporal statistics.

Forward contract (every model from `create_model`, eager, ONNX and TensorRT alike)::

    output, stats_out = model(composite, mask, reference, stats_in, momentum)

    composite  (B,3,H,W) float32 RGB in [0,1] (no mean/std normalisation); H, W multiples of 8, >= 8
    mask       (B,1,H,W) float32 in [0,1]: the person (foreground)
    reference  (B,1,H,W) float32 in [0,1]: weights of the background region whose statistics the person is
               matched to; pass 1 - mask for the default (the whole background)
    stats_in   (B, model.stats_size) float32: the previous smoothed sufficient statistics (zeros at start)
    momentum   (1,) float32 in [0,1): stats_out = momentum*stats_in + (1-momentum)*stats_of_this_frame,
               and every PN block (and the PFE) normalises with stats_out. momentum 0 is stateless:
               stats_in is multiplied by 0 and the result equals a single-image run exactly.
    output     what `model.output_names[0]` says:
               "harmonized" (heads "image", "residual", and the "stats" model): (B,3,H,W) float32 in
               [0,1], the raw network image; callers re-blend harmonized*mask + composite*(1-mask);
               "coefficients" (head "affine"): (B,12,H/f,W/f), f = config.affine_factor, a grid of 3x4
               colour transforms (engine.affine); `harmonized_image` turns either into the image
    stats_out  (B, model.stats_size) float32: feed back as stats_in for the next frame of the same stream

stats_size does not depend on H, W: statistics are per patch and normalised by patch area (engine/pn.py).
Layout of the flat vector: [PFE | PN block 1 | PN block 2 | PN block 3], each block's part being
(2 regions: foreground, reference) x (S0, C x S1, C x S2) x (G*G patches); `model.stats_layout` names the
slices.

The network follows the paper (../shared/PHNET.md; differences from the authors' code in
docs/notes/model.md):
- encoder: 6 x (Conv -> InstanceNorm (no affine) -> ReLU), kernel/stride 4/2, 3/1, 4/2, 3/1, 4/2, 3/1;
- bottleneck: squeeze-and-excitation (reduction 8); the PFE's pooled output q is added to the channel
  weights, x * (se + q);
- decoder: 6 x (concat(x, skip) -> Conv3x3 (2C -> C, no bias) -> ReLU -> ConvTranspose -> norm ->
  LeakyReLU(0.01)), norm = BatchNorm in the first three steps and a PN block (grids 3, 4, 5) in the last
  three; then Conv3x3 (C1 -> 3) and a sigmoid: the full image, not a residual (config.output='residual'
  adds the head to the composite instead; config.output='affine' predicts colour transforms instead:
  Conv3x3 (C1 -> 12) averaged over f x f cells, plus one global transform from the bottleneck);
- PFE: the PN transfer on the input image with a 5x5 grid (w0, w1 learned), pooled to one scalar per image.
One source serves eager and ONNX: no export forks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import affine, pn
from engine.config import VARIANTS, PHNetConfig, config_field_names

MODEL_NAMES: tuple[str, ...] = (*VARIANTS, "stats")


def instance_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """InstanceNorm without affine, written out: F.instance_norm refuses 1x1 maps (8x8 inputs reach H/8=1)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=(2, 3), keepdim=True)
    return centred * torch.rsqrt(var + eps)


class EncoderLayer(nn.Module):
    """Conv (padding 1) -> InstanceNorm (no affine) -> ReLU. Kernel/stride 4/2 halves H, W; 3/1 keeps them."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(instance_norm(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel weights se in (0,1) from global average pooling; returns x * (se + q), q from the PFE."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: Tensor, q: Tensor) -> Tensor:
        se = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))  # (B, C)
        return x * (se + q).unsqueeze(-1).unsqueeze(-1)


class PNBlock(nn.Module):
    """Patch-based normalisation (paper eqs. 2-12) with temporally smoothed sufficient statistics.

    N = (w0*F_loc + w1*F_glob + w2) * M + (g0*B_loc + g1*x + g2) * (1 - M), the F/B terms from
    engine.pn.transfer_coefficients with learned per-channel, per-patch scores alpha (for the means)
    and beta (for the variances).
    """

    def __init__(self, channels: int, grid: int, config: PHNetConfig):
        super().__init__()
        patches = grid * grid
        self.channels, self.grid = channels, grid
        self.eps, self.var_eps = config.eps, config.var_eps
        self.patch_tau, self.region_tau = config.patch_tau, config.region_tau
        self.stats_size = pn.stats_size(channels, grid)
        # Init: alpha = 1/P (mu_loc = mean of patch means), beta = 1 (sigma_loc = rms of patch stds).
        self.alpha = nn.Parameter(torch.full((channels, patches), 1.0 / patches))
        self.beta = nn.Parameter(torch.ones(channels, patches))
        # Rows: w0 (local), w1 (global), w2 (bias); likewise gamma for the background. Authors: 0.5/0.5.
        self.weight = nn.Parameter(torch.tensor([0.5, 0.5, 0.0]).repeat(channels, 1).t().contiguous())
        self.gamma = nn.Parameter(torch.tensor([0.5, 0.5, 0.0]).repeat(channels, 1).t().contiguous())

    def forward(self, x, mask, reference, stats_in, momentum):
        stats = pn.ema(stats_in, pn.region_sums(x, mask, reference, self.grid), momentum)
        fg, ref = pn.region_moments(
            stats, self.channels, self.grid, self.eps, self.patch_tau, self.region_tau
        )
        (s_glob, b_glob), (s_loc, b_loc), (s_bg, b_bg) = pn.transfer_coefficients(
            fg, ref, self.alpha, self.beta, self.var_eps
        )
        w = self.weight.unsqueeze(-1).unsqueeze(-1)  # (3, C, 1, 1), broadcasts against (B, C, 1, 1)
        g = self.gamma.unsqueeze(-1).unsqueeze(-1)
        foreground = (w[0] * s_loc + w[1] * s_glob, w[0] * b_loc + w[1] * b_glob + w[2])
        background = (g[0] * s_bg + g[1], g[0] * b_bg + g[2])  # gamma1 multiplies x itself
        return pn.blend(x, mask, foreground, background), stats


class PatchFeatureExtractor(nn.Module):
    """PFE (paper 4.2): the PN transfer on the input image, w0*F_loc + w1*F_glob; returns its global mean.

    The authors pool with a global max; the average is used here so every foreground pixel contributes
    and q changes smoothly from frame to frame (a max flickers with single pixels).
    """

    def __init__(self, grid: int, config: PHNetConfig):
        super().__init__()
        patches = grid * grid
        self.grid = grid
        self.eps, self.var_eps = config.eps, config.var_eps
        self.patch_tau, self.region_tau = config.patch_tau, config.region_tau
        self.stats_size = pn.stats_size(3, grid)
        self.weight = nn.Parameter(torch.tensor([0.9, 0.1]))  # w0 (local), w1 (global): authors' init
        # Only w0, w1 are learned in the PFE: the patch scores stay uniform.
        self.register_buffer("alpha", torch.full((3, patches), 1.0 / patches), persistent=False)
        self.register_buffer("beta", torch.ones(3, patches), persistent=False)

    def statistics(self, image, mask, reference, stats_in, momentum) -> Tensor:
        return pn.ema(stats_in, pn.region_sums(image, mask, reference, self.grid), momentum)

    def forward(self, image, mask, stats) -> Tensor:
        fg, ref = pn.region_moments(stats, 3, self.grid, self.eps, self.patch_tau, self.region_tau)
        (s_glob, b_glob), (s_loc, b_loc), _ = pn.transfer_coefficients(
            fg, ref, self.alpha, self.beta, self.var_eps
        )
        w0, w1 = self.weight[0], self.weight[1]
        identity = (torch.ones_like(s_glob), torch.zeros_like(b_glob))
        out = pn.blend(image, mask, (w0 * s_loc + w1 * s_glob, w0 * b_loc + w1 * b_glob), identity)
        return out.mean(dim=(1, 2, 3))  # (B,): one scalar per image, added to every SE channel weight


def masked_mean(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, C, H, W) features averaged under (B, 1, H, W) weights -> (B, C)."""
    return (x * weight).sum(dim=(2, 3)) / (weight.sum(dim=(2, 3)) + eps)


def coverage_gate(weight: Tensor, tau: float = 0.01) -> Tensor:
    """(B, 1) in [0, 1): ~1 for a region covering much more than `tau` of the frame, -> 0 as it vanishes.
    Features of an (almost) empty region are multiplied by it: a few stray mask pixels must read as "no
    information", not as confident statistics the head never saw in training."""
    share = weight.mean(dim=(2, 3))
    return share / (share + tau)


def colour_moments(image: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
    """Mean and standard deviation of each colour channel over the person and over the reference: (B, 12).

    The cheap statistics a linear model harmonizes from (trainer.linear); given to the global head
    directly so that it starts from at least what that baseline sees."""
    out = []
    for weight in (mask, reference):
        mean = masked_mean(image, weight)
        var = masked_mean(image * image, weight) - mean * mean
        out += [mean, torch.sqrt(torch.clamp(var, min=0.0) + 1e-6)]
    return torch.cat(out, dim=1)


#: Largest change a grid cell of the affine head may make to any coefficient, before centring.
LOCAL_BOUND = 0.15
#: Levels at which colour_cdf samples each region's distribution of each channel (0..1).
CDF_LEVELS = tuple(0.05 + 0.1 * i for i in range(10))
CDF_SOFTNESS = 0.02  # a sigmoid this wide instead of a step: differentiable, and steady on noisy pixels


def colour_cdf(image: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
    """The share of each region's pixels below each of CDF_LEVELS, per channel: (B, 2 x 3 x 10).

    The same information as the linear baseline's percentiles (trainer.linear), in a form that is
    differentiable and exports to ONNX with dynamic sizes (no sort)."""
    levels = image.new_tensor(CDF_LEVELS).view(1, 1, -1, 1, 1)
    below = torch.sigmoid((levels - image.unsqueeze(2)) / CDF_SOFTNESS).flatten(1, 2)  # (B, 3*10, H, W)
    return torch.cat([masked_mean(below, mask), masked_mean(below, reference)], dim=1)


COLOUR_FEATURES = 12 + 2 * 3 * len(CDF_LEVELS)


#: Attention maps over the person whose colour the global head reads (e.g. skin, hair, clothes).
ATTENTION_MAPS = 4


def attended_colours(logits: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """Mean and standard deviation of the image's colour under K softmax attention maps restricted to the
    person: (B, K x 6). Lets the head look at the colour of what it recognises (a face's skin, say),
    which global statistics of the whole person mix with everything else."""
    logits = logits - logits.amax(dim=(2, 3), keepdim=True)  # (B, K, H, W); stable exp
    weight = torch.exp(logits) * mask
    weight = weight / (weight.sum(dim=(2, 3), keepdim=True) + 1e-6)
    mean = torch.einsum("bkhw,bchw->bkc", weight, image)
    second = torch.einsum("bkhw,bchw->bkc", weight, image * image)
    std = torch.sqrt(torch.clamp(second - mean * mean, min=0.0) + 1e-6)
    return torch.cat([mean, std], dim=2).flatten(1)


class GlobalTransform(nn.Module):
    """One 3x4 colour transform per image: an MLP on the bottleneck (person and reference pooled
    separately), the colour statistics and the colours under learned attention maps over the person,
    plus a linear map of the colour statistics alone (the linear baseline's form, which
    trainer.linear_init can fit in closed form). Both outputs start at zero, so the transform starts
    as the identity."""

    def __init__(self, channels: int, hidden: int, decoder_channels: int):
        super().__init__()
        self.attend = nn.Conv2d(decoder_channels, ATTENTION_MAPS, 1)
        self.fc1 = nn.Linear(2 * channels + COLOUR_FEATURES + 6 * ATTENTION_MAPS, hidden)
        self.fc2 = nn.Linear(hidden, affine.COEFFICIENTS)
        self.linear = nn.Linear(COLOUR_FEATURES, affine.COEFFICIENTS)
        for layer in (self.fc2, self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @staticmethod
    def colour_features(image: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
        """(B, COLOUR_FEATURES): moments first (mean, std per region), then the CDF samples."""
        return torch.cat([colour_moments(image, mask, reference), colour_cdf(image, mask, reference)], dim=1)

    def forward(self, bottleneck: Tensor, decoded: Tensor, image: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
        # The bottleneck is at H/8 (three stride-2 encoder convs): a constant, so the export stays dynamic.
        m, r = F.avg_pool2d(mask, 8), F.avg_pool2d(reference, 8)
        colour = self.colour_features(image, mask, reference)
        attended = attended_colours(self.attend(decoded), image, mask)
        gate_m, gate_r = coverage_gate(mask), coverage_gate(reference)
        features = torch.cat([masked_mean(bottleneck, m) * gate_m, masked_mean(bottleneck, r) * gate_r,
                              colour, attended * gate_m], dim=1)
        change = self.fc2(F.relu(self.fc1(features))) + self.linear(colour)
        # Bounded (|change| < 2 per coefficient, linear near 0): an input unlike any in training cannot
        # send the transform to extremes that the output clamp would then hide from the gradient.
        return 2.0 * torch.tanh(0.5 * change)  # (B, 12), added to the identity


class DecoderStep(nn.Module):
    """concat(x, skip) -> Conv3x3 (2C -> C, no bias) -> ReLU -> ConvTranspose -> norm -> LeakyReLU."""

    def __init__(self, channels, out_channels, kernel_size, stride, norm: nn.Module, negative_slope):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False)
        self.up = nn.ConvTranspose2d(channels, out_channels, kernel_size, stride, padding=1)
        self.norm = norm
        self.negative_slope = negative_slope

    def features(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.up(F.relu(self.conv(torch.cat([x, skip], dim=1))))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return F.leaky_relu(self.norm(self.features(x, skip)), self.negative_slope)


class PHNet(nn.Module):
    """PHNet with the temporal forward contract of this module's docstring."""

    def __init__(self, config: PHNetConfig, name: str = "phnet"):
        super().__init__()
        self.name, self.config = name, config
        c = config.widths
        specs = (
            (3, c[0], 4, 2),
            (c[0], c[1], 3, 1),
            (c[1], c[2], 4, 2),
            (c[2], c[3], 3, 1),
            (c[3], c[4], 4, 2),
            (c[4], c[5], 3, 1),
        )
        self.encoder = nn.ModuleList(EncoderLayer(*spec) for spec in specs)
        self.se = SqueezeExcite(c[5], config.se_reduction)
        self.pfe = PatchFeatureExtractor(config.pfe_grid, config)
        # Decoder step k consumes skip c[6-k] and maps c[6-k] -> c[5-k] channels (the last keeps c[0]);
        # kernel/stride 3/1, 4/2, ... mirror the encoder so step k lands on skip k+1's resolution.
        step_channels = (c[5], c[4], c[3], c[2], c[1], c[0])
        step_out = (c[4], c[3], c[2], c[1], c[0], c[0])
        kernels = ((3, 1), (4, 2), (3, 1), (4, 2), (3, 1), (4, 2))
        steps = []
        for k in range(6):
            if k < 3:
                norm = nn.BatchNorm2d(step_out[k])
            else:
                norm = PNBlock(step_out[k], config.pn_grids[k - 3], config)
            steps.append(DecoderStep(step_channels[k], step_out[k], *kernels[k], norm, config.negative_slope))
        self.decoder = nn.ModuleList(steps)
        self.head = nn.Conv2d(c[0], affine.COEFFICIENTS if config.output == "affine" else 3, 3, padding=1)
        if config.output == "affine":  # local corrections start at zero: the model starts as the identity
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.global_transform = GlobalTransform(c[5], config.global_hidden, c[0])
            self.register_buffer("identity", torch.tensor(affine.IDENTITY).view(1, -1, 1, 1), persistent=False)
        if config.output == "residual":  # start as the identity: training only has to learn the change
            nn.init.normal_(self.head.weight, std=1e-3)  # near zero, not zero: gradients reach every layer
            nn.init.zeros_(self.head.bias)
        # Static slices of the flat statistics vector: [(owner, start, stop)], PFE first.
        layout, start = [], 0
        for owner, size in [("pfe", self.pfe.stats_size)] + [
            (f"decoder.{k}.norm", self.decoder[k].norm.stats_size) for k in range(3, 6)
        ]:
            layout.append((owner, start, start + size))
            start += size
        self.stats_layout: tuple[tuple[str, int, int], ...] = tuple(layout)
        self.stats_size: int = start
        self.output_names: tuple[str, str] = (
            "coefficients" if config.output == "affine" else "harmonized", "stats_out")

    def output_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Shape of the first output for a (batch, 3, height, width) input."""
        if self.config.output == "affine":
            return (batch, affine.COEFFICIENTS, *affine.grid_size(height, width, self.config.affine_factor))
        return (batch, 3, height, width)

    def forward(self, composite, mask, reference, stats_in, momentum):
        pn.check_inputs(composite, mask, reference, stats_in, momentum, self.stats_size)
        slices = [stats_in[:, start:stop] for _, start, stop in self.stats_layout]
        stats_out = []
        # PFE statistics are computed even without use_pfe so the state layout never changes.
        pfe_stats = self.pfe.statistics(composite, mask, reference, slices[0], momentum)
        stats_out.append(pfe_stats)
        if self.config.use_pfe:
            q = self.pfe(composite, mask, pfe_stats).unsqueeze(-1)  # (B, 1)
        else:
            q = torch.zeros_like(composite[:, 0, 0, 0]).unsqueeze(-1)
        skips = []
        x = composite
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)  # resolutions H/2, H/2, H/4, H/4, H/8, H/8
        x = self.se(x, q)
        bottleneck = x
        # Masks at the PN resolutions (H/2 for steps 4, 5 and H for step 6). avg_pool by 2 exports with
        # dynamic sizes (F.interpolate with size tuples computed in Python would bake them in).
        half = (F.avg_pool2d(mask, 2), F.avg_pool2d(reference, 2))
        full = (mask, reference)
        for k, step in enumerate(self.decoder):
            if k < 3:
                x = step(x, skips[5 - k])
            else:
                region = full if k == 5 else half
                y, stats = step.norm(step.features(x, skips[5 - k]), *region, slices[k - 2], momentum)
                stats_out.append(stats)
                x = F.leaky_relu(y, step.negative_slope)
        if self.config.output == "affine":
            # Per-cell corrections (the head averaged over factor x factor pixels) on top of one global
            # transform: (B, 12, H/f, W/f) coefficients, the model's first output.
            f = self.config.affine_factor
            # The local part is bounded and has zero mean over the person: the global transform carries
            # the person's overall re-colouring, and a cell can only nudge it (light falling differently).
            # Left free, per-cell transforms also learn to flatten texture (gain down, bias = the cell's
            # mean colour), which blurs the person at full resolution, where a cell spans many pixels.
            local = LOCAL_BOUND * torch.tanh(F.avg_pool2d(self.head(x), f) / LOCAL_BOUND)
            local = local - masked_mean(local, F.avg_pool2d(mask, f)).unsqueeze(-1).unsqueeze(-1)
            glob = self.global_transform(bottleneck, x, composite, mask, reference)
            return local + (self.identity + glob.unsqueeze(-1).unsqueeze(-1)), torch.cat(stats_out, dim=1)
        if self.config.output == "residual":
            harmonized = torch.clamp(composite + self.head(x), 0.0, 1.0)
        else:
            harmonized = torch.sigmoid(self.head(x))
        return harmonized, torch.cat(stats_out, dim=1)


def output_names(model: nn.Module) -> tuple[str, str]:
    """The model's two output names (the "stats" model and older modules: harmonized, stats_out)."""
    return tuple(getattr(model, "output_names", ("harmonized", "stats_out")))


def output_shape(model: nn.Module, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Shape of the model's first output for a (batch, 3, height, width) input."""
    fn = getattr(model, "output_shape", None)
    return tuple(fn(batch, height, width)) if fn is not None else (batch, 3, height, width)


def harmonized_image(output: Tensor, composite: Tensor, kind: str) -> Tensor:
    """The harmonized image (B,3,H,W) from a model's first output: itself, or its colour transforms
    applied to the composite (kind = output_names(model)[0])."""
    if kind == "coefficients":
        return affine.apply(output.float(), composite.float())
    return output


def create_model(name: str, **overrides) -> nn.Module:
    """Build a model by name: "phnet", "phnet-s", "phnet-xs" (CPU real time) or "stats" (no weights).

    Args:
        name: one of MODEL_NAMES.
        **overrides: config fields replacing the variant's (e.g. widths=(4, 4, 8, 8, 8, 8));
            `create_model(m.name, **dataclasses.asdict(m.config))` rebuilds model m.

    Returns:
        The model in training mode (call .eval() for inference), with .name, .config and .stats_size.

    Raises:
        ValueError: unknown name (lists the valid ones) or an invalid config value.
        TypeError: an override that is not a config field.
    """
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if name == "stats":
        from engine.config import StatsConfig
        from engine.stats_transfer import StatsTransfer

        _check_overrides(StatsConfig, overrides)
        return StatsTransfer(StatsConfig(**overrides))
    _check_overrides(PHNetConfig, overrides)
    return PHNet(PHNetConfig(**{**VARIANTS[name], **overrides}), name=name)


def _check_overrides(cls, overrides: dict) -> None:
    valid = config_field_names(cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(f"unknown config field(s) {unknown} for {cls.__name__}; valid: {', '.join(valid)}")
