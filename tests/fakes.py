"""A deliberately slow object with the `engine.Harmonizer` contract, passed in through the public
`Pipeline(harmonizer=...)` / `HarmonizeStage(harmonizer)` argument (nothing is patched).

It checks the app's threading, not the maths: `estimate` sleeps like a CPU network at a few Hz and returns
a constant brightening that `apply` adds inside the mask. It records when each estimate ran and which
thread touched the temporal state (estimate, reset, smoothing), so tests can check ordering and ownership
instead of tight wall-clock figures.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class SlowHarmonizer:
    backend_name = "slow fake (cpu)"
    threads = None

    def __init__(self, delay: float = 0.3, device: str = "cpu"):
        self.device = device
        self.delay = delay
        self._smoothing, self.strength = 0.8, 1.0
        self.estimating = threading.Event()
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each finished estimate
        self.state_threads: list[tuple[str, str]] = []  # (call, thread name) of every state-touching call
        self.resets = 0
        self.closed = False
        self.on_smoothing = None  # called with the new value while it is set (inside a settings change)

    @property
    def smoothing(self) -> float:
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self.state_threads.append(("smoothing", threading.current_thread().name))
        self._smoothing = value
        if self.on_smoothing is not None:
            self.on_smoothing(value)

    @property
    def estimates(self) -> int:
        return len(self.intervals)

    def estimate(self, composite, mask, reference=None, timestamp=None):
        self.state_threads.append(("estimate", threading.current_thread().name))
        started = time.perf_counter()
        self.estimating.set()
        time.sleep(self.delay)
        self.estimating.clear()
        self.intervals.append((started, time.perf_counter()))
        return 40

    def apply(self, correction, composite, mask, foreground=None, background=None, box=None):
        lift = np.round(correction * self.strength * (mask[..., None] > 0)).astype(int)
        return np.clip(composite.astype(int) + lift, 0, 255).astype(np.uint8)

    def harmonize(self, composite, mask, reference=None):
        return self.apply(self.estimate(composite, mask, reference), composite, mask)

    def reset(self):
        self.state_threads.append(("reset", threading.current_thread().name))
        self.resets += 1

    def close(self):
        self.closed = True


class GatedHarmonizer(SlowHarmonizer):
    """A harmonizer whose estimate runs until the test opens `gate`; `close` records the thread that closed it
    and whether an estimate was still running then (closing a backend under a running network is the bug)."""

    def __init__(self, device: str = "cpu"):
        super().__init__(delay=0.0, device=device)
        self.gate = threading.Event()
        self.closed_event = threading.Event()
        self.closed_by: str | None = None
        self.closed_while_estimating: bool | None = None

    def estimate(self, composite, mask, reference=None, timestamp=None):
        self.estimating.set()
        self.gate.wait(timeout=600)  # a hang guard only: every test opens the gate
        self.estimating.clear()
        return super().estimate(composite, mask, reference)

    def close(self):
        self.closed_while_estimating = self.estimating.is_set()
        self.closed_by = threading.current_thread().name
        super().close()
        self.closed_event.set()
