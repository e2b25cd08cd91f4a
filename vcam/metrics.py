"""Metrics: FPS, per-stage p50/p95 milliseconds, end-to-end latency, CPU, a status line, the --stats-json file.

CPU is the process's user+system time (every thread: capture, MediaPipe, the harmonizer's worker), per
output frame and as a share of the machine's cores; per stage, the frame loop thread's own CPU time.

Kept out of the frame loop's way: `record(frame)` appends a few floats; percentiles are computed only
for the status line (every few seconds, over a recent window) and at exit (over the whole run).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vcam.frame import Frame

log = logging.getLogger("vcam.metrics")

_KEEP = 100_000  # samples kept per series for the final summary (about an hour at 30 fps)
_WINDOW = 300  # samples in the status line's recent window
# The cores this process may run on (the machine's share the CPU % is of).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
        self._stages: dict[str, deque] = {}
        self._latency: deque = deque(maxlen=_KEEP)
        self._output_times: deque = deque(maxlen=_KEEP)
        self._stage_cpu: dict[str, deque] = {}
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
        for stage, ms in frame.timings.items():
            self._stages.setdefault(stage, deque(maxlen=_KEEP)).append(ms)
        for stage, ms in frame.cpu_ms.items():
            self._stage_cpu.setdefault(stage, deque(maxlen=_KEEP)).append(ms)

    def cpu(self) -> dict:
        """Process CPU over the recorded frames: ms per output frame, cores busy, % of the machine's cores."""
        if self._cpu_span is None or self.frames < 2:
            return {"ms_per_frame": None, "cores": None, "machine_pct": None}
        used = self._cpu_span[1] - self._cpu_span[0]
        duration = max(self.last_at - self.started_at, 1e-9)
        return {"ms_per_frame": round(used * 1000.0 / (self.frames - 1), 3), "cores": round(used / duration, 3),
                "machine_pct": round(100.0 * used / duration / CORES, 1)}

    def fps(self, window: int | None = None) -> float:
        """Output frames per second over the whole run (or the last `window` frames)."""
        times = list(self._output_times)[-window:] if window else self._output_times
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

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
        recent = list(self._latency)[-_WINDOW:]
        stages = " ".join(f"{name} {np.percentile(list(values)[-_WINDOW:], 50):.1f}"
                          for name, values in self._stages.items() if values)
        latency = f"{np.percentile(recent, 95):.0f}" if recent else "-"
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
            "latency_ms": percentiles(self._latency),
            "stages_ms": {name: percentiles(values) for name, values in self._stages.items()},
            "stages_cpu_ms": {name: percentiles(values) for name, values in self._stage_cpu.items()},
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
