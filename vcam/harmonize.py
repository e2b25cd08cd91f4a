"""The harmonization stage: `frame.composite` -> `frame.output` through `engine.Harmonizer`.

Two ways to run, chosen from where the network runs (`harmonizer.device`, never a backend's name):
- "inline" (a GPU, or an offline job such as the demo): `harmonize()` on every frame, in the frame loop.
  On CUDA the frame goes through the GPU frame path instead (`Harmonizer.frame_path`, engine.gpu_frame):
  the person's colours, the mask and the background are uploaded, the composite, the network, the
  correction and the second composite run on the device, the output is downloaded; the same picture as
  estimate + apply within a level (tests/test_gpu_frame.py).
- "worker" (a CPU): the network is slower than the camera, and harmonization changes slowly. A worker
  thread runs `estimate()` on the newest composite at most `refresh_hz` times a second, and fewer (down to
  3 Hz) while the frame loop is short of CPU (`vcam.refresh.RefreshGovernor`); every frame gets `apply(latest
  correction)`, which is cheap, so the frame loop never waits for the network and keeps its pace.
  `apply` gets the frame's foreground and background: the person's own colours are corrected, then
  composited, so the soft edge gets the same correction as the inside.

Who owns what. The temporal state (the PN statistics and the smoothed correction) lives in the
Harmonizer and has exactly one owner: the thread that runs `estimate()`: the worker, or the frame loop
inline. Nothing else calls `estimate`, `reset` or sets `smoothing`; the frame loop sends those as
commands that the worker applies between two estimates (`HarmonizeStage.configure`, `reset`), so a key
press returns at once even while a network run takes hundreds of milliseconds. There is no lock. The
worker publishes each finished correction as one immutable tuple (generation, frame shape, correction);
`apply` and `strength` belong to the frame loop (apply reads only its arguments and the strength).
A reset bumps the generation, so an estimate that was running when the scene changed is never applied.
Closing follows the same rule: the harmonizer is closed after its last use, by the stage, or by the worker
thread itself when `close()` finds an estimate still running (never under it).

Bounded for a call of any length: the estimate timings are windows of the last TIMING_WINDOW
(`vcam.metrics.Window`), and `status()`, what per-frame hooks read, computes no percentiles.

Threads: the Harmonizer owns its thread count (`Harmonizer(threads=)`, ONNX Runtime's pool); torch's
pool is per thread, so the worker gives torch the same count (`_limit_torch_threads`), in this one place,
leaving the other core to the frame loop. Inline, the network is the frame loop's own work: no limit.
On a CPU the worker also runs at a lower scheduling priority than the frame loop (`WORKER_NICE`; Linux sets
nice per thread): when the call's own work takes a core, the network's refresh slows down, not the stream.

Failure policy while streaming: an engine error is logged and the un-harmonized composite is sent (never a
traceback, never a black or NaN frame); harmonization is retried after a back-off (1 s doubling to 60 s),
so one transient error does not turn it off for the session. `status()` says when the next try is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from vcam.frame import Frame
from vcam.metrics import Window, percentiles
from vcam.refresh import RefreshGovernor

log = logging.getLogger("vcam.harmonize")

TIMING_WINDOW = 1024  # estimates whose times the stats summarise (bounded: a GPU call runs 30 a second for hours)
WORKER_JOIN_S = 5.0  # how long closing waits for a running estimate before leaving the close to the worker


def create_harmonizer(model: str | None = None, weights: str | None = None, backend: str = "auto",
                      device: str = "auto", net_size: int = 256, smoothing: float = 0.1,
                      strength: float = 1.0, threads: int | None = None):
    """Build `engine.Harmonizer` with the app's settings (engine import deferred: ONNX Runtime and the graph).

    Raises:
        ValueError, FileNotFoundError, RuntimeError: from the engine (bad model, weights or device).
    """
    from engine import Harmonizer

    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights file not found: {weights}")
    # No un-sharpening of the person at camera rate: its full-resolution filter costs 3-6 ms per 720p frame
    # while it acts, and webcams rarely need it (engine.sharpness).
    return Harmonizer(model=model, weights=weights, backend=backend, device=device, net_size=net_size,
                      smoothing=smoothing, strength=strength, threads=threads, sharpness=False)


def device_type(harmonizer) -> str:
    """"cuda" or "cpu": where the harmonizer's network runs (`harmonizer.device`, a str or torch.device)."""
    device = harmonizer.device
    return getattr(device, "type", None) or str(device).split(":")[0]


