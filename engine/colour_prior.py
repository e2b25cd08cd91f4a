"""The colour prior: one global 3x4 colour transform for the person, regressed from colour statistics.

Most of what harmonization has to undo is one transform of the whole person (the FFHQH recipe re-colours
the whole photo: brightness, contrast, saturation, hue, autocontrast; a webcam's exposure and white
balance do the same). Which transform it was shows in the statistics of the person against those of the
background. A linear map of a few of them already beats PHNet's own global head trained for an hour on
this CPU; a small MLP on richer ones (percentiles in RGB and in an opponent space, channel correlations,
clipped shares), trained on tens of thousands of fresh re-colourings in minutes (trainer.prior), beats it
by 1.5 dB (docs/model_card.md).

`engine.Harmonizer` re-colours the person by this transform before the network runs, and the network,
fine-tuned on such inputs, adds what statistics cannot see (light falling differently across the person).
The two compose into one grid of transforms (`compose`), so the full-resolution apply is unchanged.

NumPy on the host (torch twins below for the GPU frame path): the prior runs beside whichever backend runs
the network, on the network-size picture.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine import order_stats

PRIOR_PATH = Path(__file__).resolve().parent / "weights" / "colour_prior.safetensors"
FORMAT = "vcam-colour-prior"
PERCENTILES = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)
CHROMA_PERCENTILES = (10.0, 50.0, 90.0)
# Luma (ITU-R 601), red-green and yellow-blue: hue and saturation shifts show as moves of the last two,
# which per-channel RGB percentiles mix with brightness.
OPPONENT = np.array([[0.299, 0.587, 0.114], [0.5, -0.5, 0.0], [0.25, 0.25, -0.5]], np.float64).T
FLAT_VARIANCE = 1e-10  # a channel varying less than this (in [0, 1]² units) is flat: uint8 steps give > 4e-10
MIN_PIXELS = 8  # fewer pixels than this in a region: its statistics are taken from the other region
REGION_FEATURES = 2 * (3 + 3 + 3 * len(PERCENTILES)) + 3 + 3 + 3 + 3
FEATURES = 3 * REGION_FEATURES + 1
# engine.affine's identity as a (4, 3) matrix: rows r, g, b, 1; columns: output r, g, b. Written out here
# because engine.affine imports torch and this module runs without it (tests/test_lean_runtime.py holds
# the two equal).
IDENTITY = np.eye(4, 3)
LAYERS = ("w1", "b1", "w2", "b2", "w3", "b3")


def channel_correlations(rows: np.ndarray) -> np.ndarray:
    """(r-g, r-b, g-b) correlations of colours given as rows (3, N); 0 where a channel is flat (variance
    under FLAT_VARIANCE: a colour background is flat, and float rounding must not read as a correlation)."""
    centred = rows - rows.mean(1, keepdims=True)
    cov = centred @ centred.T / max(rows.shape[1], 1)
    var = np.diag(cov)
    out = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        flat = var[i] <= FLAT_VARIANCE or var[j] <= FLAT_VARIANCE
        out.append(0.0 if flat else cov[i, j] / np.sqrt(var[i] * var[j]))
    return np.array(out)


def region_features(values: np.ndarray) -> np.ndarray:
    """(REGION_FEATURES,) statistics of (N, 3) colours in [0, 1]: mean, std and PERCENTILES in RGB and in
    the opponent space, the three channel correlations, the shares at 0 and at 1 per channel (the
    signature of a stretched or clipped range) and the 10/50/90th percentiles of max - min (chroma)."""
    rgb = np.ascontiguousarray(np.asarray(values, np.float64).T)  # (3, N): reductions along contiguous rows
    rows = np.empty((7, rgb.shape[1]))
    rows[:3] = rgb
    np.dot(OPPONENT.T, rgb, out=rows[3:6])
    np.subtract(rgb.max(0), rgb.min(0), out=rows[6])  # chroma
    # (levels, 7); the chroma's are among PERCENTILES. Colours that are uint8 levels (the network-size
    # picture always is) get np.percentile's exact values from histograms of their integer codes
    # (engine.order_stats: no sort of every sample, 2-3x faster); other colours the sort itself.
    codes = order_stats.lattice_codes(rgb)
    levels = (np.percentile(rows, PERCENTILES, axis=1) if codes is None
              else order_stats.rows_percentiles(rows, codes, PERCENTILES))
    mean, std = rows.mean(1), rows.std(1)
    feats = []
    for k in (0, 3):
        feats += [mean[k:k + 3], std[k:k + 3], levels[:, k:k + 3].ravel()]
    feats.append(channel_correlations(rgb))
    feats += [(rgb <= 1.5 / 255).mean(1), (rgb >= 253.5 / 255).mean(1)]
    feats.append(levels[[PERCENTILES.index(q) for q in CHROMA_PERCENTILES], 6])
    return np.concatenate(feats)


def colour_features(image: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(FEATURES,): the person's statistics (mask >= 0.5), the reference's (default: mask < 0.5), their
    difference and the person's share of the picture.

    Args:
        image: (H, W, 3) RGB, float in [0, 1] or uint8.
        mask: (H, W) float in [0, 1] (or uint8 0..255), the person.
        reference: optional (H, W) mask of the background region to match.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    x = image.astype(np.float64).reshape(-1, 3)
    if image.dtype == np.uint8:
        x = x / 255.0
    m = mask.astype(np.float64).reshape(-1)
    if mask.dtype == np.uint8:
        m = m / 255.0
    person = m >= 0.5
    ref = ~person if reference is None else np.asarray(reference, np.float64).reshape(-1) >= 0.5
    a, b = x[person], x[ref]
    # An empty region carries no information either way: the other region stands in, no NaN.
    if len(a) < MIN_PIXELS:
        a = b if len(b) >= MIN_PIXELS else x
    if len(b) < MIN_PIXELS:
        b = a
    fa, fb = region_features(a), region_features(b)
    return np.concatenate([fa, fb, fa - fb, [person.mean()]])


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form (torch.nn.GELU(approximate="tanh"), what trainer.prior trains with)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


def checked_mlp(tensors: dict[str, np.ndarray], inputs: int, outputs: int, what: str, trainer: str
                ) -> dict[str, np.ndarray]:
    """An MLP file's tensors (mean, scale, w1..b3: standardise, two hidden layers, a linear output) as
    float64, checked: every tensor present, of the shapes `inputs` and `outputs` imply, finite, scale > 0.

    Raises:
        ValueError: naming `what` (e.g. "colour prior") and the module that writes such files.
    """
    missing = [k for k in ("mean", "scale", *LAYERS) if k not in tensors]
    if missing:
        raise ValueError(f"{what} lacks tensor(s) {', '.join(missing)}")
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    hidden = t["w1"].shape[0] if t["w1"].ndim == 2 else -1
    shapes = {"mean": (inputs,), "scale": (inputs,), "w1": (hidden, inputs), "b1": (hidden,),
              "w2": (hidden, hidden), "b2": (hidden,), "w3": (outputs, hidden), "b3": (outputs,)}
    for key, shape in shapes.items():
        if t[key].shape != shape:
            raise ValueError(f"{what} tensor {key} has shape {t[key].shape}, expected {shape} "
                             f"(features: {inputs}; written by another version of {trainer}?)")
        if not np.isfinite(t[key]).all():
            raise ValueError(f"{what} tensor {key} is not finite")
    if (t["scale"] <= 0).any():
        raise ValueError(f"{what} scale must be positive")
    return t


def mlp_output(t: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """(..., outputs) of a `checked_mlp` for (..., inputs) features: standardise, GELU, GELU, linear."""
    h = (np.asarray(features, np.float64) - t["mean"]) / t["scale"]
    h = gelu(h @ t["w1"].T + t["b1"])
    h = gelu(h @ t["w2"].T + t["b2"])
    return h @ t["w3"].T + t["b3"]


class ColourPrior:
    """The MLP: standardised features -> GELU -> GELU -> the 12 numbers of the change from the identity."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = checked_mlp(tensors, FEATURES, 12, "colour prior", "trainer.prior")

    @property
    def hidden(self) -> int:
        return int(self.tensors["w1"].shape[0])

    def change(self, features: np.ndarray) -> np.ndarray:
        """(..., 12) change from the identity for (..., FEATURES) features."""
        return mlp_output(self.tensors, features)

    def matrix(self, image: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """(4, 3) transform for the person: ``[r, g, b, 1] @ matrix`` is the harmonized colour."""
        return IDENTITY + self.change(colour_features(image, mask, reference)).reshape(4, 3)

    @classmethod
    def load(cls, path: str | os.PathLike = PRIOR_PATH) -> ColourPrior:
        """Read a trainer.prior file.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a colour prior, or tensors of the wrong shape or not finite.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"colour prior not found: {path} (train one: python -m trainer.prior)")
        try:
            with safe_open(str(path), framework="numpy") as f:
                kind = (f.metadata() or {}).get("format")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
        if kind != FORMAT:
            raise ValueError(f"{path} is not a colour prior (format {kind!r}, expected {FORMAT!r})")
        return cls(tensors)

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in self.tensors.items()}
        save_file(tensors, str(path), metadata={"format": FORMAT, **(metadata or {})})
        return path


@lru_cache(maxsize=4)
def load_prior(path: str = str(PRIOR_PATH)) -> ColourPrior:
    """The shipped prior (read once per process)."""
    return ColourPrior.load(path)


def prior_path(model) -> Path | None:
    """Where the prior a model was trained behind lies (its config's colour_prior), or None.

    A relative name is looked up beside the model's weights file (engine.weights.load_weights records
    it), else in engine/weights."""
    name = getattr(getattr(model, "config", None), "colour_prior", "") or ""
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute():
        source = getattr(model, "weights_path", None)
        path = (Path(source).parent if source is not None else PRIOR_PATH.parent) / path
    return path


def prior_for(model) -> ColourPrior | None:
    """The prior a model was trained behind (`prior_path`), loaded; None where it names none.

    Raises:
        FileNotFoundError, ValueError: the named file is missing or is not a colour prior.
    """
    path = prior_path(model)
    return None if path is None else load_prior(str(path))


def recolour(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3): the person (soft `mask`) re-coloured by `matrix`, clipped to [0, 1]; the rest as
    it is. `image` float in [0, 1]."""
    x = np.asarray(image, np.float32)
    m = np.asarray(matrix, np.float32)
    corrected = np.clip(x @ m[:3] + m[3], 0.0, 1.0)
    w = np.asarray(mask, np.float32)[..., None]
    return (x + w * (corrected - x)).astype(np.float32, copy=False)


def compose(matrix: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The grid of transforms that does `matrix` first, then each cell's transform of `grid`.

    grid: (..., 12) in engine.affine's layout [c_r, c_g, c_b, bias] (a cell's 4x3 matrix, flattened by
    rows); returns the same shape, float32. Exact up to clipping: the network saw the re-coloured picture
    clipped to [0, 1]."""
    grid = np.asarray(grid, np.float32)
    extended = np.zeros((4, 4), np.float32)  # [r, g, b, 1] @ extended = [matrix's r, g, b, 1]
    extended[:, :3], extended[3, 3] = matrix, 1.0
    cells = grid.reshape(-1, 4, 3)
    return np.matmul(extended, cells).reshape(grid.shape)


# -- the same on a torch device (vcam.gpu_frame): static shapes, no host round trip, CUDA-graph safe -----

def _masked_percentiles(values, weight, n, q):
    """np.percentile (linear) of the rows of `values` (N, C) where `weight` (N,) is set, for q (K,) in
    percent: (K, C). `n` = weight's count as a tensor (>= 1)."""
    import torch

    ordered = torch.sort(torch.where(weight[:, None], values, torch.inf), dim=0).values
    pos = q / 100.0 * (n - 1)
    lo = torch.floor(pos).long()
    hi = torch.minimum(lo + 1, (n - 1).long())
    frac = (pos - lo.to(pos.dtype))[:, None]
    low, high = ordered.index_select(0, lo), ordered.index_select(0, hi)
    return low + frac * (high - low)


def torch_constants(device, dtype) -> dict:
    """The features' constant tensors on a device, made once (a CUDA graph capture cannot copy from the
    host)."""
    import torch

    return {"q": torch.tensor(PERCENTILES, dtype=dtype, device=device),
            "chroma_levels": torch.tensor([PERCENTILES.index(q) for q in CHROMA_PERCENTILES], device=device),
            "opponent": torch.tensor(OPPONENT, dtype=dtype, device=device)}


def region_features_torch(values, weight, constants):
    """region_features of the rows of `values` (N, 3) where `weight` (N,) is set: (REGION_FEATURES,).
    As there, the seven columns (RGB, opponent, chroma) get one sort for all their percentiles."""
    import torch

    n = weight.sum().to(values.dtype)
    w = weight.to(values.dtype)[:, None]
    chroma = (values.amax(1) - values.amin(1))[:, None]
    columns = torch.cat([values, values @ constants["opponent"], chroma], dim=1)  # (N, 7)
    levels = _masked_percentiles(columns, weight, n, constants["q"])  # (levels, 7)
    mean = (columns * w).sum(0) / n
    std = torch.sqrt(((columns - mean) ** 2 * w).sum(0) / n)
    feats = []
    for k in (0, 3):
        feats += [mean[k:k + 3], std[k:k + 3], levels[:, k:k + 3].reshape(-1)]
    centred = (values - mean[:3]) * w
    cov = centred.T @ centred / n
    var = torch.diagonal(cov)
    corr = []
    for i, j in ((0, 1), (0, 2), (1, 2)):  # channel_correlations: 0 where a channel is flat
        ok = (var[i] > FLAT_VARIANCE) & (var[j] > FLAT_VARIANCE)
        corr.append(torch.where(ok, cov[i, j] / torch.sqrt(torch.where(ok, var[i] * var[j], 1.0)), 0.0))
    feats.append(torch.stack(corr))
    feats += [((values <= 1.5 / 255) * w).sum(0) / n, ((values >= 253.5 / 255) * w).sum(0) / n]
    feats.append(levels.index_select(0, constants["chroma_levels"])[:, 6])
    return torch.cat(feats)


def colour_features_torch(image, mask, reference=None, constants=None):
    """colour_features on a device: image (1, 3, h, w) in [0, 1], mask and reference (1, 1, h, w);
    returns (FEATURES,) in the image's dtype (float32 is within 2e-5 of the NumPy features).
    constants: torch_constants for the image's device and dtype (made here when None)."""
    import torch

    constants = constants or torch_constants(image.device, image.dtype)
    values = image[0].flatten(1).T  # (N, 3)
    person = mask[0, 0].flatten() >= 0.5
    ref = ~person if reference is None else reference[0, 0].flatten() >= 0.5
    everything = torch.ones_like(person)
    enough_a, enough_b = person.sum() >= MIN_PIXELS, ref.sum() >= MIN_PIXELS
    a = torch.where(enough_a, person, torch.where(enough_b, ref, everything))
    b = torch.where(enough_b, ref, a)
    fa, fb = region_features_torch(values, a, constants), region_features_torch(values, b, constants)
    share = person.to(values.dtype).mean().reshape(1)
    return torch.cat([fa, fb, fa - fb, share])


class TorchPrior:
    """A ColourPrior's MLP as device tensors: `matrix(image, mask, reference)` -> (4, 3) on the device."""

    def __init__(self, prior: ColourPrior, device, dtype=None):
        import torch

        dtype = dtype or torch.float32
        self.tensors = {k: torch.as_tensor(v, dtype=dtype).to(device) for k, v in prior.tensors.items()}
        self.identity = torch.as_tensor(IDENTITY, dtype=dtype).to(device)
        self.constants = torch_constants(device, dtype)

    def features(self, image, mask, reference=None):
        """colour_features_torch with this prior's constants: (FEATURES,) on the device."""
        return colour_features_torch(image, mask, reference, self.constants)

    def matrix(self, image, mask, reference=None, features=None):
        """(4, 3) on the device; `features` (from `features`) saves computing them again."""
        import torch.nn.functional as F

        t = self.tensors
        features = self.features(image, mask, reference) if features is None else features
        h = (features - t["mean"]) / t["scale"]
        h = F.gelu(h @ t["w1"].T + t["b1"], approximate="tanh")
        h = F.gelu(h @ t["w2"].T + t["b2"], approximate="tanh")
        return self.identity + (h @ t["w3"].T + t["b3"]).reshape(4, 3)


def recolour_torch(image, mask, matrix):
    """recolour on a device: image (1, 3, h, w) in [0, 1], mask (1, 1, h, w), matrix (4, 3)."""
    corrected = (matrix[:3].T @ image[0].flatten(1) + matrix[3][:, None]).reshape(image.shape).clamp(0, 1)
    return image + mask * (corrected - image)


def compose_torch(matrix, coefficients):
    """compose on a device: coefficients (B, 12, h, w) in engine.affine's layout, matrix (4, 3)."""
    import torch

    extended = torch.zeros(4, 4, dtype=coefficients.dtype, device=coefficients.device)
    extended[:, :3] = matrix.to(coefficients.dtype)
    extended[3, 3] = 1.0
    b, _, h, w = coefficients.shape
    cells = coefficients.reshape(b, 4, 3, h, w)
    return torch.einsum("ij,bjkhw->bikhw", extended, cells).reshape(b, 12, h, w)
