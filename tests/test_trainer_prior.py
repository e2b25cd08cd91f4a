"""trainer.prior: reproducible samples whatever the number of workers, a fit that learns the transform,
and the command line writing a prior the engine loads; trainer.datasets.PriorCorrected."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine.colour_prior import FEATURES, IDENTITY, ColourPrior
from trainer.make_dataset import make_dataset
from trainer.prior import draw_samples, fit, main

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """12 generated 'photos' (colour ramps with noise) with an elliptical person, make_dataset layout."""
    root = tmp_path_factory.mktemp("prior")
    images, masks = root / "img", root / "msk"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(12):
        c0, c1 = rng.uniform(60, 200, 3), rng.uniform(-60, 60, 3)
        img = c0 + c1 * xx[..., None] + rng.normal(0, 8, (64, 64, 3))
        m = np.zeros((64, 64), np.uint8)
        cv2.ellipse(m, (30 + i % 4, 34), (14, 20), 0, 0, 360, 255, -1)
        img[m > 0] = img[m > 0] * 0.8 + rng.uniform(20, 60, 3)  # the person has colours of their own
        cv2.imwrite(str(images / f"p{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"p{i}.png"), m)
    make_dataset(images, root / "set", masks=masks, per_image=1, seed=0, test_fraction=0.0, progress=False)
    return root / "set"


def test_samples_are_the_same_with_one_or_two_workers(photos):
    one = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False)
    two = draw_samples(photos, per_image=2, pixels=32, workers=2, progress=False)
    assert one[0].shape == (24, FEATURES) and one[1].shape == one[2].shape == (24, 32, 3)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_cast_draws_replace_a_share_of_the_recolourings_and_none_keeps_the_samples(photos):
    plain = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False)
    again = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False, casts=0.0)
    for a, b in zip(plain, again):
        np.testing.assert_array_equal(a, b)  # casts=0 draws nothing extra: the shipped prior's samples
    cast = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False, casts=1.0)
    assert not np.array_equal(cast[1], plain[1])
    # a cast moves red against blue (in either direction) by far more than the FFHQH recipe's mild hue
    def red_blue(comp, real):
        return np.abs(np.log1p(comp[..., 0] / (comp[..., 2] + 1.0)) - np.log1p(real[..., 0] / (real[..., 2] + 1.0)))
    assert np.median(red_blue(cast[1].astype(float), cast[2])) > np.median(red_blue(plain[1].astype(float), plain[2]))


def test_fit_learns_to_undo_the_recolouring(photos):
    features, comp, real = draw_samples(photos, per_image=16, pixels=64, workers=1, progress=False)
    before = np.mean((comp.astype(np.float64) - real) ** 2)
    prior = fit(features, comp, real, hidden=32, epochs=40, dropout=0.0, weight_decay=0.0, batch=32,
                progress=False)
    assert isinstance(prior, ColourPrior)
    x = comp.astype(np.float64) / 255
    out = np.stack([np.clip(x[i] @ m[:3] + m[3], 0, 1)
                    for i, m in enumerate(prior.change(features).reshape(-1, 4, 3) + IDENTITY)])
    after = np.mean((out * 255 - real) ** 2)
    assert after < 0.5 * before, (before, after)


def test_the_command_writes_a_prior_the_engine_loads(photos, tmp_path, capsys):
    out = tmp_path / "prior.safetensors"
    assert main(["--data", str(photos), "--out", str(out), "--per-image", "2", "--pixels", "32",
                 "--hidden", "8", "--epochs", "1", "--workers", "1"]) == 0
    assert "colour prior: 24 composites" in capsys.readouterr().out
    assert ColourPrior.load(out).hidden == 8


def test_prior_corrected_recolours_the_composite_only(photos, tmp_path):
    from trainer.datasets import PriorCorrected, SynthesisDataset
    from trainer.prior import fit

    features, comp, real = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False)
    prior = fit(features, comp, real, hidden=8, epochs=2, dropout=0.0, batch=8, progress=False)
    base = SynthesisDataset(photos, size=32, seed=0, cache_side=64)
    wrapped = PriorCorrected(base, prior)
    assert len(wrapped) == len(base)
    a, b = base[0], wrapped[0]
    assert torch.equal(a["real"], b["real"]) and torch.equal(a["mask"], b["mask"])
    outside = a["mask"][0] == 0
    assert torch.allclose(a["composite"][:, outside], b["composite"][:, outside])
    assert not torch.allclose(a["composite"], b["composite"])


def test_training_behind_a_prior_records_it_and_init_carries_it_on(photos, tmp_path):
    """trainer.train --prior: the network is trained on re-coloured composites and its weights name the
    prior; a run started from those weights (--init) trains behind the same prior without being told."""
    from engine.colour_prior import prior_path
    from engine.weights import load_weights, save_weights
    from trainer.train import get_args_parser, train

    features, comp, real = draw_samples(photos, per_image=2, pixels=32, workers=1, progress=False)
    path = fit(features, comp, real, hidden=8, epochs=2, dropout=0.0, batch=8, progress=False).save(
        tmp_path / "prior.safetensors")
    common = ["--synth", str(photos), "--model", "phnet-xs", "--size", "32", "--batch", "2", "--threads", "1",
              "--no-progress", "--seed", "7", "--stages", "3:4:1e-3"]
    first = train(get_args_parser().parse_args([*common, "--out", str(tmp_path / "a"), "--prior", str(path),
                                                 "--model-overrides", '{"output": "affine"}']))
    assert prior_path(first) == path.resolve()
    weights = save_weights(first, tmp_path / "w.safetensors")
    assert prior_path(load_weights(weights)) == path.resolve()
    second = train(get_args_parser().parse_args([*common, "--out", str(tmp_path / "b"), "--init", str(weights)]))
    assert prior_path(second) == path.resolve()


def test_prior_needs_an_affine_head(photos, tmp_path):
    from trainer.train import get_args_parser, train

    features, comp, real = draw_samples(photos, per_image=1, pixels=16, workers=1, progress=False)
    path = fit(features, comp, real, hidden=4, epochs=1, dropout=0.0, batch=4, progress=False).save(
        tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="affine-head"):
        train(get_args_parser().parse_args(["--synth", str(photos), "--model", "phnet-xs", "--size", "32",
                                            "--batch", "2", "--out", str(tmp_path / "x"), "--no-progress",
                                            "--stages", "3:2:1e-3", "--prior", str(path)]))