def _limit_torch_threads(harmonizer) -> None:
    """Give torch the harmonizer's thread count in the calling thread (torch's pool is per thread)."""
    threads = getattr(harmonizer, "threads", None)
    if not threads or device_type(harmonizer) != "cpu":
        return
    torch = sys.modules.get("torch")
    if torch is None:  # ONNX Runtime runs the network and torch never loaded: nothing to limit or import
        return
    torch.set_num_threads(int(threads))


# Nice 10 weighs a runnable thread about 1/10 of a nice-0 one: the frame loop (and MediaPipe's thread) wins
# a contended core at once, the network takes what is left. Raising one's own nice needs no privilege.
WORKER_NICE = 10


def _yield_to_the_frame_loop(harmonizer) -> None:
    """Lower the calling thread's priority to WORKER_NICE where the network runs on the CPU (Linux only; a
    GPU worker mostly waits on the device and is left as it is)."""
    if not sys.platform.startswith("linux") or device_type(harmonizer) != "cpu":
        return
    tid = threading.get_native_id()  # on Linux a thread is a task of its own: this leaves the others alone
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(WORKER_NICE, os.getpriority(os.PRIO_PROCESS, tid)))
    except OSError as exc:  # a sandbox that forbids it: the stream still runs, only less protected
        log.debug("could not lower the harmonize worker's priority: %s", exc)


def _close_harmonizer(harmonizer) -> None:
    try:
        harmonizer.close()
    except Exception as exc:  # shutting down: one line in the debug log, the rest still closes
        log.debug("harmonizer close: %s", exc)


def _apply_setting(harmonizer, name: str, value) -> None:
    """One estimate-side command on the harmonizer, in the thread that owns its temporal state."""
    if name == "reset":
        harmonizer.reset()
    elif name == "smoothing":
        harmonizer.smoothing = float(value)
    else:  # a programming error in this module, not a user input
        raise AssertionError(f"unknown harmonizer command {name!r}")


