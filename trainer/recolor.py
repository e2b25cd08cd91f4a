"""The FFHQH re-colouring recipe in NumPy/OpenCV (torchvision is not a dependency).

PHNet's FFHQH composites re-colour the person with torchvision's ColorJitter(brightness 0.5, contrast 0.4,
saturation 0.06, hue 0.05), then RandomPosterize(6 bits, p 0.5), RandomAdjustSharpness(4, p 0.5) and
RandomAutocontrast(p 0.5), and paste the person back on its own photo; the photo is the ground truth.
Each operation below follows torchvision's definition on uint8 RGB images (H, W, 3), so composites made
here have the same statistics as the published set. All randomness comes from a caller-owned
``numpy.random.Generator`` so that every composite is reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class RecolorRecipe:
    """Strengths of the FFHQH foreground perturbation (defaults: the paper's)."""

    brightness: float = 0.5  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4  # factor drawn from [1 - c, 1 + c]
    saturation: float = 0.06  # factor drawn from [1 - s, 1 + s]
    hue: float = 0.05  # shift drawn from [-h, h] of a full turn
    posterize_bits: int = 6
    posterize_p: float = 0.5
    sharpness: float = 4.0
    sharpness_p: float = 0.5
    autocontrast_p: float = 0.5


DEFAULT_RECIPE = RecolorRecipe()


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got {got}")


def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    """torchvision's _blend: factor*image + (1-factor)*other, clipped to 0..255, kept in float."""
    return np.clip(factor * image + (1.0 - factor) * other, 0.0, 255.0)


def grayscale(image: np.ndarray) -> np.ndarray:
    """Luma (H, W, 1) of a float or uint8 RGB image, float32."""
    return (image.astype(np.float32) @ _LUMA)[..., None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale towards black (factor < 1) or brighter (> 1); float in/out (0..255)."""
    return _blend(image, 0.0, factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean luma of the whole image (torchvision's definition, truncated to an integer
    mean as it does for uint8 images)."""
    mean = float(np.floor(grayscale(np.round(image)).mean()))
    return _blend(image, mean, factor)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's own luma."""
    return _blend(image, grayscale(image), factor)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate hue by ``shift`` of a full turn (-0.5..0.5) in HSV."""
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"hue shift must be in [-0.5, 0.5], got {shift}")
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees 0..360
    hsv[..., 0] = np.mod(hsv[..., 0] + shift * 360.0, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` bits of each uint8 channel."""
    if not 1 <= bits <= 8:
        raise ValueError(f"posterize bits must be in 1..8, got {bits}")
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return image & mask


def adjust_sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with torchvision's smoothing kernel [[1,1,1],[1,5,1],[1,1,1]]/13; the 1-pixel border is
    left as is (torchvision does the same); uint8 in, uint8 out."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0
    smooth = cv2.filter2D(image.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)
    smooth = np.round(smooth)
    smooth[0, :], smooth[-1, :], smooth[:, 0], smooth[:, -1] = image[0, :], image[-1, :], image[:, 0], image[:, -1]
    return np.round(_blend(image.astype(np.float32), smooth, factor)).astype(np.uint8)


def autocontrast(image: np.ndarray) -> np.ndarray:
    """Stretch each channel's min..max to 0..255 (a flat channel is left unchanged)."""
    img = image.astype(np.float32)
    lo = img.min(axis=(0, 1), keepdims=True)
    hi = img.max(axis=(0, 1), keepdims=True)
    flat = hi <= lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    lo = np.where(flat, 0.0, lo)
    return np.clip(np.round((img - lo) * scale), 0, 255).astype(np.uint8)


def recolor(image: np.ndarray, rng: np.random.Generator, recipe: RecolorRecipe = DEFAULT_RECIPE) -> np.ndarray:
    """Apply the FFHQH perturbation to a whole uint8 RGB image (the caller pastes the person back).

    ColorJitter's four operations run in a random order, each with a fresh factor; then posterize,
    sharpness and autocontrast each with their probability, as torchvision's Compose would.

    Raises:
        ValueError: if ``image`` is not uint8 (H, W, 3).
    """
    _check_image(image)
    out = image.astype(np.float32)
    for op in rng.permutation(4):
        if op == 0 and recipe.brightness > 0:
            out = adjust_brightness(out, rng.uniform(max(0.0, 1 - recipe.brightness), 1 + recipe.brightness))
        elif op == 1 and recipe.contrast > 0:
            out = adjust_contrast(out, rng.uniform(max(0.0, 1 - recipe.contrast), 1 + recipe.contrast))
        elif op == 2 and recipe.saturation > 0:
            out = adjust_saturation(out, rng.uniform(max(0.0, 1 - recipe.saturation), 1 + recipe.saturation))
        elif op == 3 and recipe.hue > 0:
            out = adjust_hue(out, rng.uniform(-recipe.hue, recipe.hue))
    # torchvision works on uint8 tensors between operations for uint8 input: round once here.
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if rng.random() < recipe.posterize_p:
        out = posterize(out, recipe.posterize_bits)
    if rng.random() < recipe.sharpness_p:
        out = adjust_sharpness(out, recipe.sharpness)
    if rng.random() < recipe.autocontrast_p:
        out = autocontrast(out)
    return out


def composite(real: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              recipe: RecolorRecipe = DEFAULT_RECIPE) -> np.ndarray:
    """A training composite: the re-coloured person pasted back on its own photo with the soft ``mask``.

    Args:
        real: uint8 RGB (H, W, 3), the ground truth.
        mask: (H, W) float in [0, 1] or uint8 0..255, the person.
        rng: the source of every random choice.
        recipe: perturbation strengths.

    Returns:
        uint8 RGB (H, W, 3), equal to ``real`` wherever ``mask`` is 0.

    Raises:
        ValueError: if shapes or dtypes do not match.
    """
    _check_image(real)
    if mask.shape != real.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {real.shape[:2]}")
    alpha = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    fg = recolor(real, rng, recipe).astype(np.float32)
    out = fg * alpha + real.astype(np.float32) * (1.0 - alpha)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
