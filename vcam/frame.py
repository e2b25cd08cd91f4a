"""The one type that flows through the pipeline: capture -> segment -> composite -> harmonize -> output."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One camera frame and everything the stages derive from it.

    Colour order is RGB everywhere inside vcam: OpenCV's BGR is converted once at capture and back once
    at output.

    Attributes:
        index: running number from the capture, starting at 0.
        captured_at: `time.perf_counter()` when the camera delivered the frame (latency = output - this).
        image: the camera picture, RGB uint8 H×W×3.
        mask: the person, float32 H×W in [0, 1] (soft edges), from this same frame.
        box: (y0, y1, x0, x1) around the person (the mask is 0 outside), or None: no person.
        foreground: the person's own colours, RGB uint8 H×W×3 inside `box` (the camera picture with the
            soft edge's old-backdrop colour taken out; composite.py), for the harmonizer to correct.
        background: the virtual background at frame size, RGB uint8 H×W×3.
        composite: person over background before harmonization, RGB uint8 H×W×3.
        output: what is sent to the outputs, RGB uint8 H×W×3.
        live: False for placeholder frames (e.g. "camera unavailable") that no camera produced.
        timings: milliseconds spent per stage, by stage name.
        cpu_ms: CPU milliseconds of the frame loop's thread per stage (timings minus waiting and preemption).
    """

    index: int
    captured_at: float
    image: np.ndarray
    mask: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    foreground: np.ndarray | None = None
    background: np.ndarray | None = None
    composite: np.ndarray | None = None
    output: np.ndarray | None = None
    live: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)

