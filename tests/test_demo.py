"""`vcam demo`: the built-in clip (a real person from scikit-image's bundled photo) end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import read_video

from vcam.cli import main


def test_bundled_photos_load_offline():
    data = pytest.importorskip("skimage.data")
    assert data.astronaut().shape == (512, 512, 3) and data.rocket().shape[2] == 3


def test_demo_writes_video_and_before_after(tmp_path, capsys):
    pytest.importorskip("skimage")
    assert main(["demo", "--out-dir", str(tmp_path), "--frames", "12"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "demo.mp4") in out and str(tmp_path / "before_after.png") in out
    frames, _ = read_video(tmp_path / "demo.mp4")
    assert len(frames) == 12 and frames[0].shape == (360, 640, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 2, "the clip moves"
    panel = cv2.imread(str(tmp_path / "before_after.png"))
    assert panel.shape == (360, 1920, 3)
    before, after = panel[40:, 640:1280].astype(int), panel[40:, 1280:].astype(int)
    assert np.abs(before - after).mean() > 2, "harmonization must change the person"