class _Worker:
    """The thread that owns the harmonizer's temporal state in worker mode.

    `submit` hands it the newest frame (latest wins); `send` queues a command (reset, smoothing) that it
    applies before its next estimate. Neither waits for a running estimate. Its timings are windows of the
    last TIMING_WINDOW estimates, written here and summarised by the frame loop (a value being written
    while they are read shifts a percentile by one sample at most).
    """

    def __init__(self, harmonizer, refresh_hz: float, generation: int = 0):
        self._harmonizer = harmonizer
        self.refresh_hz = refresh_hz
        self._cond = threading.Condition()  # guards _pending, _commands and _stop only, never a network run
        self._pending = None  # (composite, mask, reference), latest wins
        self._commands: list[tuple[str, object, int]] = []
        self._stop = False
        self._finished = False  # the thread has made its last call on the harmonizer
        self._close_on_exit = False  # the thread closes the harmonizer after its last estimate
        self._generation = generation  # of the last reset applied here
        self.published: tuple[int, tuple[int, ...], object] | None = None  # written here, read by the loop
        self.estimate_ms = Window(TIMING_WINDOW)
        self.estimate_cpu_ms = Window(TIMING_WINDOW)  # the worker thread's own CPU time per estimate
        self.started_at = time.perf_counter()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vcam-harmonize", daemon=True)
        self._thread.start()

    def submit(self, composite: np.ndarray, mask: np.ndarray, reference: np.ndarray | None,
               timestamp: float | None = None) -> None:
        """The newest frame to estimate on; `timestamp` (its capture time, seconds) paces the smoothing."""
        with self._cond:
            self._pending = (composite, mask, reference, timestamp)
            self._cond.notify()

    def send(self, name: str, value=None, generation: int = 0) -> None:
        with self._cond:
            self._commands.append((name, value, generation))
            self._cond.notify()

    def _next_job(self):
        """Wait for a frame or a command; returns (commands, job), or None to stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop or self._pending is not None or self._commands)
            if self._stop:
                return None
            commands, self._commands = self._commands, []
            job, self._pending = self._pending, None
        return commands, job

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            with self._cond:
                self._finished = True
                close = self._close_on_exit
            if close:  # the stage was closed during an estimate: closed here, after it
                _close_harmonizer(self._harmonizer)

    def _serve(self) -> None:
        _limit_torch_threads(self._harmonizer)
        _yield_to_the_frame_loop(self._harmonizer)
        next_due = time.perf_counter()
        while (work := self._next_job()) is not None:
            commands, job = work
            try:
                for name, value, generation in commands:
                    _apply_setting(self._harmonizer, name, value)
                    self._generation = max(self._generation, generation)
                if job is None:
                    continue
                generation, started, cpu = self._generation, time.perf_counter(), time.thread_time()
                correction = self._harmonizer.estimate(*job)
            except Exception as exc:  # the stage falls back to the plain composite, see `error`
                self.error = exc
                return
            self.estimate_ms.append((time.perf_counter() - started) * 1000.0)
            self.estimate_cpu_ms.append((time.thread_time() - cpu) * 1000.0)
            self.published = (generation, job[0].shape, correction)  # one assignment: the loop sees all or none
            next_due = self._pace(next_due)

    def _pace(self, next_due: float) -> float:
        if self.refresh_hz <= 0:
            return next_due
        period = 1.0 / self.refresh_hz
        next_due = max(next_due + period, time.perf_counter() - period)
        delay = next_due - time.perf_counter()
        if delay > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._stop, timeout=delay)
        return next_due

    def close(self, *, close_harmonizer: bool = False) -> list[tuple[str, object, int]]:
        """Stop the thread; returns the commands it had not applied yet (the caller now owns the state).

        With `close_harmonizer`, the harmonizer is closed after its last estimate, never under a running
        one: here when the thread has ended, else by the thread itself when the estimate it is in returns
        (waited for up to WORKER_JOIN_S). Exactly one of the two closes it.
        """
        with self._cond:
            self._stop = True
            hand_over = close_harmonizer and not self._finished
            self._close_on_exit = hand_over
            self._cond.notify_all()
        self._thread.join(timeout=WORKER_JOIN_S)
        if self._thread.is_alive():
            log.info("the harmonizer is still estimating; it is closed when that estimate ends")
        with self._cond:
            left, self._commands = self._commands, []
        if close_harmonizer and not hand_over:
            _close_harmonizer(self._harmonizer)
        return left


class HarmonizeStage:
    """The harmonization stage; every method is called from the frame loop only.

    Args:
        harmonizer: an object with the `engine.Harmonizer` contract: estimate / apply / harmonize / reset /
            close, `smoothing` and `strength` settable, `device` (where the network runs), `backend_name`.
        mode: "auto" (inline where the network runs on a GPU, worker otherwise), "inline" or "worker".
        refresh_hz: worker's most estimates per second (0 = as fast as it runs).
        reference: optional float32 H×W reference mask (background region to match).
        enabled: harmonize at all (a live setting).
        retry_initial, retry_max: after an engine error, seconds until the next try (doubling up to the max).
        overlapped: the names of the stages that run in a thread of their own, beside this one's (the
            pipeline's front with overlap on): the refresh governor reads the loop's pace from the busier side.
        gpu_frames: inline, run each frame through the harmonizer's GPU frame path; None: where the network
            runs on CUDA (False where the harmonizer has no such path for its model).

    Raises:
        ValueError: an unknown mode.
    """

    def __init__(self, harmonizer, mode: str = "auto", refresh_hz: float = 10.0,
                 reference: np.ndarray | None = None, enabled: bool = True, retry_initial: float = 1.0,
                 retry_max: float = 60.0, overlapped=(), gpu_frames: bool | None = None):
        if mode not in ("auto", "inline", "worker"):
            raise ValueError(f"mode must be auto, inline or worker, got {mode!r}")
        self.harmonizer = harmonizer
        self._backend_name = str(getattr(harmonizer, "backend_name", "unknown"))
        self.mode = ("inline" if device_type(harmonizer) == "cuda" else "worker") if mode == "auto" else mode
        self.enabled = enabled
        self.reference = reference
        self.failed = False
        self.failures = 0
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._retry_delay = retry_initial
        self._retry_at = 0.0
        self.refresh_hz = float(refresh_hz)
        self.overlapped = frozenset(overlapped)
        self.governor = RefreshGovernor(self.refresh_hz, overlapped=self.overlapped)
        self._generation = 0  # bumped by reset(): corrections from before it are not applied
        self._worker: _Worker | None = None
        self._inline_ms = Window(TIMING_WINDOW)
        self._started = time.perf_counter()
        if gpu_frames is None:
            gpu_frames = self.mode == "inline" and device_type(harmonizer) == "cuda"
        self.gpu_frames = bool(gpu_frames) and self.mode == "inline"
        self._frames = None  # the GPU frame path for the current frame size, made on the first frame
        self._frames_generation = 0  # the reset generation the frame path has applied
        self._frames_reference = None  # the reference region the frame path was made with

    # -- live settings (queued to the owner of the temporal state) ----------------------------------
    def configure(self, *, smoothing: float | None = None, strength: float | None = None,
                  refresh_hz: float | None = None) -> None:
        """Change settings without waiting: strength now (apply's), smoothing before the next estimate."""
        if strength is not None:
            self.harmonizer.strength = float(min(max(strength, 0.0), 1.0))
        if refresh_hz is not None:
            self.refresh_hz = float(refresh_hz)
            self.governor = RefreshGovernor(self.refresh_hz, overlapped=self.overlapped)
            if self._worker is not None:
                self._worker.refresh_hz = self.refresh_hz
        if smoothing is not None:
            self._command("smoothing", float(smoothing))

    def reset(self) -> None:
        """Forget the temporal statistics (new background, camera reconnect: a scene change)."""
        self._generation += 1
        self._command("reset")

    def _command(self, name: str, value=None) -> None:
        if self._worker is not None:
            self._worker.send(name, value, self._generation)
            return
        try:  # inline (or no estimate yet): the frame loop owns the state, so apply it here
            _apply_setting(self.harmonizer, name, value)
        except Exception as exc:
            self._fail(exc)

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
        self.failed = False
        worker, self._worker = self._worker, None
        if worker is not None:  # its thread ended with the error: settings sent since then apply here
            for name, value, _ in worker.close():
                if name != "reset":  # a reset follows anyway
                    self._command(name, value)
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
            output = self._inline_step(frame) if self.mode == "inline" else self._worker_step(frame)
            if output is not None:
                frame.output = output
                self._retry_delay = self._retry_initial  # working again: the next failure waits little
        except Exception as exc:  # streaming must go on: fall back to the composite
            self._fail(exc)
        return frame

    def _inline_step(self, frame: Frame) -> np.ndarray:
        started = time.perf_counter()
        output = self._gpu_step(frame) if self.gpu_frames else None
        if output is None:
            correction = self.harmonizer.estimate(frame.composite, frame.mask, self._reference_for(frame),
                                                  timestamp=frame.captured_at)
            output = self._apply(correction, frame)
        self._inline_ms.append((time.perf_counter() - started) * 1000.0)  # a window: bounded for hours
        return output

    def _gpu_step(self, frame: Frame) -> np.ndarray | None:
        """The frame through the GPU frame path (None where the frame lacks the person's own colours, or the
        harmonizer has no frame path: then never again). The path follows the harmonizer's live settings and
        the stage's resets here, between two frames."""
        if frame.foreground is None or frame.background is None:
            return None
        try:
            return self._gpu_path_output(frame)
        except Exception as exc:  # noqa: BLE001 - never run on a real GPU yet: estimate + apply is the tested way
            log.warning("GPU frame path failed (%s: %s): harmonizing with estimate + apply from now on",
                        type(exc).__name__, exc)
            self.gpu_frames = False
            frames, self._frames = self._frames, None
            if frames is not None:
                frames.close()
            return None

    def _gpu_path_output(self, frame: Frame) -> np.ndarray | None:
        """`_gpu_step`'s work: the path for this frame size and reference (made or kept), the frame through it."""
        height, width = frame.composite.shape[:2]
        path = self._frames
        # The reference region is fixed for a path's stream: a new one (a live setting) makes a new path.
        if path is None or path.size != (width, height) or self._frames_reference is not self.reference:
            if path is not None:
                path.close()
            make = getattr(self.harmonizer, "frame_path", None)  # optional in the stage's harmonizer contract
            path = self._frames = make((width, height), self._reference_for(frame)) if make else None
            self._frames_generation, self._frames_reference = self._generation, self.reference
            if path is None:
                log.info("no GPU frame path for this model: harmonizing with estimate + apply")
                self.gpu_frames = False
                return None
        if self._frames_generation != self._generation:
            path.reset()
            self._frames_generation = self._generation
        if path.strength != self.harmonizer.strength:
            path.strength = self.harmonizer.strength
        if path.smoothing != self.harmonizer.smoothing:
            path.smoothing = self.harmonizer.smoothing
        # A copy: the path's pinned buffer is reused two frames later, and the output may be held longer.
        return path.process(frame.foreground, frame.mask, frame.background).copy()

    def _worker_step(self, frame: Frame) -> np.ndarray | None:
        if self._worker is None:
            self._worker = _Worker(self.harmonizer, self.refresh_hz, self._generation)
        worker = self._worker
        if worker.error is not None:
            raise worker.error
        worker.refresh_hz = self.governor.update(frame, time.perf_counter(), time.process_time())
        # The capture time stamps the estimate: the smoothing is a time constant, so the correction follows a
        # change of the light as fast at the worker's few estimates a second as inline at 30.
        worker.submit(frame.composite, frame.mask, self._reference_for(frame), frame.captured_at)
        published = worker.published
        if published is None:
            return None  # no estimate yet: the plain composite for these first frames
        generation, shape, correction = published
        if generation != self._generation or shape != frame.composite.shape:
            return None  # from before a reset, or for another frame size
        return self._apply(correction, frame)

    def _apply(self, correction, frame: Frame) -> np.ndarray:
        """The correction on this frame: on the person's own colours, then composited, where the frame has
        them (the soft edge gets the inside's correction); blended into the composite otherwise."""
        if frame.foreground is None or frame.background is None:
            return self.harmonizer.apply(correction, frame.composite, frame.mask)
        return self.harmonizer.apply(correction, frame.composite, frame.mask, foreground=frame.foreground,
                                     background=frame.background, box=frame.box)

    # -- reporting and shutdown -------------------------------------------------------------------
    def status(self) -> dict:
        """Mode, backend and refresh rate (network runs per second) so far: a few numbers, cheap enough for
        a per-frame hook (the control page's, the status line)."""
        started, count = self._started, self._inline_ms.count
        if self._worker is not None:
            started, count = self._worker.started_at, self._worker.estimate_ms.count
        elapsed = max(time.perf_counter() - started, 1e-9)
        return {
            "enabled": self.enabled,
            "mode": self.mode,
            "backend": self._backend_name,
            "estimates": count,
            "refresh_hz": round(count / elapsed, 3),
            "refresh_target_hz": round(self.governor.rate, 2),
            "failed": self.failed,
            "failures": self.failures,
            "retry_in_s": round(max(self._retry_at - time.perf_counter(), 0.0), 1) if self.failed else None,
        }

    def stats(self) -> dict:
        """`status()` and the estimate's time percentiles over the last TIMING_WINDOW estimates (the run's
        summary, `--stats-json`)."""
        times, cpu = self._inline_ms, None
        if self._worker is not None:
            times, cpu = self._worker.estimate_ms, self._worker.estimate_cpu_ms
        return {**self.status(), "estimate_ms": percentiles(times.values()),
                "estimate_cpu_ms": percentiles(cpu.values() if cpu is not None else ())}

    def close(self) -> None:
        """Stop the worker and close the engine after its last use (by the worker when an estimate is still
        running); idempotent."""
        worker, self._worker = self._worker, None
        harmonizer, self.harmonizer = self.harmonizer, None
        frames, self._frames = self._frames, None
        if frames is not None:
            frames.close()
        if worker is not None:
            worker.close(close_harmonizer=harmonizer is not None)
        elif harmonizer is not None:
            _close_harmonizer(harmonizer)
