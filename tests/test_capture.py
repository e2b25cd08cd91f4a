"""Capture: cover-crop, sources, every-frame vs latest-wins delivery, re-open with back-off."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from vcam.capture import ArraySource, Capture, cover_crop, open_source
from vcam.errors import VcamError


def _clip(n, size=(64, 36)):
    return [np.full((size[1], size[0], 3), i, np.uint8) for i in range(n)]


def test_cover_crop_fills_without_distortion():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, 40:60] = 255  # a centred vertical bar
    out = cover_crop(image, (160, 90))
    assert out.shape == (90, 160, 3)
    # Scale 1.6 (fill the width), rows cropped: the bar stays 32 px wide and centred.
    assert abs(int((out[45, :, 0] > 127).sum()) - 32) <= 2
    assert cover_crop(image, (100, 100)) is image


def test_every_frame_mode_delivers_all_frames_in_order():
    capture = Capture(ArraySource(_clip(12)), every_frame=True).start()
    seen = []
    while True:
        frame = capture.read(timeout=2.0)
        if frame is None:
            break
        time.sleep(0.005)  # a slow consumer must not lose frames in this mode
        seen.append(int(frame.image[0, 0, 0]))
    assert capture.ended and seen == list(range(12))
    capture.close()


def test_latest_wins_drops_stale_frames_and_converts_bgr_once():
    clip = [np.zeros((36, 64, 3), np.uint8) for _ in range(40)]
    for i, image in enumerate(clip):
        image[..., 0] = i  # red channel carries the index (ArraySource takes RGB, delivers BGR)
    source = ArraySource(clip, fps=200.0)
    capture = Capture(source, realtime=True).start()
    first = capture.read(timeout=1.0)
    time.sleep(0.1)  # ~20 frames arrive meanwhile; only the newest is kept
    second = capture.read(timeout=1.0)
    capture.close()
    assert first is not None and second is not None
    assert second.index - first.index > 5, "a slow reader gets the newest frame, not a queue"
    assert second.image[0, 0, 0] == second.index and second.image[0, 0, 2] == 0, "RGB inside"
    assert first.timings["capture"] >= 0


def test_size_cover_crops_file_frames():
    capture = Capture(ArraySource(_clip(3, (100, 100))), (32, 18), every_frame=True).start()
    frame = capture.read(timeout=2.0)
    capture.close()
    assert frame.image.shape == (18, 32, 3) and capture.size == (32, 18)


class DropoutCamera:
    kind = "camera"
    fps = 100.0
    size = (32, 18)

    def __init__(self):
        self.reads, self.opens, self.fail_opens = 0, 0, 2

    def open(self):
        self.opens += 1
        if 2 <= self.opens <= 1 + self.fail_opens:
            raise RuntimeError("unplugged")

    def read(self):
        time.sleep(0.01)
        self.reads += 1
        if 5 <= self.reads < 10:
            return None
        return np.zeros((18, 32, 3), np.uint8)

    def release(self):
        pass


def test_lost_camera_is_reopened_with_backoff():
    camera = DropoutCamera()
    camera.open()
    capture = Capture(camera, retry_initial=0.02, retry_max=0.1).start()
    states, deadline = set(), time.perf_counter() + 3.0
    while time.perf_counter() < deadline and capture.reconnects == 0:
        states.add(capture.state)
        time.sleep(0.002)
    frame = capture.read(timeout=1.0)
    capture.close()
    assert "unavailable" in states and capture.reconnects == 1
    assert camera.opens == 2 + camera.fail_opens, "failed re-opens are retried, then it succeeds"
    assert frame is not None and capture.state == "live"


def test_open_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "bad.mp4").write_text("nope")
    with pytest.raises(VcamError, match="cannot read input"):
        open_source(str(tmp_path / "bad.mp4"))
    with pytest.raises(VcamError, match="camera device not found"):
        open_source("/dev/video-does-not-exist")
    with pytest.raises(VcamError, match="directory"):
        open_source(str(tmp_path))


def test_image_and_video_files_open(tmp_path):
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.full((20, 30, 3), 9, np.uint8))
    source = open_source(str(still))
    assert source.kind == "image" and source.size == (30, 20) and source.read().shape == (20, 30, 3)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (32, 16))
    for i in range(5):
        writer.write(np.full((16, 32, 3), i * 40, np.uint8))
    writer.release()
    source = open_source(str(video))
    assert source.kind == "file" and source.size == (32, 16) and source.fps == 12.0
    frames = 0
    while source.read() is not None:
        frames += 1
    assert frames == 5, "the probe read must be rewound"
