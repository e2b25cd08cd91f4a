"""An over-sharpened person: detect it from the picture's own band energies, and undo it.

A person pasted from another source often carries a sharpening the background does not have: webcams
sharpen their picture, and the FFHQH composites the model is judged on sharpen the person half the time
(torchvision's adjust_sharpness, factor 4: a blend with the 3x3 smoothing kernel of PIL,
``S_f = (1 - f) B + f I``). The colour transform cannot undo that (it is spatial), and at the network's
256 px it is invisible, so at full resolution it stays as a crisp halo on every edge and an amplified
grain: on the held-out photos about 1 dB of the full-resolution error (docs/benchmarks.md).

- `inverse_sharpen_kernel(f)`: a small FIR filter with the inverse frequency response of ``S_f``
  (``S_f`` is invertible: its response runs from 1 at DC to about 3.8 at the Nyquist corners for f = 4).
- `sharpness_features`: log ratios of band energies of the grey picture, fine (the kernel's own high-pass)
  to middle to coarse, for the person and for the background; the background of the same picture says
  what the camera's own sharpness looks like.
- `oversharpened`: a logistic model on those features (engine/weights/sharpness.json, fitted by
  scripts/fit_sharpness.py on the training photos' composites), the probability that undoing ``S_4``
  brings the person closer to the truth; `engine.Harmonizer` undoes `undo_share(p)` of it: p of the
  whole inverse (a probability is not a decision: all-or-nothing at p > 0.5 did worse).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# PIL's SMOOTH filter, which torchvision's adjust_sharpness blends the image with.
SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
DEFAULT_FACTOR = 4.0  # the FFHQH recipe's sharpness
MODEL_PATH = Path(__file__).resolve().parent / "weights" / "sharpness.json"
# How much of the inverse to apply, from the model's probability p: UNDO_STRENGTH x a ramp over p (here p
# itself). Chosen on the training composites (924 at 512 px, the shipped weights behind the colour prior;
# docs/model_card.md) as the most PSNR that keeps the person's texture above 0.92x the truth's: the whole
# inverse times p gives 29.50 dB / detail 0.96 there; ramps from p 0.25 to 0.75 29.49, 0.1 to 0.5 29.45;
# an all-or-nothing p > 0.5 decision 29.28 (whole inverse) or 29.18 (three quarters, the first rule).
UNDO_STRENGTH = 1.0
UNDO_RAMP = (0.0, 1.0)
RADIUS = 3  # the inverse filter's half size (inverse_sharpen_kernel's default)
#: cv2.cvtColor's RGB -> grey for uint8, fixed point (15 bits): the weights of 0.299, 0.587, 0.114.
GREY_FIXED = (9798, 19235, 3735)
FEATURES = ("fg fine/middle", "fg middle/coarse", "bg fine/middle", "bg middle/coarse", "fine fg/bg")


def sharpen(image: np.ndarray, factor: float) -> np.ndarray:
    """``S_f``: (1 - f)·smooth + f·image, float32 (reflected borders; the reference for the inverse)."""
    image = image.astype(np.float32)
    smooth = cv2.filter2D(image, -1, SMOOTH_KERNEL, borderType=cv2.BORDER_REFLECT)
    return (1.0 - factor) * smooth + factor * image


@lru_cache(maxsize=8)
def inverse_sharpen_kernel(factor: float = DEFAULT_FACTOR, radius: int = RADIUS) -> np.ndarray:
    """(2r+1)² float32 kernel with ``S_f``'s inverse response, from the exact inverse sampled on a 64² grid
    (its taps fall off by about 4x per pixel for f = 4: a 7x7 kernel leaves under 1 % of the response)."""
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    n = 64
    k = np.fft.fftfreq(n) * 2 * np.pi
    ky, kx = k[:, None], k[None, :]
    smooth = (5 + 2 * np.cos(kx) + 2 * np.cos(ky) + 4 * np.cos(kx) * np.cos(ky)) / 13.0
    response = (1.0 - factor) * smooth + factor
    if np.abs(response).min() < 1e-3:
        raise ValueError(f"sharpening by {factor} cannot be undone (its response reaches 0)")
    spatial = np.real(np.fft.fftshift(np.fft.ifft2(1.0 / response)))
    c = n // 2
    kernel = spatial[c - radius:c + radius + 1, c - radius:c + radius + 1]
    return (kernel / kernel.sum()).astype(np.float32)  # DC gain exactly 1: colours are left alone


def unsharpen(image: np.ndarray, factor: float = DEFAULT_FACTOR, strength: float = 1.0) -> np.ndarray:
    """Undo ``S_factor`` on a uint8 image: ``image + strength·(inverse(image) - image)``, uint8."""
    kernel = inverse_sharpen_kernel(float(factor))
    if strength != 1.0:
        identity = np.zeros_like(kernel)
        identity[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1.0
        kernel = identity + np.float32(strength) * (kernel - identity)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def unsharpen_person(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                     strength: float) -> np.ndarray:
    """A copy of uint8 `image` with the person (mask > 0, inside `box` = (y0, y1, x0, x1)) un-sharpened by
    `strength` (`unsharpen`); every pixel where the mask is 0 is the image's own."""
    y0, y1, x0, x1 = box
    height, width = image.shape[:2]
    # The filter reads RADIUS pixels around the box too: the box's own edge is not reflected, and the
    # result is the whole frame's filter (the GPU path's, unsharpen_torch) within the box.
    a0, a1, b0, b1 = max(y0 - RADIUS, 0), min(y1 + RADIUS, height), max(x0 - RADIUS, 0), min(x1 + RADIUS, width)
    filtered = unsharpen(image[a0:a1, b0:b1], strength=strength)[y0 - a0:y1 - a0, x0 - b0:x1 - b0]
    out = image.copy()
    np.copyto(out[y0:y1, x0:x1], filtered, where=mask[y0:y1, x0:x1, None] > 0)
    return out


