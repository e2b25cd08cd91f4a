"""Metrics: FPS, per-stage p50/p95 milliseconds, end-to-end latency, CPU, a status line, the --stats-json file.

CPU is the process's user+system time (every thread: capture, MediaPipe, the harmonizer's worker), per
output frame and as a share of the machine's cores; per stage, the frame loop thread's own CPU time.

Kept out of the frame loop's way: `record(frame)` writes a few floats; percentiles are computed only
for the status line (every few seconds, over a recent window) and at exit (over the last `_KEEP` frames).

Bounded for a call of any length: every series is a `Window`, a ring of float64 allocated (and touched)
once when the series starts, so the memory held after ten hours is what it was after the first frame.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vcam.frame import Frame

log = logging.getLogger("vcam.metrics")

_KEEP = 100_000  # samples kept per series for the final summary (about an hour at 30 fps; 0.8 MB a series)
_WINDOW = 300  # samples in the status line's recent window
# The cores this process may run on (the machine's share the CPU % is of).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Window:
    """The last `capacity` values of a series, oldest first, and how many were ever added (`count`).

    A ring of float64 allocated and touched once: appending never allocates, and the memory it holds is
    the same from the first value on (a growing list or deque of Python floats is not).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a window holds at least one value, got capacity {capacity}")
        self._data = np.full(capacity, np.nan)
        self._next = 0  # where the next value goes
        self.count = 0

    def append(self, value: float) -> None:
        self._data[self._next] = value
        self._next = (self._next + 1) % len(self._data)
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, len(self._data))

    def values(self, last: int | None = None) -> np.ndarray:
        """A copy of the held values, oldest first; only the newest `last` ones when given."""
        held = len(self) if last is None else min(last, len(self))
        start = self._next - held
        if start >= 0:
            return self._data[start:self._next].copy()
        return np.concatenate((self._data[start:], self._data[:self._next]))

    def span(self, last: int | None = None) -> tuple[int, float, float]:
        """(n, oldest, newest) of the newest `last` values (all held ones when None), without a copy."""
        n = len(self) if last is None else min(last, len(self))
        if n == 0:
            return 0, math.nan, math.nan
        return n, float(self._data[(self._next - n) % len(self._data)]), float(self._data[self._next - 1])


def percentiles(values) -> dict:
    """{"p50", "p95", "mean", "max"} of a sequence of numbers (None for each when empty)."""
    if len(values) == 0:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    array = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3),
            "mean": round(float(array.mean()), 3), "max": round(float(array.max()), 3)}


