"""End-to-end: a real video of a person through real MediaPipe, the real engine on CPU and pyvirtualcam's
own Camera API (a backend registered in-process that records what it is sent). The pipeline is observed
through its public hooks (`on_frame`, `stop()`, `request`), never by replacing its methods."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import RecordingBackend
from fakes import SlowHarmonizer

from vcam.capture import OpenCVSource
from vcam.config import RunConfig
from vcam.controls import handle_key
from vcam.frame import Frame
from vcam.harmonize import WORKER_NICE, HarmonizeStage
from vcam.output import make_placeholder
from vcam.pipeline import Pipeline, _keep_freed_frames

SIZE = (320, 180)
BLUE = (30, 60, 170)


def _run(video, *, harmonize, frames=5, mode="inline"):
    """Run the pipeline into the recording virtual camera; returns (recorded frames, per-frame data, stats)."""
    config = RunConfig(input=video, size=SIZE, background=["color:#1e3caa"], output=["virtualcam"],
                       vcam_backend="vcam-test", harmonize=harmonize, harmonize_mode=mode,
                       max_frames=frames, status_interval=0, fps=100.0)
    seen = []

    def keep(frame):
        seen.append((frame.image.copy(), frame.mask.copy(), frame.composite.copy(), frame.output.copy()))

    stats = Pipeline(config, on_frame=keep).run()
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


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_worker_mode_real_engine_reaches_later_frames(person_video, recorder, overlap):
    # CPU default: the network runs in a worker; once its first estimate is out, every frame gets the latest
    # correction. The run ends on that (5 harmonized frames), not on a frame count: on a loaded machine the
    # first estimate may come after any number of frames.
    harmonized = []

    def on_frame(frame):
        harmonized.append(not np.array_equal(frame.output, frame.composite))
        if sum(harmonized) >= 5:
            pipeline.stop()

    config = RunConfig(input=person_video, size=SIZE, background=["color:#1e3caa"], output=["virtualcam"],
                       vcam_backend="vcam-test", harmonize_mode="worker", max_frames=3000, loop=True,
                       status_interval=0, overlap=overlap)
    pipeline = Pipeline(config, on_frame=on_frame)
    assert pipeline.overlap is (overlap == "on")
    stats = pipeline.run()
    assert stats["harmonizer"]["mode"] == "worker" and stats["harmonizer"]["estimates"] >= 1
    first = harmonized.index(True)
    assert all(harmonized[first:]), "after the first estimate, every frame must be harmonized"
    assert len(recorder.instances[0].frames) == len(harmonized) == stats["frames"]


def _slow_pipeline_config(video, **changes):
    return RunConfig(input=video, size=SIZE, background=["color:#1e3caa", "color:#aa3c1e"], output=["null"],
                     harmonize_mode="worker", refresh_hz=0.0, max_frames=3000, loop=True, status_interval=0,
                     **changes)


def test_slow_backend_never_holds_the_frame_loop_or_a_key_press(person_video):
    """Acceptance: with a 300 ms estimate, key presses and setting changes made while it runs return at once
    (< 5 ms) and frames keep flowing. Judged by ordering against the estimate's own start/end times, with a
    5 ms bound on the median only, so a loaded 2-core machine cannot make it flaky."""
    fake = SlowHarmonizer(delay=0.3)
    actions = [lambda k=k: handle_key(pipeline, ord(k)) for k in "+-sbv"] + [
        lambda: pipeline.request(strength=0.5), lambda: pipeline.request(smoothing=0.3)]
    frames_at, presses = [], []

    def on_frame(frame):
        frames_at.append(time.perf_counter())
        if fake.estimating.is_set() and len(presses) < len(actions):
            started = time.perf_counter()
            actions[len(presses)]()
            presses.append((started, time.perf_counter()))
        if len(presses) == len(actions) and fake.estimates >= 4:
            pipeline.stop()

    pipeline = Pipeline(_slow_pipeline_config(person_video), harmonizer=fake, on_frame=on_frame)
    stats = pipeline.run()
    assert len(presses) == len(actions), f"only {len(presses)} presses in {len(frames_at)} frames"
    durations_ms = sorted((end - start) * 1000 for start, end in presses)
    assert durations_ms[len(durations_ms) // 2] < 5.0, durations_ms
    assert durations_ms[-1] < 100.0, f"a press waited for the network: {durations_ms}"
    for started, returned in presses:  # each press began during an estimate; it returned before that ended
        _, end = next(iv for iv in fake.intervals if iv[0] <= started <= iv[1])
        if end - started > 0.1:
            assert returned < end, "a key press waited for the running estimate"
    inside = [sum(a < t < b for t in frames_at) for a, b in fake.intervals if frames_at[0] < a and b < frames_at[-1]]
    assert inside and min(inside) >= 3, f"frames sent during each 300 ms estimate: {inside}"
    # The changes were applied, the estimate-side ones by the worker, the owner of the temporal state.
    assert fake.strength == 0.5 and fake.smoothing == 0.3 and fake.resets >= 1
    assert stats["config"]["strength"] == 0.5 and stats["config"]["split"] is True
    # Once the worker started, nothing else touched the temporal state (before it, the loop set it up).
    started = fake.state_threads.index(("estimate", "vcam-harmonize"))
    assert {name for _, name in fake.state_threads[started:]} == {"vcam-harmonize"}, fake.state_threads
    assert fake.closed


def test_no_harmonize_then_h_turns_harmonization_on(person_video):
    """Started with harmonization off, `h` loads the real engine beside the running loop and turns it on."""
    seen = {"pressed_at": None, "first_harmonized": None, "changed_before": False}

    def on_frame(frame):
        harmonized = not np.array_equal(frame.output, frame.composite)
        if seen["pressed_at"] is None:
            seen["changed_before"] |= harmonized
            if frame.index >= 2:
                assert handle_key(pipeline, ord("h")) is False
                seen["pressed_at"] = frame.index
        elif harmonized:
            seen["first_harmonized"] = frame.index
            pipeline.stop()

    config = _slow_pipeline_config(person_video, harmonize=False, model="phnet-xs", backend="torch",
                                   device="cpu")
    pipeline = Pipeline(config, on_frame=on_frame)
    assert pipeline.harmonize is None
    stats = pipeline.run()
    assert not seen["changed_before"], "frames before `h` must be the plain composite"
    assert seen["first_harmonized"] is not None, f"never harmonized in {stats['frames']} frames"
    assert seen["first_harmonized"] > seen["pressed_at"]
    assert stats["harmonizer"]["enabled"] is True and stats["harmonizer"]["estimates"] >= 1
    assert stats["config"]["harmonize"] is True


def _frames(stage, image, mask, until, record):
    """Feed frames to `stage` until `until()`; record (time the call started, harmonized?) per frame."""
    deadline = time.perf_counter() + 30.0
    while not until():
        assert time.perf_counter() < deadline, "the worker made no progress in 30 s"
        started = time.perf_counter()
        frame = stage(Frame(0, started, image, mask=mask, composite=image))
        record.append((started, not np.array_equal(frame.output, image)))
        time.sleep(0.005)


def test_worker_owns_the_temporal_state_and_drops_estimates_from_before_a_reset():
    fake = SlowHarmonizer(delay=0.1)
    stage = HarmonizeStage(fake, mode="auto", refresh_hz=0)
    assert stage.mode == "worker", "a network on the CPU runs in the worker"
    image = np.full((36, 64, 3), 100, np.uint8)
    mask = np.zeros((36, 64), np.float32)
    mask[10:30, 20:40] = 1
    record = []
    _frames(stage, image, mask, lambda: fake.estimates >= 1 and record and record[-1][1], record)
    assert not record[0][1], "no correction yet: the plain composite"
    _frames(stage, image, mask, fake.estimating.is_set, record)  # an estimate is running now
    reset_at = time.perf_counter()
    stage.reset()
    stage.configure(smoothing=0.25, strength=0.5)
    count = fake.estimates
    _frames(stage, image, mask, lambda: fake.estimates >= count + 2, record)
    _frames(stage, image, mask, lambda: record[-1][1], record)
    stage.close()
    # The estimate that was running at the reset ended at intervals[count]; the first one after the reset
    # at intervals[count + 1]: no frame between the reset and that end got the stale correction.
    first_fresh_end = fake.intervals[count + 1][1]
    assert not any(h for t, h in record if reset_at < t < first_fresh_end)
    assert fake.resets == 1 and fake.smoothing == 0.25 and fake.strength == 0.5
    assert {name for _, name in fake.state_threads} == {"vcam-harmonize"}, fake.state_threads
    assert fake.closed


def test_a_reset_before_the_worker_starts_does_not_discard_its_corrections():
    fake = SlowHarmonizer(delay=0.0)
    stage = HarmonizeStage(fake, mode="worker", refresh_hz=0)
    stage.reset()  # e.g. a background change before the first frame
    image = np.full((36, 64, 3), 100, np.uint8)
    mask = np.ones((36, 64), np.float32)
    record = []
    _frames(stage, image, mask, lambda: record and record[-1][1], record)  # fails after 30 s if never
    stage.close()
    assert fake.resets == 1


def test_settings_sent_to_a_failed_worker_apply_after_the_retry():
    class FailsOnce(SlowHarmonizer):
        def estimate(self, composite, mask, reference=None, timestamp=None):
            if not self.intervals and not getattr(self, "failed_once", False):
                self.failed_once = True
                raise RuntimeError("transient backend error")
            return super().estimate(composite, mask, reference)

    fake = FailsOnce(delay=0.0)
    stage = HarmonizeStage(fake, mode="worker", refresh_hz=0, retry_initial=0.0)
    image = np.full((36, 64, 3), 100, np.uint8)
    mask = np.ones((36, 64), np.float32)
    _frames(stage, image, mask, lambda: stage.failed, [])  # the worker's estimate raised
    stage.configure(smoothing=0.2)  # sent while failed: its worker is gone
    record = []
    _frames(stage, image, mask, lambda: record and record[-1][1], record)
    stage.close()
    assert fake.smoothing == 0.2 and stage.failures == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice is a Linux feature")
def test_a_cpu_worker_yields_the_core_to_the_frame_loop():
    class Records(SlowHarmonizer):
        nice_seen = None

        def estimate(self, composite, mask, reference=None, timestamp=None):
            self.nice_seen = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return super().estimate(composite, mask, reference)

    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    image = np.full((36, 64, 3), 100, np.uint8)
    mask = np.ones((36, 64), np.float32)
    seen = {}
    for device in ("cpu", "cuda:0"):  # a GPU worker mostly waits on the device: left as it was
        fake = Records(delay=0.0, device=device)
        stage = HarmonizeStage(fake, mode="worker", refresh_hz=0)
        _frames(stage, image, mask, lambda fake=fake: fake.nice_seen is not None, [])
        stage.close()
        seen[device] = fake.nice_seen
    assert seen == {"cpu": max(WORKER_NICE, loop_nice), "cuda:0": loop_nice}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice, "the loop keeps its nice"


def test_stage_mode_follows_the_harmonizers_device():
    class Device:  # torch.device's shape: a .type
        type = "cuda"

    assert HarmonizeStage(SlowHarmonizer(0, device="cuda:0")).mode == "inline"
    assert HarmonizeStage(SlowHarmonizer(0, device=Device())).mode == "inline"
    assert HarmonizeStage(SlowHarmonizer(0, device="cpu")).mode == "worker"
    assert HarmonizeStage(SlowHarmonizer(0, device="cpu"), mode="inline").mode == "inline"
    with pytest.raises(ValueError, match="mode must be"):
        HarmonizeStage(SlowHarmonizer(0), mode="sometimes")

def test_engine_failure_falls_back_to_the_composite(caplog):
    class Broken(SlowHarmonizer):
        def estimate(self, composite, mask, reference=None, timestamp=None):
            raise RuntimeError("backend exploded")

    stage = HarmonizeStage(Broken(), mode="inline")

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


@pytest.mark.parametrize("overlap", ["off", "on"])
def test_camera_that_stops_keeps_the_output_alive_and_recovers(person_video, recorder, overlap):
    camera = FlakyCamera(person_video)
    config = RunConfig(input="flaky", background=["color:#1e3caa"], output=["virtualcam"], overlap=overlap,
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_frame_buffers_stay_in_the_heap():
    # The setting takes (glibc), and again when a second pipeline opens in the same process.
    assert _keep_freed_frames() and _keep_freed_frames()


def test_overlapped_loop_sends_what_the_single_thread_loop_sends(person_video, recorder):
    """Every frame of a file, through real MediaPipe and the real compositor: the overlapped loop sends the
    same frames, in the same order, as the single-thread loop (harmonization off: the worker's timing aside,
    nothing else differs)."""
    runs = {}
    for overlap in ("off", "on"):
        RecordingBackend.instances.clear()
        config = RunConfig(input=person_video, size=SIZE, background=["color:#1e3caa"], output=["virtualcam"],
                           vcam_backend="vcam-test", harmonize=False, max_frames=12, status_interval=0,
                           overlap=overlap)
        indices = []
        pipeline = Pipeline(config, on_frame=lambda frame, seen=indices: seen.append(frame.index))
        assert pipeline.overlap is (overlap == "on")
        stats = pipeline.run()
        (backend,) = RecordingBackend.instances
        assert backend.closed and stats["frames"] == 12 and stats["overlap"] is (overlap == "on")
        assert indices == list(range(12)), "every frame, in order"
        runs[overlap] = backend.frames
    assert all(np.array_equal(a, b) for a, b in zip(runs["off"], runs["on"], strict=True))


def _background_video(path) -> str:
    """Two frames at 240 fps: the background loops (and so re-opens its file) every 8 ms of wall time."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 240.0, (64, 36))
    for colour in ((200, 40, 20), (190, 50, 30)):
        writer.write(np.full((36, 64, 3), colour, np.uint8))
    writer.release()
    return str(path)


