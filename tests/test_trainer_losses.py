"""trainer.losses and trainer.lion against hand-computed values and Lion's update rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.lion import Lion
from trainer.losses import (
    fn_mse_loss,
    gradient_loss,
    harmonization_loss,
    luminance_matching_loss,
    psnr_loss,
)


def _ramp():
    # One 2x2 image, the same in every channel: [[0, .2], [.4, .6]].
    t = torch.tensor([[0.0, 0.2], [0.4, 0.6]]).expand(1, 3, 2, 2).clone()
    return torch.zeros_like(t), t


def test_psnr_loss_hand_value():
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1)
    # MSE 0.01 -> PSNR 20 dB -> 100 / 20
    assert psnr_loss(pred, target).item() == pytest.approx(5.0, rel=1e-5)


def test_psnr_loss_averages_per_image_and_is_finite_when_perfect():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.stack([torch.full((3, 2, 2), 0.1), torch.full((3, 2, 2), 0.01)])
    # images: PSNR 20 and 40 -> (5 + 2.5) / 2
    assert psnr_loss(pred, target).item() == pytest.approx(3.75, rel=1e-5)
    assert math.isfinite(psnr_loss(target, target).item())


def test_fn_mse_hand_value_and_a_min():
    pred, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # squared error summed over 12 values = 0.12; area 2 < A_min 100
    assert fn_mse_loss(pred, target, mask).item() == pytest.approx(0.12 / 100, rel=1e-5)
    assert fn_mse_loss(pred, target, mask, a_min=1.0).item() == pytest.approx(0.12 / 2, rel=1e-5)


def test_gradient_loss_hand_value():
    pred, target = _ramp()
    mask = torch.ones(1, 1, 2, 2)
    # x differences of the target: 0.2 and 0.2; y differences: 0.4 and 0.4; pred is flat.
    assert gradient_loss(pred, target, mask).item() == pytest.approx(0.2 + 0.4, rel=1e-5)
    # Masking out the bottom row gives [[0, .2], [0, 0]]: x differences 0.2 and 0 (mean 0.1), y differences
    # 0 and -0.2 (mean |.| 0.1).
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert gradient_loss(pred, target, mask).item() == pytest.approx(0.1 + 0.1, rel=1e-5)


def test_luminance_matching_hand_value():
    # Grey pixels: luma equals the value. Person = first 5 pixels of the prediction, reference = last 5 of
    # the target. torch.quantile interpolates linearly: p10 of [0, .1, .2, .3, .4] is 0.04, p90 0.36.
    values = torch.arange(10, dtype=torch.float32) / 10
    image = values.view(1, 1, 1, 10).expand(1, 3, 1, 10).clone()
    mask = (torch.arange(10) < 5).float().view(1, 1, 1, 10)
    loss = luminance_matching_loss(image, image, mask)
    assert loss.item() == pytest.approx(abs(0.04 - 0.54) + abs(0.36 - 0.86) + abs(0.2 - 0.7), rel=1e-5)


def test_total_is_the_weighted_sum_and_terms_are_reported():
    pred, target = _ramp()
    mask = torch.ones(1, 1, 2, 2)
    out = harmonization_loss(pred, target, mask, lm_weight=0.5)
    assert set(out) == {"total", "psnr", "fn_mse", "grad", "lm"}
    expected = 0.2 * out["psnr"] + 0.01 * out["fn_mse"] + 0.01 * out["grad"] + 0.5 * out["lm"]
    assert out["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="pred and target"):
        psnr_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        fn_mse_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_lion_follows_its_update_rule():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(4)]
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    param = torch.nn.Parameter(torch.tensor(p0))
    opt = Lion([param], lr=lr, betas=(b1, b2), weight_decay=wd)
    p, m = p0.copy(), np.zeros(5)
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
        c = b1 * m + (1 - b1) * g
        p = p * (1 - lr * wd) - lr * np.sign(c)
        m = b2 * m + (1 - b2) * g
        np.testing.assert_allclose(param.detach().numpy(), p, rtol=0, atol=1e-12)


def test_lion_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="lr"):
        Lion([torch.nn.Parameter(torch.zeros(1))], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Lion([torch.nn.Parameter(torch.zeros(1))], betas=(1.0, 0.9))
