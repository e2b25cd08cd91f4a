"""The CPU budget: the refresh governor (network rate follows the CPU the frame loop leaves), the CPU
accounting of the metrics and the bench's rows. No wall-clock thresholds: time is passed in."""

from __future__ import annotations

import time

import numpy as np
from fakes import SlowHarmonizer

from vcam.frame import Frame
from vcam.harmonize import HarmonizeStage
from vcam.metrics import CORES, Metrics
from vcam.refresh import RefreshGovernor


def _frames(governor: RefreshGovernor, busy_ms: float, count: int, start: float = 0.0,
            period_ms: float = 1000 / 30, cores: float = 0.5) -> float:
    """Feed `count` frames, one per period, each with `busy_ms` of stage time and the process using
    `cores` of CPU meanwhile (the capture thread's "capture" time is not the loop's); returns the next start."""
    for _ in range(count):
        frame = Frame(index=0, captured_at=start, image=np.zeros((2, 2, 3), np.uint8),
                      timings={"capture": 500.0, "segment": busy_ms * 0.7})
        governor.update(frame, start + busy_ms * 0.7 / 1000, cpu=start * cores)
        frame.timings["harmonize"] = busy_ms * 0.3  # the rest of the frame, added after harmonize ran
        start += period_ms / 1000
    return start


def test_refresh_drops_to_the_floor_when_the_loop_misses_its_pace_and_comes_back():
    governor = RefreshGovernor(ceiling=10.0, floor=3.0)
    start = _frames(governor, busy_ms=10.0, count=30)  # a third of the period: room
    assert governor.rate == 10.0
    start = _frames(governor, busy_ms=32.0, count=15, start=start)  # 96 % of the period
    assert 3.0 < governor.rate < 10.0 * 0.95 ** 5
    start = _frames(governor, busy_ms=40.0, count=120, start=start)  # over the period: frames are missed
    assert governor.rate == 3.0
    _frames(governor, busy_ms=8.0, count=120, start=start)
    assert governor.rate == 10.0


def test_refresh_keeps_the_process_within_its_cores():
    """One core of CPU for the whole process (the other is the call's): over it the refresh drops even
    when the loop itself keeps its pace; under 90 % of it the refresh comes back."""
    governor = RefreshGovernor(ceiling=10.0, floor=3.0, cores=1.0)
    start = _frames(governor, busy_ms=10.0, count=120, cores=1.3)
    assert governor.rate == 3.0
    _frames(governor, busy_ms=10.0, count=200, start=start, cores=0.7)
    assert governor.rate == 10.0
    unlimited = RefreshGovernor(ceiling=10.0, cores=None)
    _frames(unlimited, busy_ms=10.0, count=120, cores=1.9)
    assert unlimited.rate == 10.0


def test_no_limit_means_no_adaptation():
    governor = RefreshGovernor(ceiling=0.0)
    _frames(governor, busy_ms=40.0, count=60)
    assert governor.rate == 0.0 and governor.floor == 0.0
    assert RefreshGovernor(ceiling=2.0).floor == 2.0  # a ceiling under 3 Hz is its own floor


def test_the_worker_follows_the_governor():
    stage = HarmonizeStage(SlowHarmonizer(delay=0.01), mode="worker", refresh_hz=10.0)
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.ones((8, 8), np.float32)
    start = time.perf_counter() - 10.0  # frames in the past: each one's stage time covers its period
    try:
        for index in range(120):
            frame = Frame(index=index, captured_at=start, image=image, mask=mask, composite=image,
                          timings={"segment": 1e9})  # far over any period: the loop is out of time
            stage(frame)
        assert stage.governor.rate == 3.0 and stage._worker.refresh_hz == 3.0
        assert stage.stats()["refresh_target_hz"] == 3.0
    finally:
        stage.close()


def test_metrics_account_process_cpu_per_frame_and_per_stage():
    metrics = Metrics(status_interval=0.0)
    image = np.zeros((2, 2, 3), np.uint8)
    for index in range(5):
        work = time.process_time()
        while time.process_time() - work < 0.01:  # 10 ms of CPU per frame
            pass
        frame = Frame(index=index, captured_at=time.perf_counter(), image=image,
                      timings={"segment": 10.0}, cpu_ms={"segment": 9.0})
        metrics.record(frame)
    summary = metrics.summary()
    assert summary["stages_cpu_ms"]["segment"]["p50"] == 9.0
    assert summary["cpu"]["ms_per_frame"] >= 9.0  # at least the work done between frames
    assert 0 < summary["cpu"]["machine_pct"] <= 100.0 * 1.05 and CORES >= 1
