"""How often the harmonize worker runs the network: `RefreshGovernor`, adapted to the CPU the frame loop leaves.

The camera-rate work comes first: when the frame loop or the process runs short of CPU, the network's
refresh rate drops (down to a floor), never the stream's frame rate. Used by `vcam.harmonize.HarmonizeStage`
in worker mode; a pure object (no threads, no clock of its own: the caller passes the time and the CPU).
"""

from __future__ import annotations

import time

from vcam.frame import Frame


def _own_ms(timings: dict[str, float], overlapped: frozenset[str] = frozenset()) -> float:
    """The frame loop's own milliseconds of a frame (the capture thread's "capture" is not the loop's, nor
    the stages `overlapped` in a thread of their own)."""
    return sum(ms for stage, ms in timings.items() if stage != "capture" and stage not in overlapped)


def _loop_ms(timings: dict[str, float], overlapped: frozenset[str] = frozenset()) -> float:
    """The milliseconds of a frame on the busier of the loop's threads: what sets the pace."""
    return max(_own_ms(timings, overlapped), sum(ms for stage, ms in timings.items() if stage in overlapped))


class RefreshGovernor:
    """The network's refresh rate, adapted to the CPU the frame loop leaves (worker mode).

    Two signals per frame. The loop's pace: the previous frame's stage times (wall clock, so time lost
    to the worker or to another process on the same core counts) over the time between the starts of the
    two frames. The process's CPU: user+system seconds (every thread) per second of the same interval,
    in cores. When the loop is above `high` of its interval (about to miss its pace) or the process uses
    more than `cores` (the share of the machine vcam may take: one core leaves the other to the video
    call), the rate drops by 5 % a frame towards `floor` (halved in about half a second at 30 FPS). When
    the loop is below `low` and the process under 90 % of `cores`, it rises by `step` Hz a frame back to
    `ceiling` (the --refresh-hz setting). The camera-rate work comes first: the stream keeps its frames
    and the correction refreshes less often.

    Args:
        ceiling: the most network runs per second (0: no limit, no adaptation).
        floor: the least, however busy the machine (3 Hz: slower corrections are seen to lag).
        cores: CPU budget of the whole process, in cores (None: the loop's pace only).
        overlapped: stage names run in a thread beside the loop's (vcam.overlap): a frame's pace is then the
            busier thread's time, not the sum.
    """

    def __init__(self, ceiling: float, floor: float = 3.0, cores: float | None = 1.0, low: float = 0.6,
                 high: float = 0.85, step: float = 0.1, overlapped=()):
        self.ceiling = float(ceiling)
        self.floor = min(float(floor), self.ceiling) if self.ceiling > 0 else 0.0
        self.cores_budget = cores
        self.low, self.high, self.step = low, high, step
        self.overlapped = frozenset(overlapped)
        self.rate = self.ceiling
        self.busy = 0.0  # smoothed share of the frame interval the loop spent working
        self.cores = 0.0  # smoothed process CPU, in cores
        self._previous: tuple[float, dict, float] | None = None  # (start, timings, process CPU s) of the last frame

    def update(self, frame: Frame, now: float, cpu: float | None = None) -> float:
        """Account `frame` (reaching harmonize at `now`, the process at `cpu` CPU seconds, default
        `time.process_time()`); returns the rate for the worker."""
        cpu = time.process_time() if cpu is None else cpu
        start = now - _own_ms(frame.timings, self.overlapped) / 1000.0
        previous, self._previous = self._previous, (start, frame.timings, cpu)
        if self.ceiling <= 0 or previous is None or start <= previous[0]:
            return self.rate
        interval = start - previous[0]
        # The previous frame's timings are complete by now (its harmonize and output were added).
        self.busy = 0.8 * self.busy + 0.2 * min(_loop_ms(previous[1], self.overlapped) / 1000.0 / interval, 2.0)
        # CPU comes in bursts (a network run every few frames): averaged over about 10 frames.
        self.cores = 0.9 * self.cores + 0.1 * min((cpu - previous[2]) / interval, 64.0)
        over = self.cores_budget is not None and self.cores > self.cores_budget
        room = self.cores_budget is None or self.cores < 0.9 * self.cores_budget
        if self.busy > self.high or over:
            self.rate = max(self.floor, self.rate * 0.95)
        elif self.busy < self.low and room:
            self.rate = min(self.ceiling, self.rate + self.step)
        return self.rate
