"""End-to-end: a real video of a person through real MediaPipe, the real engine on CPU and pyvirtualcam's
own Camera API (a backend registered in-process that records what it is sent)."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from conftest import RecordingBackend

from vcam.capture import OpenCVSource
from vcam.config import RunConfig
from vcam.harmonize import HarmonizeStage
from vcam.output import make_placeholder
from vcam.pipeline import Pipeline

SIZE = (320, 180)
BLUE = (30, 60, 170)


def _run(video, *, harmonize, frames=5, mode="inline"):
    """Run the pipeline into the recording virtual camera; returns (recorded frames, per-frame data, stats)."""
    config = RunConfig(input=video, size=SIZE, background=["color:#1e3caa"], output=["virtualcam"],
                       vcam_backend="vcam-test", harmonize=harmonize, harmonize_mode=mode,
                       max_frames=frames, status_interval=0, fps=100.0)
    pipeline = Pipeline(config)
    seen = []
    process = pipeline.process

    def keep(frame):
        frame = process(frame)
        seen.append((frame.image.copy(), frame.mask.copy(), frame.composite.copy(), frame.output.copy()))
        return frame

    pipeline.process = keep
    stats = pipeline.run()
    (backend,) = RecordingBackend.instances
    assert backend.closed, "the virtual camera must be released at the end"
    return [f.reshape(SIZE[1], SIZE[0], 3) for f in backend.frames], seen, stats


def test_end_to_end_harmonized_into_virtual_camera(person_video, recorder):
    sent, seen, stats = _run(person_video, harmonize=True)
    assert len(sent) == 5 and stats["frames"] == 5 and stats["live_frames"] == 5
    person_changed = []
    for out, (image, mask, _composite, output) in zip(sent, seen):
        assert out.shape == (180, 320, 3) and out.dtype == np.uint8
        assert np.array_equal(out, output)
        assert np.isfinite(mask).all() and 0 <= mask.min() and mask.max() <= 1
        background = mask == 0
        assert background.mean() > 0.2, "the video has a real background around the person"
        assert (out[background] == BLUE).all(), "background pixels must be the chosen background exactly"
        person = mask > 0.9
        assert person.mean() > 0.05, "MediaPipe must find the person"
        person_changed.append(np.abs(out[person].astype(int) - image[person].astype(int)).mean())
    # Harmonization onto a saturated blue background must visibly move the person's colours.
    assert min(person_changed) > 3.0, person_changed
    assert stats["harmonizer"]["estimates"] == 5 and not stats["harmonizer"]["failed"]


def test_no_harmonize_leaves_the_person_untouched(person_video, recorder):
    sent, seen, stats = _run(person_video, harmonize=False)
    assert len(sent) == 5
    for out, (image, mask, composite, _) in zip(sent, seen):
        assert np.array_equal(out, composite)
        person = mask == 1
        assert person.mean() > 0.05
        assert np.array_equal(out[person], image[person]), "--no-harmonize must not change the person"
        assert (out[mask == 0] == BLUE).all()
    assert stats["harmonizer"] == {"enabled": False}


def test_worker_mode_real_engine_reaches_later_frames(person_video, recorder):
    # CPU default: the network runs in a worker, every frame gets its latest correction.
    sent, seen, stats = _run(person_video, harmonize=True, frames=40, mode="worker")
    assert len(sent) == 40 and stats["harmonizer"]["mode"] == "worker"
    assert stats["harmonizer"]["estimates"] >= 1
    changed = [not np.array_equal(out, composite) for out, (_, _, composite, _) in zip(sent, seen)]
    assert changed[-1], "after the first estimate, frames must be harmonized"


class SlowHarmonizer:
    """The engine.Harmonizer contract with a slow estimate: checks the stage's threading, not the maths."""

    backend_name = "fake (cpu)"

    def __init__(self, delay=0.15):
        self.delay, self.smoothing, self.strength = delay, 0.8, 1.0
        self.estimates = 0
        self.closed = False

    def estimate(self, composite, mask, reference=None):
        time.sleep(self.delay)
        self.estimates += 1
        return 40

    def apply(self, correction, composite, mask):
        return np.clip(composite.astype(int) + correction * (mask[..., None] > 0), 0, 255).astype(np.uint8)

    def harmonize(self, composite, mask, reference=None):
        return self.apply(self.estimate(composite, mask, reference), composite, mask)

    def reset(self):
        pass

    def close(self):
        self.closed = True


