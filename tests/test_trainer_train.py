"""trainer.train (and trainer.schedule, trainer.checkpoints): exact resume (acceptance 2), DDP on CPU with gloo
(acceptance 1), stage parsing."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from trainer.checkpoints import WeightAverage
from trainer.make_dataset import make_dataset
from trainer.schedule import parse_stages, stage_at
from trainer.train import get_args_parser, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """8 generated 'photos' (smooth colour fields) with an elliptical person, in the make_dataset layout."""
    root = tmp_path_factory.mktemp("tiny")
    images, masks = root / "img", root / "msk"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    for i in range(8):
        c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
        img = c0 * (1 - xx[..., None]) + c1 * yy[..., None] * 0.5 + rng.normal(0, 6, (48, 48, 3))
        m = np.zeros((48, 48), np.uint8)
        cv2.ellipse(m, (24 + i % 3, 28), (11, 16), 0, 0, 360, 255, -1)
        cv2.imwrite(str(images / f"t{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
        cv2.imwrite(str(masks / f"t{i}.png"), m)
    make_dataset(images, root / "set", masks=masks, per_image=1, seed=0, test_fraction=0.25, progress=False)
    return root / "set"


def args_for(data, out, *extra):
    return get_args_parser().parse_args([
        "--synth", str(data), "--model", "phnet-xs", "--size", "32", "--batch", "2", "--out", str(out),
        "--threads", "1", "--no-progress", "--seed", "7", *extra])


def test_parse_stages_and_stage_at():
    stages = parse_stages("1:3:1e-4, 2:2:1e-5,3:1:1e-7")
    assert [(s.kind, s.steps, s.lr) for s in stages] == [(1, 3, 1e-4), (2, 2, 1e-5), (3, 1, 1e-7)]
    assert [stage_at(stages, i) for i in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    for bad, msg in (("4:3:1e-4", "kind"), ("1:3", "KIND:STEPS:LR"), ("1:0:1e-4", "steps"), ("", "empty")):
        with pytest.raises(ValueError, match=msg):
            parse_stages(bad)


def test_resume_equals_an_uninterrupted_run(tiny_set, tmp_path):
    # 6 photos in the train list, batch 2: 3 steps per epoch. Stop at step 4 (mid-epoch, stage 2 begun),
    # resume to 7, and compare with one run of 7 steps. Stages switch PFE and encoder freezing on the way.
    stages = ["--stages", "1:3:1e-3,2:2:1e-3,3:2:1e-3", "--ckpt-every", "100"]
    full = train(args_for(tiny_set, tmp_path / "full", *stages))
    train(args_for(tiny_set, tmp_path / "part", *stages, "--steps", "4"))
    resumed = train(args_for(tiny_set, tmp_path / "part", *stages, "--resume", str(tmp_path / "part" / "last.pt")))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    rows = list(csv.DictReader(open(tmp_path / "part" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    assert [int(r["stage"]) for r in rows] == [1, 1, 1, 2, 2, 3, 3]
    # Stage 2 froze the encoder: its weights did not move during steps 4-5.
    ckpt = torch.load(tmp_path / "full" / "ckpt_0000007.pt", weights_only=True)
    assert ckpt["step"] == 7 and ckpt["model_name"] == "phnet-xs"


def test_ddp_two_processes_on_cpu(tiny_set, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trainer.train", "--synth", str(tiny_set), "--eval-data", str(tiny_set), "--model", "phnet-xs",
           "--size", "32", "--batch", "1", "--stages", "3:12:2e-3", "--out", str(out), "--threads", "1",
           "--no-progress", "--eval-every", "12", "--ckpt-every", "12", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=240)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Seen once on PyPI's torch 2.14 for Python 3.13: a gloo thread aborting at process exit, after the
        # run had finished. Run again once, from scratch; a second failure fails the test.
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and len(set(ranks["digests"])) == 1  # both ranks hold identical weights
    totals = [float(r["total"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert len(totals) == 12
    assert np.mean(totals[-3:]) < np.mean(totals[:3]), totals
    assert (out / "best.safetensors").is_file() and (out / "eval.csv").read_text().count("\n") == 2


def test_time_limit_ends_like_a_last_step_and_resumes(tiny_set, tmp_path):
    """--time-limit 0 stops after one step, evaluated and checkpointed; --resume continues the schedule."""
    out = tmp_path / "limited"
    args = args_for(tiny_set, out, "--stages", "3:50:1e-3", "--eval-data", str(tiny_set), "--time-limit", "0",
                    "--ckpt-every", "100", "--eval-every", "100")
    train(args)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 1 and (out / "best.safetensors").is_file()
    assert (out / "eval.csv").read_text().count("\n") == 2  # header + the evaluation at the stop
    train(args_for(tiny_set, out, "--stages", "3:50:1e-3", "--steps", "3", "--resume", str(out / "last.pt")))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


def test_affine_head_trains_towards_the_ground_truth(tiny_set, tmp_path):
    """The colour-transform head starts as the identity (loss of the composite) and its loss falls."""
    out = tmp_path / "affine"
    train(args_for(tiny_set, out, "--stages", "3:30:3e-3", "--model-overrides", '{"output": "affine"}'))
    totals = [float(r["total"]) for r in csv.DictReader(open(out / "log.csv"))]
    assert np.mean(totals[-5:]) < np.mean(totals[:5]), totals
    # A resume rebuilds the model from the checkpoint's config: no --model-overrides needed again.
    resumed = train(args_for(tiny_set, out, "--stages", "3:32:3e-3", "--resume", str(out / "last.pt")))
    assert resumed.config.output == "affine"


def test_linear_init_widens_an_affine_checkpoint_and_fits_its_global_head(tiny_set, tmp_path):
    """trainer.linear_init: the trained model plus a closed-form linear map of colour statistics; the
    result loads as shippable weights and its global head's linear map is no longer zero."""
    from engine.weights import load_weights
    from trainer.linear_init import main as linear_init

    out = tmp_path / "affine"
    train(args_for(tiny_set, out, "--stages", "3:4:3e-3", "--model-overrides", '{"output": "affine"}'))
    weights = tmp_path / "init.safetensors"
    assert linear_init(["--checkpoint", str(out / "last.pt"), "--data", str(tiny_set), "--out", str(weights),
                        "--size", "32", "--samples", "40"]) == 0
    model = load_weights(weights)
    assert model.global_transform.linear.weight.abs().sum() > 0
    train(args_for(tiny_set, tmp_path / "again", "--stages", "3:2:1e-3", "--init", str(weights)))


