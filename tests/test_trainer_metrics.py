"""trainer.metrics against NumPy, and trainer.evaluate's CLI on a tiny generated set."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from trainer.make_dataset import make_dataset
from trainer.metrics import bucket_of, image_metrics, summarize


def test_metrics_match_numpy():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.random((20, 30)).astype(np.float32)
    m = image_metrics(pred, target, mask)
    err = (pred.astype(np.float64) - target) ** 2
    fg = mask >= 0.5
    assert m["mse"] == pytest.approx(err.mean())
    assert m["fmse"] == pytest.approx(err[fg].sum() / (3 * fg.sum()))
    assert m["psnr"] == pytest.approx(10 * np.log10(255**2 / err.mean()))
    assert m["fpsnr"] == pytest.approx(10 * np.log10(255**2 / m["fmse"]))
    assert m["fg_ratio"] == pytest.approx(fg.mean())
    # uint8 masks are read on 0..255: 128 is foreground, 127 is not.
    assert image_metrics(pred, target, (mask * 255).astype(np.uint8))["fg_ratio"] == pytest.approx(
        ((mask * 255).astype(np.uint8) >= 128).mean())


def test_hand_values_and_perfect_prediction():
    target = np.zeros((2, 2, 3), np.uint8)
    pred = target.copy()
    pred[0, 0] = 10  # one foreground pixel off by 10 in every channel
    mask = np.array([[1.0, 1.0], [0.0, 0.0]])
    m = image_metrics(pred, target, mask)
    assert m["mse"] == pytest.approx(300 / 12) and m["fmse"] == pytest.approx(300 / 6)
    perfect = image_metrics(target, target, mask)
    assert perfect["psnr"] == 100.0 and perfect["fmse"] == 0.0
    with pytest.raises(ValueError, match="mask"):
        image_metrics(pred, target, mask[:1])


def test_buckets():
    assert [bucket_of(r) for r in (0.0, 0.049, 0.05, 0.149, 0.15, 1.0)] == [
        "<5%", "<5%", "5-15%", "5-15%", ">=15%", ">=15%"]
    rows = [{"mse": 1.0, "fmse": 2.0, "psnr": 30.0, "fpsnr": 20.0, "fg_ratio": r} for r in (0.01, 0.5, 0.6)]
    s = summarize(rows)
    assert s["all"]["count"] == 3 and s["<5%"]["count"] == 1 and s[">=15%"]["count"] == 2
    assert s["5-15%"]["count"] == 0 and s["5-15%"]["psnr"] is None


def test_evaluate_cli_identity_matches_metrics(tmp_path):
    images = tmp_path / "img"
    masks = tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        cv2.imwrite(str(images / f"a{i}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        m = np.zeros((40, 40), np.uint8)
        m[8:32, 10:30] = 255
        cv2.imwrite(str(masks / f"a{i}.png"), m)
    make_dataset(images, tmp_path / "set", masks=masks, per_image=1, test_fraction=1.0, progress=False)
    out = tmp_path / "eval.json"
    grid = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--data", str(tmp_path / "set"), "--identity",
                           "--size", "40", "--json", str(out), "--grid", str(grid), "--full-res"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    # Identity at native size (40 = the photos' size) equals the metrics of composite vs real.
    comp = cv2.imread(str(tmp_path / "set" / "composite_images" / "a0_1_1.jpg"))[..., ::-1]
    real = cv2.imread(str(tmp_path / "set" / "real_images" / "a0.jpg"))[..., ::-1]
    mask = cv2.imread(str(tmp_path / "set" / "masks" / "a0_1.png"), cv2.IMREAD_GRAYSCALE)
    expected = image_metrics(comp, real, mask)
    row = result["full_res"]["per_image"][0]
    assert row["name"] == "a0_1_1" and row["psnr"] == pytest.approx(expected["psnr"])
    assert result["summary"]["all"]["count"] == 3
    assert cv2.imread(str(grid)).shape[:2] == (3 * 192, 3 * 192)


def test_evaluate_cli_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--data", str(tmp_path / "nope"), "--identity"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: dataset directory not found: {tmp_path / 'nope'}"
