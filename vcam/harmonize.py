"""The harmonization stage: `frame.composite` -> `frame.output` through `engine.Harmonizer`.

Two ways to run, chosen by `mode`:
- "inline" (a GPU, or an offline job such as the demo): `harmonize()` on every frame.
- "worker" (a CPU): the network is slower than the camera, and harmonization changes slowly. A worker
  thread runs `estimate()` on the newest composite at most `refresh_hz` times a second; every frame gets
  `apply(latest correction)`, which is cheap, so the frame loop never waits for the network and the
  output never drops below the camera's rate because of it. The worker limits torch to `threads`
  intra-op threads so that it leaves the other core to the frame loop.

Failure policy while streaming: an engine error is logged and the un-harmonized composite is sent (never a
traceback, never a black or NaN frame); harmonization is retried after a back-off (1 s doubling to 60 s),
so one transient error does not turn it off for the session. `stats()` says when the next try is.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from vcam.errors import VcamError
from vcam.frame import Frame
from vcam.metrics import percentiles

log = logging.getLogger("vcam.harmonize")


def parse_reference(spec: str | None, size: tuple[int, int]) -> np.ndarray | None:
    """The optional reference region (background area the person is matched to) as a float32 H×W mask.

    Args:
        spec: None; "x,y,w,h" in pixels, or in fractions of the frame when all four are <= 1; or the
            path of a mask image (white = reference), resized to the frame.
        size: (width, height) of the frame.

    Raises:
        ValueError: a malformed rectangle or one outside the frame.
        FileNotFoundError / VcamError: a mask image that is missing or unreadable.
    """
    if spec is None:
        return None
    width, height = size
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) == 4 and not Path(spec).exists():
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"--reference must be x,y,w,h or a mask image, got {spec!r}") from None
        if all(0 <= v <= 1 for v in values) and any("." in p for p in parts):
            values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
        x, y, w, h = (round(v) for v in values)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(f"--reference {spec!r} is not a rectangle inside the {width}x{height} frame")
        reference = np.zeros((height, width), np.float32)
        reference[y:y + h, x:x + w] = 1.0
        return reference
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--reference mask image not found: {spec}")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise VcamError(f"cannot read --reference mask image {spec!r}")
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0


def create_harmonizer(model: str | None = None, weights: str | None = None, backend: str = "auto",
                      device: str = "auto", net_size: int = 256, smoothing: float = 0.8,
                      strength: float = 1.0, threads: int | None = None):
    """Build `engine.Harmonizer` with the app's settings (engine import deferred: it loads torch).

    Raises:
        ValueError, FileNotFoundError, RuntimeError: from the engine (bad model, weights or device).
    """
    from engine import Harmonizer

    kwargs = dict(model=model, weights=weights, backend=backend, device=device, net_size=net_size,
                  smoothing=smoothing, strength=strength, threads=threads)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights file not found: {weights}")
    return Harmonizer(**kwargs)


def _on_gpu(harmonizer) -> bool:
    name = str(getattr(harmonizer, "backend_name", "")).lower()
    return any(word in name for word in ("cuda", "tensorrt", "gpu"))


class _Worker:
    """Runs `estimate()` on the newest submitted (composite, mask) at most `refresh_hz` times a second."""

    def __init__(self, harmonizer, lock: threading.Lock, refresh_hz: float, threads: int):
        self._harmonizer = harmonizer
        self._lock = lock
        self.refresh_hz = refresh_hz
        self._threads = threads
        self._cond = threading.Condition()
        self._pending = None  # (composite, mask, reference), latest wins
        self._stop = False
        self.correction = None
        self.correction_shape: tuple[int, ...] | None = None
        self.estimates = 0
        self.estimate_ms: list[float] = []
        self.started_at = time.perf_counter()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vcam-harmonize", daemon=True)
        self._thread.start()

    def submit(self, composite: np.ndarray, mask: np.ndarray, reference: np.ndarray | None) -> None:
        with self._cond:
            self._pending = (composite, mask, reference)
            self._cond.notify()

    def _run(self) -> None:
        try:
            import torch

            torch.set_num_threads(self._threads)
        except Exception:  # torch absent or already configured: the engine picks its own threads
            pass
        next_due = time.perf_counter()
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                composite, mask, reference = self._pending
                self._pending = None
            started = time.perf_counter()
            try:
                with self._lock:
                    correction = self._harmonizer.estimate(composite, mask, reference)
            except Exception as exc:  # the stage falls back to the plain composite, see `error`
                self.error = exc
                return
            self.estimate_ms.append((time.perf_counter() - started) * 1000.0)
            self.correction, self.correction_shape = correction, composite.shape
            self.estimates += 1
            if self.refresh_hz > 0:
                next_due = max(next_due + 1.0 / self.refresh_hz, time.perf_counter() - 1.0 / self.refresh_hz)
                delay = next_due - time.perf_counter()
                if delay > 0:
                    with self._cond:
                        self._cond.wait_for(lambda: self._stop, timeout=delay)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


class HarmonizeStage:
    """The harmonization stage.

    Args:
        harmonizer: an object with the `engine.Harmonizer` contract (estimate / apply / harmonize / reset
            / close, smoothing, strength, backend_name).
        mode: "auto" (inline on a GPU backend, worker otherwise), "inline" or "worker".
        refresh_hz: worker's most estimates per second (0 = as fast as it runs).
        threads: torch intra-op threads for the worker.
        reference: optional float32 H×W reference mask (background region to match).
        enabled: harmonize at all (toggled live).

    Raises:
        ValueError: an unknown mode.
    """

    def __init__(self, harmonizer, mode: str = "auto", refresh_hz: float = 10.0, threads: int = 1,
                 reference: np.ndarray | None = None, enabled: bool = True, retry_initial: float = 1.0,
                 retry_max: float = 60.0):
        if mode not in ("auto", "inline", "worker"):
            raise ValueError(f"mode must be auto, inline or worker, got {mode!r}")
        self.harmonizer = harmonizer
        self.mode = ("inline" if _on_gpu(harmonizer) else "worker") if mode == "auto" else mode
        self.enabled = enabled
        self.reference = reference
        self.failed = False
        self.failures = 0
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._retry_delay = retry_initial
        self._retry_at = 0.0
        self._lock = threading.Lock()  # estimate()/reset()/settings never run concurrently
        self._refresh_hz, self._threads = refresh_hz, threads
        self._worker: _Worker | None = None
        self._inline_estimates = 0
        self._inline_ms: list[float] = []
        self._started = time.perf_counter()
        self._saved_smoothing = float(getattr(harmonizer, "smoothing", 0.0))

    # -- live controls ----------------------------------------------------------------------------
    @property
    def smoothing(self) -> float:
        return float(self.harmonizer.smoothing)

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        with self._lock:
            self.harmonizer.smoothing = float(value)

    @property
    def strength(self) -> float:
        return float(self.harmonizer.strength)

    @strength.setter
    def strength(self, value: float) -> None:
        with self._lock:
            self.harmonizer.strength = float(min(max(value, 0.0), 1.0))

    def toggle_smoothing(self) -> bool:
        """Smoothing off <-> the last non-zero value (0.8 if none); returns True when now on."""
        if self.smoothing > 0:
            self._saved_smoothing = self.smoothing
            self.smoothing = 0.0
            return False
        self.smoothing = self._saved_smoothing or 0.8
        return True

    @property
    def refresh_hz(self) -> float:
        return self._refresh_hz

    @refresh_hz.setter
    def refresh_hz(self, value: float) -> None:
        self._refresh_hz = float(value)
        if self._worker is not None:
            self._worker.refresh_hz = float(value)

    def reset(self) -> None:
        """Forget the temporal statistics (new background, camera reconnect: a scene change)."""
        with self._lock:
            try:
                self.harmonizer.reset()
            except Exception as exc:
                self._fail(exc)
        if self._worker is not None:
            self._worker.correction = None

    # -- per frame --------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failures += 1
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.error("harmonization failed (%s: %s); sending the plain composite, retrying in %.0f s",
                      type(exc).__name__, message, self._retry_delay)
            self._retry_at = time.perf_counter() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self._retry_max)
        self.failed = True

    def _retry_due(self) -> bool:
        """After a failure: whether the back-off has passed; then start afresh (a new worker, new state)."""
        if time.perf_counter() < self._retry_at:
            return False
        log.info("retrying harmonization")
        if self._worker is not None:  # its thread ended with the error
            self._worker.close()
            self._worker = None
        self.failed = False
        self.reset()
        return not self.failed

    def _reference_for(self, frame: Frame) -> np.ndarray | None:
        if self.reference is None or self.reference.shape == frame.composite.shape[:2]:
            return self.reference
        height, width = frame.composite.shape[:2]
        return cv2.resize(self.reference, (width, height), interpolation=cv2.INTER_LINEAR)

    def __call__(self, frame: Frame) -> Frame:
        frame.output = frame.composite
        if not self.enabled or frame.mask is None or (self.failed and not self._retry_due()):
            return frame
        try:
            if self.mode == "inline":
                started = time.perf_counter()
                with self._lock:
                    output = self.harmonizer.harmonize(frame.composite, frame.mask, self._reference_for(frame))
                self._inline_ms.append((time.perf_counter() - started) * 1000.0)
                self._inline_estimates += 1
            else:
                output = self._worker_step(frame)
            if output is not None:
                frame.output = output
                self._retry_delay = self._retry_initial  # working again: the next failure waits little
        except Exception as exc:  # streaming must go on: fall back to the composite
            self._fail(exc)
        return frame

    def _worker_step(self, frame: Frame) -> np.ndarray | None:
        if self._worker is None:
            self._worker = _Worker(self.harmonizer, self._lock, self._refresh_hz, self._threads)
        worker = self._worker
        if worker.error is not None:
            raise worker.error
        worker.submit(frame.composite, frame.mask, self._reference_for(frame))
        correction = worker.correction
        if correction is None or worker.correction_shape != frame.composite.shape:
            return None  # no estimate yet for this size: the plain composite for these first frames
        return self.harmonizer.apply(correction, frame.composite, frame.mask)

    # -- reporting and shutdown -------------------------------------------------------------------
    def stats(self) -> dict:
        """Mode, backend and refresh rate (network runs per second) so far."""
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        if self._worker is not None:
            count, times = self._worker.estimates, self._worker.estimate_ms
            elapsed = max(time.perf_counter() - self._worker.started_at, 1e-9)
        else:
            count, times = self._inline_estimates, self._inline_ms
        return {
            "enabled": self.enabled,
            "mode": self.mode,
            "backend": str(getattr(self.harmonizer, "backend_name", "unknown")),
            "estimates": count,
            "refresh_hz": round(count / elapsed, 3),
            "estimate_ms": percentiles(times),
            "failed": self.failed,
            "failures": self.failures,
            "retry_in_s": round(max(self._retry_at - time.perf_counter(), 0.0), 1) if self.failed else None,
        }

    def close(self) -> None:
        """Stop the worker and close the engine; idempotent."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self.harmonizer is not None:
            try:
                self.harmonizer.close()
            except Exception as exc:
                log.debug("harmonizer close: %s", exc)
            self.harmonizer = None