def test_weight_average_is_the_exponential_average():
    model = torch.nn.Linear(2, 2)
    start = model.weight.detach().clone()
    average = WeightAverage(model, 0.75)
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)
    assert torch.allclose(average.shadow["weight"], start + 0.25)  # 0.75 * start + 0.25 * (start + 1)
    with average.applied(model):
        assert torch.allclose(model.weight, start + 0.25)
    assert torch.allclose(model.weight, start + 1.0)  # its own weights back afterwards
    with pytest.raises(ValueError, match="ema"):
        WeightAverage(model, 1.0)


def test_ema_resumes_exactly_and_is_what_ships(tiny_set, tmp_path):
    from engine.weights import load_weights

    extra = ["--stages", "3:5:1e-3", "--ckpt-every", "100", "--ema", "0.8", "--eval-data", str(tiny_set),
             "--eval-size", "32", "--eval-every", "100"]
    train(args_for(tiny_set, tmp_path / "full", *extra))
    train(args_for(tiny_set, tmp_path / "part", *extra, "--steps", "3"))
    train(args_for(tiny_set, tmp_path / "part", *extra, "--resume", str(tmp_path / "part" / "last.pt")))
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert full["ema"].keys() == part["ema"].keys()
    for k in full["ema"]:
        assert torch.equal(full["ema"][k], part["ema"][k]), f"average of {k} differs after resume"
    # The only evaluation was at the last step, so the shipped weights are the average there, not the model.
    shipped = load_weights(tmp_path / "full" / "best.safetensors").state_dict()
    assert any(not torch.equal(full["ema"][k], full["model"][k]) for k in full["ema"])
    for k in full["ema"]:
        assert torch.equal(shipped[k], full["ema"][k]), k
