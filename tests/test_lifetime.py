"""State that lives for hours stays bounded, and each resource is closed once, by its owner, after its last use.

Memory is judged by what Python itself holds (tracemalloc, bytes), never by time: a loaded 2-core machine
changes how fast these run, not what they keep.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
from fakes import GatedHarmonizer, SlowHarmonizer

from vcam.capture import ArraySource
from vcam.config import RunConfig
from vcam.frame import Frame
from vcam.harmonize import HarmonizeStage
from vcam.metrics import Metrics
from vcam.pipeline import Pipeline

HANG_GUARD_S = 300  # only so that a broken build fails instead of hanging; never reached when it works
IMAGE = np.full((8, 8, 3), 100, np.uint8)
MASK = np.ones((8, 8), np.float32)


def _growth(step, warm: int, count: int) -> int:
    """Bytes Python still holds after `count` more calls of `step`, once `warm` calls filled every window."""
    for i in range(warm):
        step(i)
    tracemalloc.start()
    try:
        for i in range(warm, warm + 100):
            step(i)
        base = tracemalloc.get_traced_memory()[0]
        for i in range(warm + 100, warm + 100 + count):
            step(i)
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def test_metrics_hold_the_same_memory_after_an_hour_as_after_a_minute():
    """An hour at 30 FPS is 108,000 frames; the series were deques of Python floats that grew for the first
    hour (tens of MB: a soak's first and last ten minutes differed by more than the 5 % allowed)."""
    metrics = Metrics(status_interval=0.0)
    stages = ("capture", "segment", "background", "composite", "harmonize", "output")

    def record(i):
        frame = Frame(i, float(i), IMAGE, timings=dict.fromkeys(stages, 1.5), cpu_ms=dict.fromkeys(stages, 1.0))
        metrics.record(frame, sent_at=i + 0.02)

    grown = _growth(record, warm=1_000, count=40_000)
    assert grown < 64 * 1024, f"{grown} bytes more after 40,000 frames"
    summary = metrics.summary()
    assert summary["frames"] == 41_100 and summary["stages_ms"]["segment"]["p50"] == 1.5
    assert summary["latency_ms"]["p95"] == 20.0 and round(metrics.fps(60)) == 1


class Quick:
    """The `engine.Harmonizer` contract at no cost, keeping nothing (tests/fakes.py's records every call)."""

    backend_name, device, threads, smoothing, strength = "quick (cpu)", "cpu", None, 0.8, 1.0

    def estimate(self, composite, mask, reference=None, timestamp=None):
        return 0

    def apply(self, correction, composite, mask, foreground=None, background=None, box=None):
        return composite

    def reset(self):
        pass

    def close(self):
        pass


def test_the_inline_harmonizer_keeps_a_window_of_timings_not_every_one():
    """Issue 22: inline on a GPU that was one float per frame, for the whole call (a million in ten hours),
    and the control page summarised all of them every half second."""
    stage = HarmonizeStage(Quick(), mode="inline")

    def frame(i):
        stage(Frame(i, 0.0, IMAGE, mask=MASK, composite=IMAGE))
        if i % 15 == 0:
            stage.status()  # what the control page's per-frame hook reads every half second

    grown = _growth(frame, warm=3_000, count=20_000)
    assert grown < 32 * 1024, f"{grown} bytes more after 20,000 frames"
    stats = stage.stats()
    assert stats["estimates"] == 23_100 and stats["estimate_ms"]["p50"] is not None
    stage.close()


def test_the_worker_keeps_a_window_of_timings_not_every_one():
    stage = HarmonizeStage(Quick(), mode="worker", refresh_hz=0)
    deadline = time.monotonic() + HANG_GUARD_S

    def until(count):
        def step(i):
            while stage.stats()["estimates"] < count + i and time.monotonic() < deadline:
                stage(Frame(i, 0.0, IMAGE, mask=MASK, composite=IMAGE))
        return step

    stage(Frame(0, 0.0, IMAGE, mask=MASK, composite=IMAGE))
    grown = _growth(until(0), warm=3_000, count=10_000)
    assert time.monotonic() < deadline, "the worker made no progress"
    assert grown < 32 * 1024, f"{grown} bytes more after 10,000 estimates"
    stage.close()


# -- shutdown: one owner closes each resource, after its last use -------------------------------------------

def _until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_closing_the_stage_during_an_estimate_leaves_the_close_to_the_worker():
    """Issue 22: the worker was waited for 5 s, then its backend closed under the running estimate."""
    fake = GatedHarmonizer()
    stage = HarmonizeStage(fake, mode="worker", refresh_hz=0)
    stage(Frame(0, 0.0, IMAGE, mask=MASK, composite=IMAGE))
    _until(fake.estimating.is_set, "the worker never started an estimate")
    stage.close()  # the estimate is still running (the gate is shut)
    assert not fake.closed, "closed under a running estimate"
    fake.gate.set()
    _until(fake.closed_event.is_set, "the harmonizer was never closed")
    assert fake.closed_by == "vcam-harmonize" and fake.closed_while_estimating is False
    stage.close()  # idempotent


def test_closing_the_stage_between_estimates_closes_the_harmonizer_once():
    closes = []

    class Counts(SlowHarmonizer):
        def close(self):
            closes.append(threading.current_thread().name)

    stage = HarmonizeStage(Counts(delay=0.0), mode="worker", refresh_hz=0)
    _until(lambda: stage(Frame(0, 0.0, IMAGE, mask=MASK, composite=IMAGE)).output is not IMAGE,
           "no correction was ever applied")
    stage.close()
    stage.close()
    assert len(closes) == 1


def test_a_harmonizer_still_loading_at_shutdown_is_closed_when_it_is_built():
    """Issue 22: close() waited 30 s for the loader, then left whatever it built open for good."""
    built = []
    gate = threading.Event()

    def load(config):
        gate.wait(timeout=HANG_GUARD_S)
        built.append(GatedHarmonizer())
        return built[-1]

    config = RunConfig(input="test", output=["null"], harmonize=False, status_interval=0)
    pipeline = Pipeline(config, source=ArraySource([np.full((36, 64, 3), 100, np.uint8)]), load_harmonizer=load)
    pipeline.request(harmonize=True)  # `h` or the page: the harmonizer loads beside the frame loop
    pipeline.apply_pending()
    pipeline.close()  # returns while it still loads
    gate.set()
    _until(lambda: built and built[0].closed_event.is_set(), "the loaded harmonizer was never closed")
    assert built[0].closed_by == "vcam-load-harmonizer"
