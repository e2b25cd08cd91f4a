"""The timing core: warm up, synchronise, time each call, summarise as p50/p95.

    result = time_calls(fn, warmup=3, runs=50, sync=torch.cuda.synchronize)
    result.summary()  # {"runs", "warmup", "p50_ms", "p95_ms", "mean_ms", "min_ms", "fps"}

Each timed call is followed by `sync()` (CUDA work is asynchronous: without it the clock measures the
launch, not the work), and the clock is read after it. A time budget stops a slow configuration early,
but never before `min_runs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vcam.metrics import percentiles


@dataclass
class Timing:
    """Milliseconds per timed call, in call order."""

    samples_ms: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    def summary(self) -> dict:
        stats = percentiles(self.samples_ms)
        total_s = sum(self.samples_ms) / 1000.0
        return {"runs": self.runs, "warmup": self.warmup, "p50_ms": stats["p50"], "p95_ms": stats["p95"],
                "mean_ms": stats["mean"], "min_ms": min(self.samples_ms) if self.samples_ms else None,
                "fps": self.runs / total_s if total_s > 0 else None}


def time_calls(fn: Callable[[], object], *, warmup: int = 3, runs: int = 50,
               sync: Callable[[], object] | None = None, max_seconds: float | None = None,
               min_runs: int = 3, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call `fn` `warmup` times untimed, then up to `runs` times timed.

    Raises:
        ValueError: runs < 1, warmup < 0, min_runs < 1 or max_seconds <= 0.
    """
    if runs < 1 or warmup < 0 or min_runs < 1 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(f"expected runs >= 1, warmup >= 0, min_runs >= 1, max_seconds > 0; got runs={runs}, "
                         f"warmup={warmup}, min_runs={min_runs}, max_seconds={max_seconds}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    result = Timing(warmup=warmup)
    spent = 0.0
    while result.runs < runs:
        started = clock()
        fn()
        sync()
        elapsed = clock() - started
        result.samples_ms.append(elapsed * 1000.0)
        spent += elapsed
        if max_seconds is not None and spent >= max_seconds and result.runs >= min_runs:
            break
    return result