@pytest.mark.parametrize("fault", ["deleted", "live-edit-missing"])
def test_overlapped_background_failing_mid_stream_never_sends_the_room(person_video, recorder, tmp_path, fault,
                                                                      caplog):
    """The background fails while the front thread renders it (its file deleted from the frame loop, or a
    live edit to a missing file): no frame sent is the camera picture, and the stream goes on."""
    background = _background_video(tmp_path / "bg.avi")
    config = RunConfig(input=person_video, size=SIZE, background=[background], output=["virtualcam"],
                       vcam_backend="vcam-test", harmonize=False, max_frames=30, status_interval=0, overlap="on")
    images = []

    def on_frame(frame):
        images.append(frame.image.copy())
        if len(images) == 5:
            if fault == "deleted":
                os.unlink(background)
            else:
                pipeline.request(background=[str(tmp_path / "missing.mp4")])

    pipeline = Pipeline(config, on_frame=on_frame)
    with caplog.at_level(logging.ERROR):
        stats = pipeline.run()
    assert any("background" in r.getMessage() for r in caplog.records), "the fault must really have happened"
    sent = [f.reshape(SIZE[1], SIZE[0], 3) for f in recorder.instances[0].frames]
    assert stats["frames"] == len(sent) == 30
    for i, (out, image) in enumerate(zip(sent, images, strict=True)):
        close = np.mean(np.abs(out.astype(int) - image.astype(int)) <= 8)
        assert close < 0.5, f"frame {i} shows the room ({close:.0%} of its pixels)"


