"""The timing core: warm-up, synchronize, many timed runs, p50/p95 and FPS.

Latency is measured per call with `time.perf_counter` around the call *and* a device synchronize, so a
GPU result counts only once it is ready: the latency a real-time caller sees, not the launch time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile of `samples` with linear interpolation (NumPy's default method).

    Args:
        samples: at least one finite number.
        q: percentile in [0, 100].

    Returns:
        The interpolated value; for one sample, that sample.

    Raises:
        ValueError: `samples` is empty or `q` is outside [0, 100].
    """
    if len(samples) == 0:
        raise ValueError("percentile: expected at least one sample, got none")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: expected q in [0, 100], got {q}")
    ordered = sorted(float(s) for s in samples)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timing:
    """Per-call latencies of one timed configuration, in milliseconds."""

    samples_ms: list[float]
    warmup: int = 0

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    @property
    def p50_ms(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.samples_ms, 95)

    @property
    def mean_ms(self) -> float:
        return sum(self.samples_ms) / len(self.samples_ms)

    @property
    def fps(self) -> float:
        """Calls per second when run back to back (runs / total time): the sustained throughput."""
        total = sum(self.samples_ms)
        return 1000.0 * len(self.samples_ms) / total if total > 0 else float("inf")

    def summary(self) -> dict:
        """The numbers that go into reports (rounded to what the clock can resolve)."""
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "p50_ms": round(self.p50_ms, 4),
            "p95_ms": round(self.p95_ms, 4),
            "mean_ms": round(self.mean_ms, 4),
            "min_ms": round(min(self.samples_ms), 4),
            "fps": round(self.fps, 3),
        }


def time_calls(fn: Callable[[], object], *, warmup: int = 3, runs: int = 20,
               sync: Callable[[], None] | None = None, max_seconds: float | None = None,
               min_runs: int = 3, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time `fn()` call by call.

    Args:
        fn: the work to time; its result is discarded.
        warmup: untimed calls first (allocations, cuDNN autotuning, JIT, caches).
        runs: timed calls wanted.
        sync: called after warm-up and after every timed call before the clock is read (e.g.
            `torch.cuda.synchronize`); None on the CPU.
        max_seconds: a time budget for the timed calls: stop early once it is spent, but never before
            `min_runs` (keeps slow configurations on small CPUs from running for minutes).
        min_runs: the fewest timed calls kept when the budget cuts the run short.
        clock: the time source in seconds (tests pass a fake one).

    Returns:
        A `Timing` with one sample per timed call.

    Raises:
        ValueError: `runs` < 1, `warmup` < 0, `min_runs` < 1 or `max_seconds` <= 0.
    """
    if runs < 1 or warmup < 0 or min_runs < 1:
        raise ValueError(f"time_calls: expected runs >= 1, warmup >= 0, min_runs >= 1; "
                         f"got runs={runs}, warmup={warmup}, min_runs={min_runs}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"time_calls: expected max_seconds > 0 or None, got {max_seconds}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    samples = []
    spent = 0.0
    for i in range(runs):
        start = clock()
        fn()
        if sync is not None:
            sync()
        elapsed = clock() - start
        samples.append(elapsed * 1000.0)
        spent += elapsed
        if max_seconds is not None and spent >= max_seconds and i + 1 >= min(min_runs, runs):
            break
    return Timing(samples_ms=samples, warmup=warmup)


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 3, runs: int = 20,
                     sync: Callable[[], None] | None = None, max_seconds: float | None = None,
                     min_runs: int = 3, clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time several callables round-robin: one call of each per round, `runs` rounds.

    On a shared machine, load comes and goes over seconds; timing A's runs and then B's lets a burst of
    load land on one of them only. Interleaving spreads it over all, so their *comparison* (torch vs ONNX
    Runtime, eager vs CUDA graph) stays fair even when the absolute figures are noisy.

    Args:
        fns: name -> the work to time.
        warmup, sync, min_runs, clock: as for `time_calls` (warm-up calls are per callable).
        runs: rounds wanted.
        max_seconds: budget per callable: stop after the round in which the slowest callable's total
            time reaches it (never before `min_runs` rounds).

    Returns:
        name -> Timing, every one with the same number of runs.

    Raises:
        ValueError: no callables, or bad settings (see `time_calls`).
    """
    if not fns:
        raise ValueError("time_interleaved: expected at least one callable")
    if runs < 1 or warmup < 0 or min_runs < 1:
        raise ValueError(f"time_interleaved: expected runs >= 1, warmup >= 0, min_runs >= 1; "
                         f"got runs={runs}, warmup={warmup}, min_runs={min_runs}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"time_interleaved: expected max_seconds > 0 or None, got {max_seconds}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if sync is not None:
        sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(runs):
        for name, fn in fns.items():
            start = clock()
            fn()
            if sync is not None:
                sync()
            samples[name].append((clock() - start) * 1000.0)
        slowest = max(sum(s) for s in samples.values()) / 1000.0
        if max_seconds is not None and slowest >= max_seconds and i + 1 >= min(min_runs, runs):
            break
    return {name: Timing(samples_ms=s, warmup=warmup) for name, s in samples.items()}
