"""Temporal smoothing of PN sufficient statistics: the caller-owned state of the forward contract."""

from __future__ import annotations

import pytest
import torch

from engine.phnet import create_model

H, W = 32, 48


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def scene(background_rgb, person=True, seed=0):
    """A textured background of one colour and a grey textured person (a centred box)."""
    generator = torch.Generator().manual_seed(seed)
    composite = torch.tensor(background_rgb).view(1, 3, 1, 1) + 0.1 * torch.rand(
        1, 3, H, W, generator=generator
    )
    mask = torch.zeros(1, 1, H, W)
    if person:
        mask[..., 8:28, 16:32] = 1
        composite = composite * (1 - mask) + (0.5 + 0.2 * torch.rand(1, 3, H, W, generator=generator)) * mask
    return composite.clamp(0, 1), mask


def step(model, composite, mask, stats_in, momentum):
    with torch.no_grad():
        return model(composite, mask, 1 - mask, stats_in, torch.tensor([momentum]))


@pytest.fixture(params=["phnet-xs", "stats"])
def model(request):
    torch.manual_seed(0)
    return create_model(request.param).eval()


def test_momentum_zero_is_exactly_stateless(model):
    composite, mask = scene((0.2, 0.5, 0.3))
    fresh = step(model, composite, mask, torch.zeros(1, model.stats_size), 0.0)
    garbage = torch.randn(1, model.stats_size) * 100  # any previous state is ignored
    stale = step(model, composite, mask, garbage, 0.0)
    assert torch.equal(fresh[0], stale[0]) and torch.equal(fresh[1], stale[1])


def test_step_change_in_background_converges_geometrically(model):
    momentum = 0.7
    old, mask = scene((0.8, 0.3, 0.2))
    new, _ = scene((0.1, 0.3, 0.8))
    _, stats = step(model, old, mask, torch.zeros(1, model.stats_size), 0.0)
    target_image, target = step(model, new, mask, torch.zeros(1, model.stats_size), 0.0)
    # Statistics of the raw image (the whole "stats" model, PHNet's PFE slice) follow the EMA exactly.
    _, start, stop = model.stats_layout[0]
    errors, image_errors = [], []
    for _ in range(25):
        harmonized, stats = step(model, new, mask, stats, momentum)
        errors.append((stats - target)[:, start:stop].abs().max().item())
        image_errors.append((harmonized - target_image).abs().max().item())
    ratios = [b / a for a, b in zip(errors[:10], errors[1:11])]
    assert ratios == pytest.approx([momentum] * 10, rel=1e-3)
    # The whole state and the image converge too (deeper PN blocks see features that themselves
    # depend on smoothed statistics, so only the first slice is exactly geometric).
    assert (stats - target).abs().max().item() < 1e-3 * (1 + target.abs().max().item())
    assert image_errors[-1] < 0.01 * image_errors[0] + 1e-4


def test_person_leaving_the_frame_stays_finite_and_recovers(model):
    momentum = 0.8
    with_person, mask = scene((0.3, 0.6, 0.2))
    without_person, empty = scene((0.3, 0.6, 0.2), person=False)
    stats = torch.zeros(1, model.stats_size)
    frames = [(with_person, mask)] * 5 + [(without_person, empty)] * 10 + [(with_person, mask)] * 40
    outputs = []
    for composite, m in frames:
        harmonized, stats = step(model, composite, m, stats, momentum)
        assert torch.isfinite(harmonized).all() and torch.isfinite(stats).all()
        assert harmonized.min() >= 0 and harmonized.max() <= 1
        outputs.append(harmonized)
    stateless, _ = step(model, with_person, mask, torch.zeros(1, model.stats_size), 0.0)
    first_back = (outputs[15] - stateless).abs().max().item()
    last = (outputs[-1] - stateless).abs().max().item()
    assert last < 1e-3 and last <= first_back


def test_zero_state_is_a_reset(model):
    """After a stream, zeros + momentum 0 gives exactly the fresh result; zeros + momentum > 0 is close,
    because means are ratios of sums (S1/S0) that a zero state scales alike."""
    composite, mask = scene((0.7, 0.7, 0.1))
    fresh, _ = step(model, composite, mask, torch.zeros(1, model.stats_size), 0.0)
    stats = torch.zeros(1, model.stats_size)
    for colour in ((0.1, 0.2, 0.9), (0.9, 0.1, 0.1)):
        _, stats = step(model, scene(colour)[0], mask, stats, 0.9)
    assert not torch.allclose(step(model, composite, mask, stats, 0.9)[0], fresh, atol=1e-3)
    assert torch.equal(step(model, composite, mask, torch.zeros_like(stats), 0.0)[0], fresh)
    warm_start, _ = step(model, composite, mask, torch.zeros_like(stats), 0.5)
    assert (warm_start - fresh).abs().max().item() < 0.05