def test_worker_never_holds_the_frame_loop():
    fake = SlowHarmonizer(delay=0.15)
    stage = HarmonizeStage(fake, mode="worker", refresh_hz=0)
    from vcam.frame import Frame

    image = np.full((36, 64, 3), 100, np.uint8)
    mask = np.zeros((36, 64), np.float32)
    mask[10:30, 20:40] = 1
    outputs, started = [], time.perf_counter()
    for i in range(30):
        frame = Frame(i, time.perf_counter(), image, mask=mask, composite=image)
        t0 = time.perf_counter()
        stage(frame)
        assert time.perf_counter() - t0 < 0.05, "a frame must never wait for the network"
        outputs.append(frame.output)
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    stage.close()
    assert fake.closed
    assert np.array_equal(outputs[0], image), "no correction yet: the plain composite"
    assert outputs[-1][20, 30, 0] == 140 and outputs[-1][0, 0, 0] == 100, "later frames get the correction"
    assert 1 <= fake.estimates <= elapsed / 0.15 + 1


def test_engine_failure_falls_back_to_the_composite(caplog):
    class Broken(SlowHarmonizer):
        def estimate(self, composite, mask, reference=None):
            raise RuntimeError("backend exploded")

    stage = HarmonizeStage(Broken(), mode="inline")
    from vcam.frame import Frame

    image = np.full((8, 8, 3), 7, np.uint8)
    for i in range(3):
        frame = stage(Frame(i, 0.0, image, mask=np.ones((8, 8), np.float32), composite=image))
        assert frame.output is image
    assert stage.failed and sum("harmonization failed" in r.message for r in caplog.records) == 1
    stage.close()


class FlakyCamera:
    """A camera (kind "camera") that delivers, then stops delivering for `outage` s, then recovers."""

    kind = "camera"

    def __init__(self, video, good_before=8, outage=0.6, fps=60.0):
        self._video = OpenCVSource(video)
        self._video.open()
        self.size, self.fps = self._video.size, fps
        self.good_before, self.outage = good_before, outage
        self.delivered = 0
        self.outage_until = None
        self.opens = 0
        self._lock = threading.Lock()

    def _down(self):
        return self.outage_until is not None and time.perf_counter() < self.outage_until

    def open(self):
        self.opens += 1
        if self._down():
            raise RuntimeError("device unplugged")

    def read(self):
        time.sleep(1.0 / self.fps)
        if self.delivered == self.good_before and self.outage_until is None:
            self.outage_until = time.perf_counter() + self.outage
        if self._down():
            return None
        image = self._video.read()
        if image is None:
            self._video.open()
            image = self._video.read()
        self.delivered += 1
        return image

    def release(self):
        pass


def test_camera_that_stops_keeps_the_output_alive_and_recovers(person_video, recorder):
    camera = FlakyCamera(person_video)
    config = RunConfig(input="flaky", background=["color:#1e3caa"], output=["virtualcam"],
                       vcam_backend="vcam-test", harmonize=False, max_frames=60, status_interval=0, fps=60.0)
    pipeline = Pipeline(config, source=camera)
    stats = pipeline.run()
    (backend,) = recorder.instances
    size = tuple(camera.size)
    frames = [f.reshape(size[1], size[0], 3) for f in backend.frames]
    placeholder = make_placeholder(size)
    kinds = ["P" if np.array_equal(f, placeholder) else "L" for f in frames]
    sequence = "".join(kinds)
    assert len(frames) == 60 and stats["frames"] == 60
    assert stats["placeholder_frames"] >= 3, sequence
    assert "LP" in sequence and "PL" in sequence, f"live, then placeholders, then live again: {sequence}"
    assert stats["input"]["reconnects"] >= 1 and camera.opens >= 2
    assert all(np.isfinite(f).all() for f in frames)


def test_placeholder_is_dark_and_says_why():
    image = make_placeholder((320, 180))
    assert image.shape == (180, 320, 3) and image.dtype == np.uint8
    assert image.max() > 150 and np.median(image) == 32
    assert cv2.countNonZero(cv2.inRange(image, (150, 150, 150), (255, 255, 255))) > 50
