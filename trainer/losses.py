"""PHNet's training losses (paper §4.4) and the IPH luminance-matching loss, as pure functions.

Images are (B, 3, H, W) float in [0, 1]; masks (B, 1, H, W) in [0, 1]. Every term is computed per image
and averaged over the batch. Choices where the paper and the authors' code differ:

- PSNR loss: the authors' form, ``100 / PSNR(pred, target)`` with MAX = 1 (the paper writes
  100 / log10(max/||e||), the same quantity up to a constant factor 20). The MSE is floored at 1e-10
  (PSNR 100 dB) so a perfect prediction gives a finite loss.
- FN-MSE (foreground-normalised MSE): the squared error summed over all pixels and channels, divided by
  max(A_min, foreground area in pixels), A_min = 100: big errors on small people are not drowned out.
- Gradient loss: the authors' form, the mean absolute difference between forward differences (x and y)
  of the masked prediction and the masked target.
- Luminance matching (optional, IPH): |p90 - p90_ref| + |mean - mean_ref| + |p10 - p10_ref| of luma
  (ITU-R 601) over the predicted person (mask > 0.5) against the target's reference region
  (reference > 0.5, by default the background 1 - mask).
"""

from __future__ import annotations

import torch

LOSS_WEIGHTS = {"psnr": 0.2, "fn_mse": 0.01, "grad": 0.01}  # the paper's weights
A_MIN = 100.0
_MSE_FLOOR = 1e-10
_LUMA = (0.299, 0.587, 0.114)


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"pred and target must both be (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]
                             or mask.shape[0] != pred.shape[0]):
        raise ValueError(f"mask must be (B, 1, H, W) = {(pred.shape[0], 1, *pred.shape[2:])}, got {tuple(mask.shape)}")


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over the batch of 100 / PSNR(pred, target), MAX = 1."""
    _check(pred, target)
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(_MSE_FLOOR)
    psnr = 10.0 * torch.log10(1.0 / mse)
    return (100.0 / psnr).mean()


def fn_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, a_min: float = A_MIN) -> torch.Tensor:
    """mean over the batch of sum((pred - target)^2) / max(a_min, sum(mask))."""
    _check(pred, target, mask)
    sse = ((pred - target) ** 2).flatten(1).sum(1)
    area = mask.flatten(1).sum(1).clamp_min(a_min)
    return (sse / area).mean()


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between forward differences of masked pred and masked target (x and y terms added)."""
    _check(pred, target, mask)
    p, t = pred * mask, target * mask
    dx = ((p[..., :, 1:] - p[..., :, :-1]) - (t[..., :, 1:] - t[..., :, :-1])).abs().flatten(1).mean(1)
    dy = ((p[..., 1:, :] - p[..., :-1, :]) - (t[..., 1:, :] - t[..., :-1, :])).abs().flatten(1).mean(1)
    return (dx + dy).mean()


def luma(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, H, W) ITU-R 601 luma."""
    w = image.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (image * w).sum(1)


def luminance_matching_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                            reference: torch.Tensor | None = None) -> torch.Tensor:
    """IPH's L_LM: shadows, mid-tones and highlights of the person's luma matched to the reference region.

    Images with an empty person or reference region contribute 0.
    """
    _check(pred, target, mask)
    if reference is None:
        reference = 1.0 - mask
    _check(pred, target, reference)
    y_pred, y_ref = luma(pred), luma(target)
    q = pred.new_tensor([0.1, 0.9])
    terms = []
    for b in range(pred.shape[0]):
        fg, ref = y_pred[b][mask[b, 0] > 0.5], y_ref[b][reference[b, 0] > 0.5]
        if fg.numel() == 0 or ref.numel() == 0:
            terms.append(pred.new_zeros(()))
            continue
        pf, pr = torch.quantile(fg, q), torch.quantile(ref, q)
        terms.append((pf - pr).abs().sum() + (fg.mean() - ref.mean()).abs())
    return torch.stack(terms).mean()


def harmonization_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       weights: dict[str, float] | None = None, lm_weight: float = 0.0,
                       reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The weighted sum of the terms, as ``{"total": ..., "psnr": ..., "fn_mse": ..., "grad": ...}``
    (plus ``"lm"`` when ``lm_weight`` > 0). Terms are unweighted; ``total`` is the weighted sum.

    Raises:
        ValueError: if shapes do not match.
    """
    weights = {**LOSS_WEIGHTS, **(weights or {})}
    terms = {
        "psnr": psnr_loss(pred, target),
        "fn_mse": fn_mse_loss(pred, target, mask),
        "grad": gradient_loss(pred, target, mask),
    }
    total = sum(weights[k] * v for k, v in terms.items())
    if lm_weight > 0:
        terms["lm"] = luminance_matching_loss(pred, target, mask, reference)
        total = total + lm_weight * terms["lm"]
    return {"total": total, **terms}