def _band_energies(grey: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Mean squared fine (x - smooth(x)), middle (G0.8 - G1.6) and coarse (G1.6 - G3.2) bands over region."""
    fine = grey - cv2.filter2D(grey, -1, SMOOTH_KERNEL, borderType=cv2.BORDER_REFLECT)
    g1 = cv2.GaussianBlur(grey, (0, 0), 0.8)
    g2 = cv2.GaussianBlur(grey, (0, 0), 1.6)
    g3 = cv2.GaussianBlur(grey, (0, 0), 3.2)
    return np.array([float(np.mean(np.square(band[region]))) for band in (fine, g1 - g2, g2 - g3)]) + 1e-3


def sharpness_features(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """`FEATURES` of a uint8 RGB picture and its person mask (H×W, 0..1), or None where the person or the
    background has under 1 % of the picture (nothing to compare)."""
    person = mask >= 0.5
    # A few pixels off the edge on both sides: the edge itself mixes both regions' textures.
    kernel = np.ones((5, 5), np.uint8)
    inside = cv2.erode(person.astype(np.uint8), kernel) > 0
    outside = cv2.erode((~person).astype(np.uint8), kernel) > 0
    if inside.mean() < 0.01 or outside.mean() < 0.01:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    fg, bg = _band_energies(grey, inside), _band_energies(grey, outside)
    return np.log(np.array([fg[0] / fg[1], fg[1] / fg[2], bg[0] / bg[1], bg[1] / bg[2], fg[0] / bg[0]]))


@lru_cache(maxsize=1)
def _model(path: Path = MODEL_PATH) -> tuple[np.ndarray, float, float]:
    data = json.loads(Path(path).read_text())
    if list(data["features"]) != list(FEATURES):
        raise ValueError(f"{path}: features {data['features']} are not {list(FEATURES)}")
    return np.asarray(data["mean"], np.float64), np.asarray(data["weights"], np.float64), float(data["bias"])


def undo_share(probability: float) -> float:
    """The share of a sharpening to undo (0..UNDO_STRENGTH) for the model's probability that there is one."""
    lo, hi = UNDO_RAMP
    return UNDO_STRENGTH * min(1.0, max(0.0, (float(probability) - lo) / (hi - lo)))


def oversharpened(features: np.ndarray | None, path: Path = MODEL_PATH) -> float:
    """Probability (0..1) that the person was sharpened; 0 without features."""
    if features is None or not np.all(np.isfinite(features)):
        return 0.0
    mean, weights, bias = _model(path)
    z = float((features - mean) @ weights + bias)
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


# -- the same on a torch device (engine.device_harmonizer): whole frames, no host round trip -------------------

def _pad(x, r: int, mode: str):
    """(B, C, H, W) padded by r: "reflect" is cv2's BORDER_REFLECT_101 (GaussianBlur's default), "symmetric"
    cv2's BORDER_REFLECT (the edge pixel repeated; filter2D here)."""
    import torch
    import torch.nn.functional as F

    if mode == "reflect":
        return F.pad(x, (r, r, r, r), mode="reflect")
    x = torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)
    return torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)


