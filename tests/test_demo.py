"""`vcam demo`: the built-in clip (a real person from the package's own public-domain photo) end to end."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import read_video

from vcam.cli import main
from vcam.commands.demo import DEMO_DIR, load_bundled


def test_bundled_photos_ship_in_the_package_and_stay_small():
    assert load_bundled("astronaut").shape == (512, 512, 3) and load_bundled("rocket").shape == (427, 640, 3)
    sizes = {p.name: p.stat().st_size for p in DEMO_DIR.glob("*.jpg")}
    assert set(sizes) == {"astronaut.jpg", "rocket.jpg"} and max(sizes.values()) < 100_000, sizes
    notice = (DEMO_DIR.parent / "NOTICE").read_text()
    assert all(name in notice for name in sizes) and "public domain" in notice


def test_demo_writes_video_and_before_after(tmp_path, capsys):
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