class Metrics:
    """Collects per-frame timings and writes the summary.

    Args:
        status_interval: seconds between status lines (0 = none).
    """

    def __init__(self, status_interval: float = 5.0):
        self.status_interval = status_interval
        self.frames = 0
        self.live_frames = 0
        self.placeholder_frames = 0
        self.started_at: float | None = None
        self.last_at: float | None = None
        self._stages: dict[str, Window] = {}
        self._latency = Window(_KEEP)
        self._output_times = Window(_KEEP)
        self._stage_cpu: dict[str, Window] = {}
        self._last_status = time.perf_counter()
        self._status_frames = 0
        self._status_cpu = (time.process_time(), 0)  # (process CPU s, frames) at the last status line
        self._cpu_span: list[float] | None = None  # process CPU s at the first and the last recorded frame

    def restart(self) -> None:
        """Forget everything recorded so far (a benchmark's warm-up ends here)."""
        self.__init__(self.status_interval)

    def record(self, frame: Frame, sent_at: float | None = None) -> None:
        """Account one frame that reached the outputs at `sent_at` (default: now)."""
        now = time.perf_counter() if sent_at is None else sent_at
        cpu = time.process_time()
        if self.started_at is None:  # CPU is counted from the first frame on (start-up is not a frame's)
            self.started_at = now
            self._cpu_span = [cpu, cpu]
            self._status_cpu = (cpu, 1)
        self._cpu_span[1] = cpu
        self.last_at = now
        self.frames += 1
        self._output_times.append(now)
        if not frame.live:
            self.placeholder_frames += 1
            return
        self.live_frames += 1
        self._latency.append((now - frame.captured_at) * 1000.0)
        for series, values in ((self._stages, frame.timings), (self._stage_cpu, frame.cpu_ms)):
            for stage, ms in values.items():
                window = series.get(stage)
                if window is None:  # a stage's first frame: its window, once
                    window = series[stage] = Window(_KEEP)
                window.append(ms)

    def cpu(self) -> dict:
        """Process CPU over the recorded frames: ms per output frame, cores busy, % of the machine's cores."""
        if self._cpu_span is None or self.frames < 2:
            return {"ms_per_frame": None, "cores": None, "machine_pct": None}
        used = self._cpu_span[1] - self._cpu_span[0]
        duration = max(self.last_at - self.started_at, 1e-9)
        return {"ms_per_frame": round(used * 1000.0 / (self.frames - 1), 3), "cores": round(used / duration, 3),
                "machine_pct": round(100.0 * used / duration / CORES, 1)}

    def fps(self, window: int | None = None) -> float:
        """Output frames per second over the kept frames (or the last `window` frames); no copy."""
        count, first, last = self._output_times.span(window or None)
        if count < 2:
            return 0.0
        return (count - 1) / max(last - first, 1e-9)

    def maybe_status(self, extra: str | Callable[[], str] = "") -> None:
        """Log a one-line status when `status_interval` has passed.

        `extra` may be a callable: it is called only when a line is due (this runs after every frame).
        """
        if self.status_interval <= 0:
            return
        now = time.perf_counter()
        elapsed = now - self._last_status
        if elapsed < self.status_interval:
            return
        self._last_status = now
        if callable(extra):
            extra = extra()
        recent = self._latency.values(_WINDOW)
        stages = " ".join(f"{name} {np.percentile(values.values(_WINDOW), 50):.1f}"
                          for name, values in self._stages.items() if len(values))
        latency = f"{np.percentile(recent, 95):.0f}" if len(recent) else "-"
        log.info("%.1f fps | latency p95 %s ms | %s | p50 ms: %s%s", self.fps(_WINDOW), latency,
                 self._status_cpu_text(elapsed), stages, f" | {extra}" if extra else "")

    def _status_cpu_text(self, elapsed: float) -> str:
        """"CPU 21.3 ms/frame, 32 % of 2 cores" since the last status line."""
        cpu, frames = time.process_time(), self.frames
        last_cpu, last_frames = self._status_cpu
        self._status_cpu = (cpu, frames)
        if frames <= last_frames:
            return "CPU -"
        return (f"CPU {1000.0 * (cpu - last_cpu) / (frames - last_frames):.1f} ms/frame, "
                f"{100.0 * (cpu - last_cpu) / max(elapsed, 1e-9) / CORES:.0f} % of {CORES} cores")

    def summary(self, **extra) -> dict:
        """Everything measured, as a JSON-ready dict (the --stats-json schema, see docs/notes/app.md)."""
        duration = (self.last_at - self.started_at) if self.frames > 1 else 0.0
        return {
            "frames": self.frames,
            "live_frames": self.live_frames,
            "placeholder_frames": self.placeholder_frames,
            "duration_s": round(duration, 3),
            "fps": round(self.fps(), 3),
            "latency_ms": percentiles(self._latency.values()),
            "stages_ms": {name: percentiles(values.values()) for name, values in self._stages.items()},
            "stages_cpu_ms": {name: percentiles(values.values()) for name, values in self._stage_cpu.items()},
            "cpu": self.cpu(),
            **extra,
        }


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON, creating the parent folder; atomically (a temporary file renamed),
    so a reader never sees half a file and a crash never leaves one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        umask = os.umask(0)  # mkstemp makes the file 0600; the stats get the usual mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