def _filter(x, kernel, mode: str):
    """x (B, C, H, W) filtered by a 2-D kernel (k, k) tensor per channel, cv2.filter2D's correlation."""
    import torch.nn.functional as F

    r, channels = kernel.shape[-1] // 2, x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, *kernel.shape[-2:])
    return F.conv2d(_pad(x, r, mode), weight, groups=channels)


def torch_constants(device, factor: float = DEFAULT_FACTOR, path: Path = MODEL_PATH) -> dict:
    """The filters' kernels and the detector's model as tensors on `device`, made once: a host-to-device
    copy inside the frame's step would wait for the host and cannot be captured in a CUDA graph."""
    import torch

    def tensor(a):
        return torch.as_tensor(np.asarray(a, np.float32), device=device)

    def gaussian(sigma: float):  # cv2.GaussianBlur(x, (0, 0), sigma) of a float picture: its size rule, its weights
        taps = cv2.getGaussianKernel(int(round(sigma * 8 + 1)) | 1, sigma, cv2.CV_32F).ravel()
        return tensor(np.outer(taps, taps))

    identity = np.zeros((2 * RADIUS + 1,) * 2, np.float32)
    identity[RADIUS, RADIUS] = 1.0
    mean, weights, bias = _model(path)
    return {"smooth": tensor(SMOOTH_KERNEL), "gaussians": [gaussian(s) for s in (0.8, 1.6, 3.2)],
            "inverse": tensor(inverse_sharpen_kernel(float(factor))), "identity": tensor(identity),
            "mean": tensor(mean), "weights": tensor(weights), "bias": float(bias)}


def sharpness_features_torch(image, mask, constants: dict):
    """`sharpness_features` on a device: image (1, 3, H, W) RGB at 0..255 (whole numbers), mask (1, 1, H, W)
    in [0, 1], `torch_constants`. Returns (features (5,), whether there were enough of both regions)."""
    import torch
    import torch.nn.functional as F

    r, g, b = GREY_FIXED
    grey = torch.floor((image[:, 0:1] * r + image[:, 1:2] * g + image[:, 2:3] * b + 16384) / 32768)
    person = (mask >= 0.5).float()
    # cv2.erode's 5x5 with its default border (outside counts as set): a min-pool that ignores the padding.
    inside, outside = (-F.max_pool2d(-p, 5, stride=1, padding=2) for p in (person, 1 - person))
    smooth = _filter(grey, constants["smooth"], "symmetric")
    g1, g2, g3 = (_filter(grey, kernel, "reflect") for kernel in constants["gaussians"])
    bands = torch.cat([grey - smooth, g1 - g2, g2 - g3], dim=1) ** 2  # (1, 3, H, W)

    def energies(region):
        return (bands * region).sum(dim=(0, 2, 3)) / region.sum().clamp_min(1) + 1e-3

    fg, bg = energies(inside), energies(outside)
    features = torch.log(torch.stack([fg[0] / fg[1], fg[1] / fg[2], bg[0] / bg[1], bg[1] / bg[2], fg[0] / bg[0]]))
    return features, (inside.mean() >= 0.01) & (outside.mean() >= 0.01)


def undo_share_torch(features, valid, constants: dict):
    """`undo_share(oversharpened(...))` on a device (`torch_constants`): 0 where the features are missing or
    not finite."""
    import torch

    z = (features - constants["mean"]) @ constants["weights"] + constants["bias"]
    p = torch.sigmoid(z.clamp(-50, 50))
    p = torch.where(valid & torch.isfinite(features).all(), p, torch.zeros_like(p))
    lo, hi = UNDO_RAMP
    return UNDO_STRENGTH * ((p - lo) / (hi - lo)).clamp(0, 1)


def unsharpen_torch(image, strength, constants: dict):
    """`unsharpen` of the whole frame on a device: image (1, 3, H, W) at 0..255, strength a 0-d tensor,
    `torch_constants`; rounded and saturated as cv2.filter2D's uint8 result."""
    import torch

    identity = constants["identity"]
    kernel = identity + strength.float() * (constants["inverse"] - identity)
    return torch.round(_filter(image.float(), kernel, "symmetric")).clamp(0, 255)
