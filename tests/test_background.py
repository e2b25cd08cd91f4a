"""Backgrounds: cover-cropped images, looped videos, blur without a halo, colours, cycling, errors."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from vcam.background import Backgrounds, blur_background, open_background
from vcam.errors import VcamError
from vcam.frame import Frame


def _frame(width=64, height=36):
    image = np.zeros((height, width, 3), np.uint8)
    return Frame(0, 0.0, image, mask=np.zeros((height, width), np.float32))


def test_blur_has_no_halo_of_the_person():
    image = np.full((144, 256, 3), 20, np.uint8)  # dark room
    mask = np.zeros((144, 256), np.float32)
    image[40:104, 100:156] = 250  # a bright person
    mask[40:104, 100:156] = 1.0
    ours = blur_background(image, mask, sigma=12.0)
    naive = cv2.GaussianBlur(image, (0, 0), 12.0)
    ring = np.zeros((144, 256), bool)
    ring[30:114, 90:166] = True
    ring[40:104, 100:156] = False  # just around the person, outside the mask
    assert ours[ring].mean() < 30, "no light bleeding from the person into the background"
    assert naive[ring].mean() > 60, "(the naive blur does bleed: the test can tell)"


def test_colour_and_image_backgrounds(tmp_path):
    colour = open_background("color:#102030").render(_frame())
    assert (colour == (16, 32, 48)).all()
    path = tmp_path / "bg.png"
    picture = np.zeros((100, 100, 3), np.uint8)
    picture[:, :50] = (0, 0, 255)  # left half red (BGR on disk)
    cv2.imwrite(str(path), picture)
    rendered = open_background(str(path)).render(_frame(64, 36))
    assert rendered.shape == (36, 64, 3)
    assert tuple(rendered[18, 5]) == (255, 0, 0) and tuple(rendered[18, 60]) == (0, 0, 0), "RGB, cover-cropped"


def test_video_background_plays_at_its_rate_and_loops(tmp_path):
    path = tmp_path / "bg.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (32, 18))
    for value in (0, 100, 200):
        writer.write(np.full((18, 32, 3), value, np.uint8))
    writer.release()
    background = open_background(str(path))
    values = []
    for _ in range(12):
        values.append(int(background.render(_frame(32, 18))[9, 16, 0]))
        time.sleep(0.02)
    background.close()
    assert len(set(v // 50 for v in values)) == 3, values
    assert any(a > b for a, b in zip(values, values[1:])), f"must loop back to the start: {values}"


def test_cycling_and_errors(tmp_path):
    backgrounds = Backgrounds(["color:#000000", "blur:5"])
    assert backgrounds.current.name == "color:#000000"
    assert backgrounds.next() == "blur:5" and backgrounds.next() == "color:#000000"
    backgrounds.close()
    with pytest.raises(FileNotFoundError, match="background not found"):
        open_background(str(tmp_path / "missing.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(VcamError, match="cannot read background image"):
        open_background(str(tmp_path / "bad.jpg"))
    (tmp_path / "bad.mp4").write_bytes(b"nope")
    with pytest.raises(VcamError, match="cannot read background video"):
        open_background(str(tmp_path / "bad.mp4"))
    with pytest.raises(ValueError, match="blur strength"):
        open_background("blur:soft")
