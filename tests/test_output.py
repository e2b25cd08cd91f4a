"""Outputs: file (finalized, readable), pyvirtualcam (real API, registered backend), errors, split view."""

from __future__ import annotations

import numpy as np
import pytest
import pyvirtualcam
from conftest import read_video

from vcam.errors import VcamError
from vcam.frame import Frame
from vcam.output import Outputs, PreviewOutput, split_view


class Sink:
    sent: list[np.ndarray] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        if device not in (None, "sink0"):
            raise RuntimeError(f"no such device {device}")

    def send(self, frame):
        Sink.sent.append(frame.copy())

    def close(self):
        pass

    def device(self):
        return "sink0"

    def native_fourcc(self):
        return None


def _frame(i, size=(64, 36)):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[..., 0] = 10 * i  # red
    return Frame(i, 0.0, image, output=image)


def test_file_and_virtual_camera_get_the_same_frames(tmp_path):
    Sink.sent = []
    pyvirtualcam.register_backend("vcam-output-test", Sink)
    path = tmp_path / "sub" / "out.mp4"
    outputs = Outputs(["virtualcam", f"file:{path}", "null"], (64, 36), 20.0, vcam_backend="vcam-output-test")
    for i in range(5):
        outputs.send(_frame(i))
    outputs.close()
    outputs.close()  # idempotent
    assert len(Sink.sent) == 5 and Sink.sent[3].reshape(36, 64, 3)[0, 0, 0] == 30, "RGB to pyvirtualcam"
    frames, _ = read_video(path)
    assert len(frames) == 5 and abs(int(frames[3][18, 32, 2]) - 30) <= 6, "BGR to the file (red in channel 2)"


def test_a_resized_camera_frame_is_fitted_to_the_opened_size():
    Sink.sent = []
    pyvirtualcam.register_backend("vcam-output-test", Sink)
    outputs = Outputs(["virtualcam"], (64, 36), 20.0, vcam_backend="vcam-output-test")
    outputs.send(_frame(1, (128, 72)))
    outputs.close()
    assert Sink.sent[0].size == 64 * 36 * 3


def test_output_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown --output"):
        Outputs(["screen"], (64, 36), 30.0)
    with pytest.raises(ValueError, match="file: needs a path"):
        Outputs(["file:"], (64, 36), 30.0)
    with pytest.raises(ValueError, match="unknown --vcam-backend"):
        Outputs(["virtualcam"], (64, 36), 30.0, vcam_backend="nope")
    pyvirtualcam.register_backend("vcam-output-test", Sink)
    with pytest.raises(VcamError, match="no virtual camera device /dev/video77"):
        Outputs(["virtualcam"], (64, 36), 30.0, vcam_backend="vcam-output-test", vcam_device="/dev/video77")
    with pytest.raises(VcamError, match="cannot write video file"):
        Outputs([f"file:{tmp_path}/x.unknownext"], (64, 36), 30.0)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    import platform

    if platform.system() == "Linux":
        with pytest.raises(VcamError, match="needs a display"):
            PreviewOutput()


def test_split_view_shows_before_left_and_after_right():
    before = np.zeros((36, 64, 3), np.uint8)
    after = np.full((36, 64, 3), 200, np.uint8)
    view = split_view(before, after)
    assert view[30, 5].max() == 0 and view[30, 60].min() == 200 and (view[30, 31:33] == 255).all()