def test_overlapped_live_settings_apply_between_the_front_threads_frames(person_video, caplog):
    """Live settings that replace what the front thread uses (a new segmenter, the next background, the
    mask smoothing) while it runs: applied, logged once each, and every frame still goes out."""
    changes = {5: lambda: pipeline.request(segmentation_model=0), 10: lambda: handle_key(pipeline, ord("b")),
               15: lambda: pipeline.request(mask_smoothing=False)}
    sent, segmenters = [], []

    def on_frame(frame):
        sent.append(frame.index)
        segmenters.append(pipeline.segmenter)
        changes.get(len(sent), lambda: None)()
        if len(sent) == 25:
            pipeline.stop()

    config = RunConfig(input=person_video, size=SIZE, background=["color:#1e3caa", "color:#aa3c1e"],
                       output=["null"], harmonize=False, max_frames=3000, loop=True, status_interval=0,
                       overlap="on")
    pipeline = Pipeline(config, on_frame=on_frame)
    first_segmenter = pipeline.segmenter
    with caplog.at_level(logging.INFO, logger="vcam.pipeline"):
        stats = pipeline.run()
    assert stats["frames"] == 25 and sent == sorted(sent)
    assert stats["config"]["segmentation_model"] == 0 and stats["config"]["mask_smoothing"] is False
    assert stats["background"] == "color:#aa3c1e"
    applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config applied")]
    assert len(applied) == 2, applied
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert segmenters[0] is first_segmenter and segmenters[-1] is not first_segmenter, "a new segmenter"
