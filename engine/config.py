"""Model configurations: one dataclass per model family, variants as plain kwargs dicts.

`create_model(name, **overrides)` (engine.phnet) builds `PHNetConfig(**{**VARIANTS[name], **overrides})`,
and `create_model(model.name, **dataclasses.asdict(model.config))` rebuilds any model, which is how
weights files (engine.weights) store a model: the name plus `asdict(config)` as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


def _as_int_tuple(value, field_name: str) -> tuple[int, ...]:
    # JSON round trips turn tuples into lists; accept both, store tuples so configs compare equal.
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{field_name} must be a sequence of ints, got {type(value).__name__}")
    out = tuple(int(v) for v in value)
    if any(v <= 0 for v in out):
        raise ValueError(f"{field_name} must be positive ints, got {out}")
    return out


# What the network's head predicts (PHNetConfig.output).
OUTPUTS = ("image", "residual", "affine")


@dataclass
class PHNetConfig:
    """PHNet hyper-parameters (see engine/phnet.py for the network and PHNET.md for the paper)."""

    # Encoder output channels, one per encoder conv (6): resolutions H/2, H/2, H/4, H/4, H/8, H/8.
    # The decoder mirrors them. FFHQH: 16..1024 (39.9 M params), iHarmony: 16..512 (10.0 M).
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    # Squeeze-and-excitation reduction in the bottleneck (the paper: 8).
    se_reduction: int = 8
    # Patch grids (G for a GxG grid) of the PN blocks in the last three decoder layers (paper: 3, 4, 5).
    pn_grids: tuple[int, ...] = (3, 4, 5)
    # Patch grid of the PFE (patch feature extractor) on the input image (paper: 5).
    pfe_grid: int = 5
    # Whether the PFE output is added to the SE channel weights. The trainer's stage 1 trains without it;
    # the PFE statistics are computed either way so stats_size does not depend on this flag.
    use_pfe: bool = True
    # Guard added to the (area-normalised) mask sums before dividing: mean = S1 / (S0 + eps).
    eps: float = 1e-6
    # Added to variances under the square root: std = sqrt(var + var_eps); bounds the 1/std gain.
    var_eps: float = 1e-5
    # Patch coverage (fraction of the patch's area) at which a patch's own statistics get half the
    # weight and the region's global statistics the other half: empty patches fall back smoothly.
    patch_tau: float = 0.02
    # Region coverage (fraction of the frame) at which a region's statistics get half the weight and the
    # other region's the other half: an empty reference gives an identity transfer, not a collapse.
    region_tau: float = 1e-3
    # Slope of the LeakyReLUs after the decoder's normalisation layers (the paper: 0.01).
    negative_slope: float = 0.01
    # What the head predicts. "image" (the paper): sigmoid(head) is the harmonized image. "residual":
    # clamp(composite + head, 0, 1), head initialised to zero so an untrained model is the identity.
    # "affine" (the shipped weights): a grid of 3x4 colour transforms (engine.affine), identity at
    # initialisation; the network decides how to re-colour the person and never re-draws them.
    output: str = "image"
    # output="affine" only: the coefficient grid is 1/affine_factor of the input (a divisor of 8), and
    # the global transform is predicted by an MLP of this width from the bottleneck and colour moments.
    affine_factor: int = 4
    global_hidden: int = 64
    # output="affine" only, at full resolution (engine.Harmonizer.apply): the transforms re-colour the
    # frame low-passed by a Gaussian of this sigma (in network pixels, scaled to the frame) and the frame's
    # detail above it is added back unchanged; 0 applies them to the frame itself. Trained on MSE against
    # the FFHQH recipe (which sharpens half the composites x4), the cells learn to flatten texture; this
    # keeps the person's texture whatever they learned.
    keep_detail: float = 0.0
    # output="affine" only: the colour prior (engine.colour_prior) the network was trained behind, a
    # .safetensors file name beside the weights file (or an absolute path); "" = none. engine.Harmonizer
    # re-colours the person by the prior's global transform before the network runs, as in training.
    colour_prior: str = ""

    def __post_init__(self):
        self.widths = _as_int_tuple(self.widths, "widths")
        self.pn_grids = _as_int_tuple(self.pn_grids, "pn_grids")
        if len(self.widths) != 6:
            raise ValueError(f"widths must have 6 entries (one per encoder conv), got {len(self.widths)}")
        if len(self.pn_grids) != 3:
            raise ValueError(f"pn_grids must have 3 entries (last three decoder layers), got {self.pn_grids}")
        if self.se_reduction <= 0 or self.widths[-1] // self.se_reduction < 1:
            raise ValueError(f"se_reduction must be in 1..{self.widths[-1]}, got {self.se_reduction}")
        if self.pfe_grid <= 0:
            raise ValueError(f"pfe_grid must be positive, got {self.pfe_grid}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.affine_factor not in (1, 2, 4, 8):
            raise ValueError(f"affine_factor must be 1, 2, 4 or 8 (a divisor of 8), got {self.affine_factor}")
        if not self.keep_detail >= 0:
            raise ValueError(f"keep_detail must be >= 0, got {self.keep_detail}")
        if not isinstance(self.colour_prior, str):
            raise TypeError(f"colour_prior must be a file name (str), got {type(self.colour_prior).__name__}")
        if self.global_hidden <= 0:
            raise ValueError(f"global_hidden must be positive, got {self.global_hidden}")
        _check_positive(self, ("eps", "var_eps", "patch_tau", "region_tau"))


@dataclass
class StatsConfig:
    """The statistics-only harmonizer ("stats"): PN transfer on the image itself, nothing learned."""

    # Patch grid of the local statistics (same PN machinery as PHNet's PFE).
    grid: int = 5
    # Mix of the local (patch) and global transfers: w0 = local_weight, w1 = 1 - local_weight.
    local_weight: float = 0.5
    # As in PHNetConfig. var_eps is larger here because the inputs are [0,1] pixels, not features:
    # std floor 0.03 keeps a flat person from having tiny texture amplified by sigma_B / sigma_F.
    eps: float = 1e-6
    var_eps: float = 1e-3
    patch_tau: float = 0.02
    region_tau: float = 1e-3

    def __post_init__(self):
        if self.grid <= 0:
            raise ValueError(f"grid must be positive, got {self.grid}")
        if not 0.0 <= self.local_weight <= 1.0:
            raise ValueError(f"local_weight must be in [0, 1], got {self.local_weight}")
        _check_positive(self, ("eps", "var_eps", "patch_tau", "region_tau"))


def _check_positive(config, names) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


# Variants are data: name -> PHNetConfig kwargs. Parameter counts and GFLOPs: docs/notes/model.md.
VARIANTS: dict[str, dict] = {
    # The paper's FFHQH configuration: 39.9 M parameters.
    "phnet": {"widths": (16, 64, 128, 256, 512, 1024)},
    # The paper's iHarmony configuration: 10.0 M parameters.
    "phnet-s": {"widths": (16, 32, 64, 128, 256, 512)},
    # CPU real-time variant (this project's): same structure, narrow widths; see docs/notes/model.md.
    "phnet-xs": {"widths": (8, 16, 24, 32, 48, 64)},
}


def config_field_names(cls) -> tuple[str, ...]:
    """Names of a config dataclass's fields (for error messages on unknown overrides)."""
    return tuple(f.name for f in fields(cls))
