"""trainer.recolor, make_dataset, datasets and paired transforms on tiny generated images (and one real
MediaPipe run on a real portrait from the shared data)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from trainer import recolor as R
from trainer import transforms as T
from trainer.datasets import IHarmonyDataset, SynthesisDataset
from trainer.make_dataset import make_dataset


def make_photos(root, n=4, size=(48, 64), empty_last=False):
    """n noisy RGB photos with an elliptical 'person' mask each (the last one empty if asked)."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(1)
    h, w = size
    for i in range(n):
        img = (rng.random((h, w, 3)) * 120 + np.linspace(40, 120, w)[None, :, None]).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if not (empty_last and i == n - 1):
            cv2.ellipse(mask, (w // 2, h // 2 + 4), (w // 4, h // 3), 0, 0, 360, 255, -1)
        cv2.imwrite(str(images / f"p{i}.png"), img[..., ::-1])
        cv2.imwrite(str(masks / f"p{i}.png"), mask)
    return images, masks


# ------------------------------------------------------------------------------------------- recolour


def test_recolor_operations_follow_their_definitions():
    img = np.array([[[3, 128, 255], [50, 100, 200]]], np.uint8)
    np.testing.assert_array_equal(R.posterize(img, 6), img & 0b11111100)
    np.testing.assert_allclose(R.adjust_brightness(img.astype(np.float32), 0.5), img / 2.0)
    np.testing.assert_allclose(R.adjust_contrast(img.astype(np.float32), 1.0), img)
    np.testing.assert_allclose(R.adjust_saturation(img.astype(np.float32), 0.0)[..., 0],
                               img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), rtol=1e-5)
    np.testing.assert_allclose(R.adjust_hue(img, 0.0), img, atol=0.01)
    stretched = R.autocontrast(np.array([[[50, 0, 7]], [[100, 255, 7]]], np.uint8))
    np.testing.assert_array_equal(stretched[:, 0], [[0, 0, 7], [255, 255, 7]])  # flat channel unchanged


def test_sharpness_factor_one_is_identity_and_border_is_kept():
    img = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(R.adjust_sharpness(img, 1.0), img)
    sharp = R.adjust_sharpness(img, 4.0)
    np.testing.assert_array_equal(sharp[0], img[0])
    assert not np.array_equal(sharp[1:-1, 1:-1], img[1:-1, 1:-1])


def test_composite_keeps_background_and_is_reproducible():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1
    a = R.composite(real, mask, np.random.default_rng(5))
    b = R.composite(real, mask, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[mask == 0], real[mask == 0])
    assert any(not np.array_equal(R.composite(real, mask, np.random.default_rng(s))[mask == 1], real[mask == 1])
               for s in range(5))
    with pytest.raises(ValueError, match="uint8 RGB"):
        R.recolor(real.astype(np.float32), rng)


# ------------------------------------------------------------------------------------------- dataset


def test_make_dataset_writes_the_iharmony4_layout(tmp_path):
    images, masks = make_photos(tmp_path, n=4, empty_last=True)
    out = tmp_path / "set"
    meta = make_dataset(images, out, masks=masks, per_image=2, seed=3, test_fraction=0.5, progress=False)
    assert meta["photos"] == 3 and meta["skipped"] == ["p3: no person found (0.00 % of the frame)"]
    assert sorted(p.name for p in (out / "real_images").iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["p0_1.png", "p1_1.png", "p2_1.png"]
    assert len(list((out / "composite_images").iterdir())) == 6
    train = (out / "set_train.txt").read_text().split()
    test = (out / "set_test.txt").read_text().split()
    assert len(train) + len(test) == 6
    # Split by photo: no photo has composites on both sides.
    assert not {n.rsplit("_", 2)[0] for n in train} & {n.rsplit("_", 2)[0] for n in test}
    # Same seed -> same bytes.
    out2 = tmp_path / "set2"
    make_dataset(images, out2, masks=masks, per_image=2, seed=3, test_fraction=0.5, progress=False)
    for f in (out / "composite_images").iterdir():
        assert f.read_bytes() == (out2 / "composite_images" / f.name).read_bytes()


def test_make_dataset_cli_errors_are_one_line(tmp_path):
    cmd = [sys.executable, "-m", "trainer.make_dataset", "--out", str(tmp_path / "o")]
    missing = subprocess.run(cmd + ["--images", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: --images directory not found: {tmp_path / 'nope'}"]
    (tmp_path / "empty").mkdir()
    empty = subprocess.run(cmd + ["--images", str(tmp_path / "empty")], capture_output=True, text=True)
    assert empty.returncode == 1 and "has no images" in empty.stderr and "Traceback" not in empty.stderr


def test_make_dataset_with_mediapipe_on_a_real_portrait(shared_data, tmp_path):
    photo = shared_data / "portraits" / "skimage_astronaut.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not in the shared data")
    (tmp_path / "in").mkdir()
    shutil.copy(photo, tmp_path / "in" / photo.name)
    meta = make_dataset(tmp_path / "in", tmp_path / "out", per_image=1, seed=0, progress=False)
    assert meta["photos"] == 1
    mask = cv2.imread(str(tmp_path / "out" / "masks" / "skimage_astronaut_1.png"), cv2.IMREAD_GRAYSCALE)
    ratio = (mask > 127).mean()
    assert 0.1 < ratio < 0.9, f"person covers {ratio:.2%} of the astronaut photo"


def test_datasets_return_paired_tensors(tmp_path):
    images, masks = make_photos(tmp_path, n=3)
    make_dataset(images, tmp_path / "set", masks=masks, per_image=2, seed=0, test_fraction=1.0, progress=False)
    fixed = IHarmonyDataset(tmp_path / "set", "test", size=32)
    item = fixed[0]
    assert item["composite"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert 0.0 <= float(item["composite"].min()) and float(item["composite"].max()) <= 1.0
    synth = SynthesisDataset(tmp_path / "set", size=24, seed=0)
    a, b = synth[1], synth[1]
    assert torch.equal(a["composite"], b["composite"])  # same (seed, epoch, index) -> same sample
    synth.set_epoch(1)
    assert not torch.equal(a["composite"], synth[1]["composite"])  # a fresh re-colouring every epoch
    # Outside the person the composite is the photo (up to the mask's soft edge).
    outside = a["mask"][0] == 0
    assert torch.allclose(a["composite"][:, outside], a["real"][:, outside], atol=1 / 255)
    with pytest.raises(ValueError, match="empty train list"):
        IHarmonyDataset(tmp_path / "set", "train", size=32)  # all photos went to the test list
    with pytest.raises(FileNotFoundError, match="no \\*_test.txt"):
        IHarmonyDataset(tmp_path / "images", "test", size=32)


def test_paired_transform_moves_image_and_mask_together():
    img = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), np.float32)
    img[10:20, 30:45] = 255
    mask[10:20, 30:45] = 1.0
    for seed in range(5):
        out = T.train_transform({"real": img, "mask": mask}, 32, np.random.default_rng(seed))
        assert out["real"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
        np.testing.assert_allclose(out["real"][..., 0] / 255.0, out["mask"], atol=0.02)
    with pytest.raises(ValueError, match="equal sizes"):
        T.resize({"a": img, "b": mask[:-1]}, 8, 8)
