"""scripts/gpu_session.sh --dry-run (the GPU session's whole code at tiny sizes on the CPU) and
scripts/make_gpu_pack.py (the carry): run for real, their outputs read back."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED = ["engine.json", "engine.md", "log.txt", "pipeline.json", "pipeline.md", "summary.json", "summary.md",
            "train.tar.gz"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_session") / "out"
    env = {**os.environ, "OUT": str(out), "PY": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc, out


@pytest.mark.slow
def test_dry_run_passes_and_writes_at_most_8_small_files(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == EXPECTED  # the device returns at most 8 files, none in sub-folders
    assert all((out / f).stat().st_size < 16 << 20 for f in files)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    assert {n: p["ok"] for n, p in summary["parts"].items()} == dict.fromkeys(
        ("smoke", "engine", "pipeline", "tests", "train"), True)
    assert "deselected" in summary["parts"]["tests"]["pytest"]  # the gpu-marked tests, none selected here
    log = (out / "log.txt").read_text()
    assert log.index("torch: ") < log.index("== engine")  # the smoke check is in the log first


@pytest.mark.slow
def test_dry_run_engine_and_pipeline_results(dry_run):
    _, out = dry_run
    engine = json.loads((out / "engine.json").read_text())
    timed = [r for r in engine["rows"] if "p50_ms" in r]
    assert {r["model"].split()[0] for r in timed} == {"phnet", "phnet-s", "shipped"}
    assert all(r["variant"] == "fp32 eager" and 0 < r["p50_ms"] <= r["p95_ms"] for r in timed)
    assert all(r.get("skipped") == "needs CUDA" for r in engine["rows"] if "p50_ms" not in r)
    pipeline = json.loads((out / "pipeline.json").read_text())
    measured = [r for r in pipeline["runs"] if "fps" in r]
    assert len(measured) == 5 and all(r["fps"] > 0 and r["frames"] > 0 for r in measured)
    assert {r["frames_from"] for r in measured} == {"file", "memory"}
    assert pipeline["agreement"]["max_levels"] <= 2  # device path = CPU path on the clip's frames
    assert pipeline["network"]["p50_ms"] > 0 and pipeline["network"]["shape"] == [64, 96]


@pytest.mark.slow
def test_dry_run_trains_and_evaluates(dry_run, tmp_path):
    from engine.weights import load_weights

    _, out = dry_run
    with tarfile.open(out / "train.tar.gz") as tar:
        names = set(tar.getnames())
        assert {"run/log.csv", "run/eval.csv", "run/best.safetensors", "run/best.json", "eval_trained.json"} <= names
        tar.extractall(tmp_path, filter="data")
    model = load_weights(tmp_path / "run" / "best.safetensors")
    assert model.name == "phnet-xs"
    evaluation = json.loads((tmp_path / "eval_trained.json").read_text())
    assert math.isfinite(evaluation["summary"]["all"]["psnr"])
    assert math.isfinite(evaluation["full_res"]["summary"]["all"]["psnr"])
    train = json.loads((out / "summary.json").read_text())["parts"]["train"]
    assert train["steps_done"] == train["planned_steps"] and train["finished"]


def test_stages_scale_to_the_time_available():
    session = _script("gpu_session")
    assert session.scale_stages("1:3000:3e-4,3:2500:1e-4,3:1000:3e-5", 650) == "1:300:3e-4,3:250:1e-4,3:100:3e-5"
    assert session.scale_stages("1:10:1e-4,2:1:1e-5", 3) == "1:3:1e-4,2:1:1e-5"  # never a 0-step stage


def test_unknown_part_is_one_clear_error(tmp_path, capsys):
    session = _script("gpu_session")
    assert session.main(["--out", str(tmp_path), "--parts", "smoke,bogus"]) == 2
    assert "unknown part(s) bogus" in capsys.readouterr().out


def test_missing_carry_fails_its_parts_only(tmp_path):
    """Without a carry, the pipeline and training parts fail with a clear reason; the run still ends."""
    session = _script("gpu_session")
    rc = session.main(["--out", str(tmp_path), "--carry", str(tmp_path / "none"), "--parts", "pipeline,train"])
    assert rc == 1
    parts = json.loads((tmp_path / "summary.json").read_text())["parts"]
    assert not parts["pipeline"]["ok"] and "make_gpu_pack.py" in parts["pipeline"]["error"]
    assert not parts["train"]["ok"] and "make_gpu_pack.py" in parts["train"]["error"]


@pytest.mark.slow
def test_make_gpu_pack_builds_a_carry_the_trainer_and_session_read(tmp_path):
    """A make_pack-layout pack (the dry run's, from skimage photos) -> the carry: shrunk photos and
    masks the trainer's datasets load, a 1080p clip with one MediaPipe mask per decoded frame."""
    from trainer.datasets import IHarmonyDataset, SynthesisDataset

    session, pack_script = _script("gpu_session"), _script("make_gpu_pack")
    source = session.make_dry_carry(tmp_path / "source")
    out = tmp_path / "carry"
    rc = pack_script.main(["--pack", str(source / "pack"), "--data", str(source), "--out", str(out),
                           "--train-side", "40", "--video", "clip/clip.mp4", "--background", "clip/background.jpg",
                           "--frames", "3"])
    assert rc == 0
    train = SynthesisDataset(out / "pack" / "train", size=32)
    assert len(train) == 6 and max(train.items[0][1].shape[:2]) == 40
    heldout = IHarmonyDataset(out / "pack" / "heldout", "test", size=32)
    assert len(heldout) == 2
    masks = np.load(out / "clip" / "masks.npz")["masks"]
    assert masks.shape == (3, 1080, 1920) and masks.dtype == np.uint8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clip"]["frames"] == 3 and manifest["train_photos"] == 6
    assert sum(manifest["bytes"].values()) <= sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def test_recipe_follows_the_shipped_weights(tmp_path):
    """The session trains what ships: the recipe from the weights' metadata, the head from their config
    even where the recorded arguments did not spell it out."""
    import engine.weights
    from engine.phnet import create_model

    path = tmp_path / "default.safetensors"
    engine.weights.save_weights(create_model("phnet-xs", output="affine"), path, extra={"trainer": {"args": {
        "model": "phnet-xs", "stages": "1:100:1e-4,3:50:1e-5", "size": 128, "lm_weight": 0.5, "seed": 3}}})
    session = _script("gpu_session")
    args = session.get_args_parser().parse_args(["--out", str(tmp_path), "--recipe-weights", str(path)])
    r = session.recipe(args)
    assert (r["model"], r["stages"], r["size"], r["lm_weight"], r["seed"]) == ("phnet-xs", "1:100:1e-4,3:50:1e-5",
                                                                              128, 0.5, 3)
    assert json.loads(r["model_overrides"]) == {"output": "affine"}
