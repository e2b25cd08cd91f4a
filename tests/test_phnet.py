"""Model construction, shapes and edge cases of every model from engine.phnet.create_model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.config import VARIANTS, PHNetConfig, StatsConfig
from engine.export import example_inputs
from engine.phnet import MODEL_NAMES, create_model

TINY = {"widths": (4, 4, 8, 8, 8, 8)}  # the full structure at a width that runs in milliseconds


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run(model, composite, mask, reference=None, stats_in=None, momentum=0.0):
    reference = 1 - mask if reference is None else reference
    stats_in = torch.zeros(composite.shape[0], model.stats_size) if stats_in is None else stats_in
    return model(composite, mask, reference, stats_in, torch.tensor([momentum]))


def blob_mask(h, w, batch=1):
    mask = torch.zeros(batch, 1, h, w)
    mask[..., h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 1
    return mask


def test_model_names_cover_variants_and_stats():
    assert set(MODEL_NAMES) == {"phnet", "phnet-s", "phnet-xs", "stats"} == set(VARIANTS) | {"stats"}


@pytest.mark.parametrize("name,expected,tolerance", [("phnet", 39.9e6, 0.01), ("phnet-s", 10.0e6, 0.02)])
def test_parameter_counts_match_the_paper(name, expected, tolerance):
    count = n_params(create_model(name))
    assert abs(count - expected) <= tolerance * expected, f"{name}: {count} parameters"


def test_phnet_xs_is_small():
    assert n_params(create_model("phnet-xs")) < 1_000_000


def test_stats_model_has_no_trainable_weights():
    model = create_model("stats")
    assert n_params(model) == 0
    assert model.state_dict() == {}


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="phnet-xs"):
        create_model("phnet-xxl")


def test_unknown_override_and_bad_config_raise():
    with pytest.raises(TypeError, match="widht"):
        create_model("phnet-xs", widht=(1,))
    with pytest.raises(ValueError, match="6 entries"):
        create_model("phnet-xs", widths=(8, 8))
    with pytest.raises(ValueError, match="local_weight"):
        create_model("stats", local_weight=2.0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trips_through_json(name):
    model = create_model(name, **(TINY if name.startswith("phnet") else {}))
    config = json.loads(json.dumps(dataclasses.asdict(model.config)))
    rebuilt = create_model(model.name, **config)
    assert rebuilt.config == model.config
    assert rebuilt.stats_size == model.stats_size
    assert isinstance(model.config, (PHNetConfig, StatsConfig))
    assert [k for k, _ in rebuilt.state_dict().items()] == list(model.state_dict())


@pytest.mark.parametrize("overrides", [TINY, {}], ids=["tiny-phnet", "phnet-xs"])
def test_every_parameter_receives_a_gradient(overrides):
    torch.manual_seed(0)
    model = create_model("phnet-xs", **overrides).train()
    composite = torch.rand(2, 3, 16, 24)
    mask = torch.rand(2, 1, 16, 24)
    harmonized, stats_out = run(model, composite, mask, momentum=0.3)
    (harmonized.mean() + 1e-3 * stats_out.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_without_pfe_the_state_layout_is_unchanged_and_pfe_gets_no_gradient():
    with_pfe = create_model("phnet-xs", **TINY)
    without = create_model("phnet-xs", **TINY, use_pfe=False)
    assert with_pfe.stats_size == without.stats_size
    harmonized, _ = run(without, torch.rand(2, 3, 16, 16), blob_mask(16, 16, 2))
    harmonized.mean().backward()
    assert without.pfe.weight.grad is None


def test_stats_size_does_not_depend_on_resolution():
    model = create_model("phnet-xs", **TINY).eval()
    with torch.no_grad():
        for h, w in [(8, 8), (32, 48)]:
            _, stats_out = run(model, torch.rand(1, 3, h, w), blob_mask(h, w))
            assert stats_out.shape == (1, model.stats_size)


MASKS = {
    "empty": lambda h, w: torch.zeros(1, 1, h, w),
    "full": lambda h, w: torch.ones(1, 1, h, w),
    "one_pixel": lambda h, w: torch.zeros(1, 1, h, w).index_put_(
        (torch.tensor(0), torch.tensor(0), torch.tensor(h // 2), torch.tensor(w // 2)), torch.tensor(1.0)
    ),
    "soft": lambda h, w: torch.rand(1, 1, h, w),
}


@pytest.mark.parametrize("name", ["phnet-xs", "stats"])
@pytest.mark.parametrize("size", [(8, 8), (24, 40)])
@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_outputs_are_finite_in_range_for_edge_cases(name, size, mask_kind):
    torch.manual_seed(1)
    model = create_model(name).eval()
    mask = MASKS[mask_kind](*size)
    for composite in (torch.rand(1, 3, *size), torch.full((1, 3, *size), 0.4)):  # random and constant
        with torch.no_grad():
            harmonized, stats_out = run(model, composite, mask, momentum=0.5)
        assert harmonized.shape == (1, 3, *size) and harmonized.dtype == torch.float32
        assert stats_out.shape == (1, model.stats_size)
        assert torch.isfinite(harmonized).all() and torch.isfinite(stats_out).all()
        assert harmonized.min() >= 0 and harmonized.max() <= 1


def test_stats_model_leaves_background_and_constant_images_alone():
    model = create_model("stats")
    composite = torch.rand(1, 3, 16, 16)
    mask = blob_mask(16, 16)
    harmonized, _ = run(model, composite, mask)
    torch.testing.assert_close(harmonized * (1 - mask), composite * (1 - mask))
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(run(model, flat, mask)[0], flat, atol=1e-4, rtol=0)
    # No person: the output is the composite.
    torch.testing.assert_close(run(model, composite, torch.zeros_like(mask))[0], composite)


def test_reference_region_pulls_the_foreground_towards_its_colour():
    """IPH seed: a reference on a red region reddens the person, one on a blue region makes it bluer."""
    torch.manual_seed(2)
    h, w = 32, 48
    composite = 0.4 + 0.1 * torch.rand(1, 3, h, w)  # grey person and background
    composite[:, :, :, :12] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # red strip on the left
    composite[:, :, :, -12:] = torch.tensor([0.1, 0.1, 0.9]).view(1, 3, 1, 1)  # blue strip on the right
    mask = blob_mask(h, w)
    red_ref = torch.zeros_like(mask)
    red_ref[..., :12] = 1
    blue_ref = torch.zeros_like(mask)
    blue_ref[..., -12:] = 1
    model = create_model("stats")

    def fg_mean(reference):
        out, _ = run(model, composite, mask, reference)
        return (out * mask).sum((0, 2, 3)) / mask.sum()

    before = (composite * mask).sum((0, 2, 3)) / mask.sum()
    red, blue = fg_mean(red_ref), fg_mean(blue_ref)
    assert red[0] - red[2] > before[0] - before[2] + 0.5  # much redder than it was
    assert blue[2] - blue[0] > before[2] - before[0] + 0.5  # much bluer than it was
    assert red[0] > blue[0] and blue[2] > red[2]


def test_bad_inputs_raise_clear_errors():
    model = create_model("phnet-xs", **TINY)
    composite, mask = torch.rand(1, 3, 16, 16), blob_mask(16, 16)
    stats, momentum = torch.zeros(1, model.stats_size), torch.tensor([0.0])
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.rand(1, 3, 12, 16), torch.rand(1, 1, 12, 16), torch.rand(1, 1, 12, 16), stats, momentum)
    with pytest.raises(ValueError, match="stats_in"):
        model(composite, mask, 1 - mask, torch.zeros(1, 7), momentum)
    with pytest.raises(ValueError, match="reference"):
        model(composite, mask, torch.zeros(1, 1, 8, 8), stats, momentum)
    with pytest.raises(TypeError, match="composite"):
        model(composite.numpy(), mask, 1 - mask, stats, momentum)


@pytest.mark.parametrize("mask_kind", ["empty", "full", "one_pixel"])
def test_gradients_are_finite_for_degenerate_masks_and_flat_images(mask_kind):
    model = create_model("phnet-xs", **TINY).train()
    mask = MASKS[mask_kind](16, 16).expand(2, 1, 16, 16).clone().requires_grad_(True)
    composite = torch.full((2, 3, 16, 16), 0.5)
    composite[1] = torch.rand(3, 16, 16)
    composite.requires_grad_(True)
    harmonized, stats_out = run(model, composite, mask, momentum=0.5)
    (harmonized.mean() + stats_out.mean()).backward()
    grads = [composite.grad, mask.grad] + [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["phnet-xs", "stats"])
def test_half_precision_runs_close_to_float(name):
    """fp16 backends (CUDA, TensorRT) run the same source: statistics stay finite and close."""
    torch.manual_seed(3)
    model = create_model(name).eval()
    composite, mask = torch.rand(1, 3, 32, 32), blob_mask(32, 32)
    with torch.no_grad():
        expected, expected_stats = run(model, composite, mask)
        got, got_stats = run(
            model.half(), composite.half(), mask.half(), stats_in=torch.zeros(1, model.stats_size).half()
        )
    assert torch.isfinite(got).all() and torch.isfinite(got_stats).all()
    assert (got.float() - expected).abs().max() < 2e-2
    assert (got_stats.float() - expected_stats).abs().max() < 2e-2 * (1 + expected_stats.abs().max())


def test_residual_output_starts_near_identity_and_trains_every_parameter():
    """output='residual': an untrained model returns (almost) the composite, and gradients reach every layer."""
    torch.manual_seed(0)
    model = create_model("phnet-xs", output="residual").train()
    composite, mask, reference, stats_in, momentum = example_inputs(model, 32, 48, batch=2, seed=3)
    harmonized, _ = model(composite, mask, reference, stats_in, momentum)
    assert (harmonized - composite).abs().max() < 0.05
    harmonized.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient: {missing}"
    with pytest.raises(ValueError, match="output"):
        create_model("phnet-xs", output="bogus")
