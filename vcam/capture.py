"""Capture: camera, device path, video file, image file or stream URL -> RGB `Frame`s from a thread.

A `Source` only knows how to open, read one BGR picture and release; `Capture` runs a source in its own
thread and decides what the main loop sees:

- live sources (cameras, URLs, files played at their own rate): only the newest frame is kept ("latest
  wins"), so a slow frame loop never builds a queue and latency stays one frame deep;
- `every_frame=True` (a file played as fast as possible, for benchmarks and the demo): every frame is
  delivered, none dropped, decoding runs one frame ahead of the frame loop.

A source that fails (camera unplugged, stream dropped) is released and re-opened with exponential back-off
(sleeping on an Event, never busy-waiting); meanwhile `state` is "unavailable" and the pipeline sends a
placeholder frame. Sources are injectable: tests pass their own object with open/read/release.

BGR -> RGB happens here, once, in the capture thread (off the frame loop's core time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vcam.errors import VcamError, first_line
from vcam.frame import Frame

log = logging.getLogger("vcam.capture")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
URL_TIMEOUT_MS = 5000  # a stream URL's open and read give up after this (then the capture retries)
MAX_SKIP = 10_000  # failed reads tried in a row inside a file before it counts as ended
UNKNOWN_LENGTH_SKIP = 250  # the same when the container does not say how many frames it has


class Source(Protocol):
    """What `Capture` needs from a picture source.

    Attributes:
        kind: "camera", "url", "file" or "image" (files end; cameras and URLs are retried).
        fps: the source's own frame rate (after open).
        size: (width, height) it delivers (after open).
    """

    kind: str
    fps: float
    size: tuple[int, int]

    def open(self) -> None:
        """Open (or re-open) the source; RuntimeError when it cannot."""

    def read(self) -> np.ndarray | None:
        """Next BGR uint8 H×W×3 picture, or None on failure / end of file."""

    def release(self) -> None:
        """Free the device or file; idempotent."""


def cover_crop(image: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Scale `image` to fill `size` = (width, height) and crop the overflow centrally (no distortion)."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    crop_w, crop_h = min(w, round(width / scale)), min(h, round(height / scale))
    x0, y0 = (w - crop_w) // 2, (h - crop_h) // 2
    crop = image[y0:y0 + crop_h, x0:x0 + crop_w]
    if scale > 1:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=interpolation)


class OpenCVSource:
    """A camera (index or /dev/videoN), a video file or a stream URL through cv2.VideoCapture.

    Cameras are asked for size, fps and MJPG (USB cameras give 720p30 only compressed) and a one-frame
    driver buffer; what they really give is read back and used.
    """

    def __init__(self, spec: str, size: tuple[int, int] | None = None, fps: float | None = None):
        self.spec = spec
        self.requested_size = size
        self.requested_fps = fps
        if spec.isdigit():
            self.kind, self._target = "camera", int(spec)
        elif spec.startswith("/dev/"):
            self.kind, self._target = "camera", spec
        elif "://" in spec:
            self.kind, self._target = "url", spec
        else:
            self.kind, self._target = "file", spec
        self.fps = fps or 30.0
        self.size = size or (0, 0)
        self.skipped = 0  # failed reads skipped inside a file (corrupt stretches)
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.release()
        if self.kind == "file" and not Path(self._target).is_file():
            # Gone (retried later) or replaced by a FIFO/device, whose open() would block without end.
            raise RuntimeError(f"file {self.spec!r} is missing or not a regular file")
        if self.kind == "camera" and isinstance(self._target, str):
            cap = cv2.VideoCapture(self._target, cv2.CAP_V4L2)
        elif self.kind == "url":  # a dead server must not block open()/read() for FFmpeg's default minutes
            cap = cv2.VideoCapture(self._target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_TIMEOUT_MS,
                                                               cv2.CAP_PROP_READ_TIMEOUT_MSEC, URL_TIMEOUT_MS])
        else:
            cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            raise RuntimeError(f"cannot open {self.kind} {self.spec!r}")
        if self.kind == "camera":
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            if self.requested_size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1])
            if self.requested_fps:
                cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        if self.kind != "camera" or fps <= 0:
            fps = fps if 1 <= fps <= 240 else (self.requested_fps or 30.0)
        if width <= 0 or height <= 0:
            ok, image = cap.read()  # some streams only know their size after the first frame
            if not ok:
                cap.release()
                raise RuntimeError(f"{self.kind} {self.spec!r} opened but delivered no picture")
            height, width = image.shape[:2]
            if self.kind == "file":
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._cap, self.size, self.fps = cap, (width, height), float(fps)
        if self.kind == "camera":
            fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
            log.info("camera %s: %dx%d @ %.1f fps, %s", self.spec, width, height, fps, fourcc)

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if ok and image is not None:
            return image
        if self.kind == "file":
            return self._skip_undecodable()
        return None

    def _skip_undecodable(self) -> np.ndarray | None:
        """After a failed read in a file: a corrupt stretch, or the end? Read on to tell.

        FFmpeg resynchronises at the next decodable frame, but a failed read does not advance the position,
        so the frames left by the container's count bound the attempts: at the real end none are left and
        the file ends at once; in a corrupt middle the reads succeed again and the video goes on.
        """
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        position = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
        budget = int(count - position) if count > 0 else UNKNOWN_LENGTH_SKIP
        for attempt in range(max(0, min(budget, MAX_SKIP))):
            ok, image = self._cap.read()
            if ok and image is not None:
                self.skipped += attempt + 1
                log.warning("input %s: skipped undecodable data near frame %d", self.spec, int(position))
                return image
        return None

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource:
    """A still image played as a video (the same picture at `fps`)."""

    kind = "image"

    def __init__(self, path: str, fps: float | None = None):
        self.path = path
        self.fps = fps or 30.0
        self.size = (0, 0)
        self._image: np.ndarray | None = None

    def open(self) -> None:
        image = cv2.imread(self.path, cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"cannot read image {self.path!r}")
        self._image = image
        self.size = (image.shape[1], image.shape[0])

    def read(self) -> np.ndarray | None:
        return None if self._image is None else self._image.copy()

    def release(self) -> None:
        self._image = None


class ArraySource:
    """RGB pictures from memory (the demo's animated clip, tests); ends after the last one."""

    kind = "file"

    def __init__(self, images: list[np.ndarray], fps: float = 25.0):
        if not images:
            raise ValueError("ArraySource needs at least one image")
        self._images = images
        self.fps = fps
        self.size = (images[0].shape[1], images[0].shape[0])
        self._next = 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self._images):
            return None
        image = self._images[self._next]
        self._next += 1
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # a Source delivers BGR, like OpenCV

    def release(self) -> None:
        pass


def open_source(spec: str, size: tuple[int, int] | None = None, fps: float | None = None) -> Source:
    """Pick and open the source for an --input value.

    Raises:
        FileNotFoundError: a path that does not exist.
        VcamError: a file, camera or URL that cannot be opened or read.
    """
    spec = str(spec).strip()
    if not spec:
        raise ValueError("--input is empty: give a camera index, device, video/image file or URL")
    if spec.isdigit() or spec.startswith("/dev/") or "://" in spec:
        if spec.startswith("/dev/") and not Path(spec).exists():
            raise VcamError(f"camera device not found: {spec} (see `vcam devices`)")
        source: Source = OpenCVSource(spec, size, fps)
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {spec}")
        if path.is_dir():
            raise VcamError(f"input is a directory, not a video or image: {spec}")
        if not path.is_file():  # opening a FIFO blocks until a writer comes, and Ctrl-C cannot end that
            raise VcamError(f"input is not a regular file (a named pipe or device?): {spec}; give a video or "
                            f"image file, a camera (index or /dev/videoN) or a stream URL")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            source = ImageSource(spec, fps)
        else:
            source = OpenCVSource(spec, size, fps)
    try:
        source.open()
    except RuntimeError as exc:
        hint = " (see `vcam devices`)" if source.kind == "camera" else ""
        raise VcamError(f"cannot read input {spec!r}: {exc}{hint}") from None
    if source.kind == "file" and source.read() is None:
        source.release()
        raise VcamError(f"cannot read input {spec!r}: no decodable video frames")
    if source.kind == "file":
        source.open()  # rewind after the probe read
    return source


class Capture:
    """Runs a `Source` in a thread and hands the frame loop RGB `Frame`s.

    Args:
        source: an opened (or openable) Source.
        size: (width, height) to cover-crop file/image/URL pictures to; cameras keep what they give.
        every_frame: deliver every frame (files as fast as possible) instead of only the newest.
        realtime: pace files and images at their own fps (ignored with every_frame).
        loop: restart a video file at its end instead of ending.
        retry_initial, retry_max: back-off in seconds between re-open attempts of a failing source.
        failures_before_reopen: consecutive failed reads before the source counts as lost.
    """

    def __init__(self, source: Source, size: tuple[int, int] | None = None, *, every_frame: bool = False,
                 realtime: bool = True, loop: bool = False, retry_initial: float = 0.25,
                 retry_max: float = 4.0, failures_before_reopen: int = 3):
        self.source = source
        self.every_frame = every_frame
        self.realtime = realtime and not every_frame
        self.loop = loop
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.failures_before_reopen = failures_before_reopen
        self._resize_to = size if source.kind != "camera" else None
        self.size = size if self._resize_to else tuple(source.size)
        self.fps = float(source.fps)
        self.state = "live"  # live | unavailable | ended
        self.reconnects = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._next_index = 0
        self._last_returned = -1
        self._thread = threading.Thread(target=self._run, name="vcam-capture", daemon=True)

    # -- frame loop side -------------------------------------------------------------------------
    def start(self) -> Capture:
        self._thread.start()
        return self

    def read(self, timeout: float) -> Frame | None:
        """The next frame (every_frame) or the newest frame not yet returned; None after `timeout` s."""
        if self.every_frame:
            try:
                frame = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            if frame is not None:
                # The file stands in for a camera that delivers just when the loop is ready: decoding
                # ahead must not count as latency (a camera's decoding happens before its timestamp too).
                frame.captured_at = time.perf_counter()
            return frame
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._latest is None or self._latest.index <= self._last_returned:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self.state == "ended":
                    return None
                self._cond.wait(remaining)
            self._last_returned = self._latest.index
            return self._latest

    @property
    def ended(self) -> bool:
        """True when a file has played out and every delivered frame was read."""
        return self.state == "ended" and (not self.every_frame or self._queue.empty())

    def close(self) -> None:
        """Stop the thread and release the source; idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        while not self._queue.empty():  # unblock a put() waiting for room
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.source.release()

    # -- capture thread ---------------------------------------------------------------------------
    def _deliver(self, image: np.ndarray, started: float) -> None:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # the one BGR -> RGB of the pipeline
        if self._resize_to:
            image = cover_crop(image, self._resize_to)
        elif tuple(self.size) != (image.shape[1], image.shape[0]):
            self.size = (image.shape[1], image.shape[0])
        now = time.perf_counter()
        frame = Frame(index=self._next_index, captured_at=now, image=image)
        frame.timings["capture"] = (now - started) * 1000.0
        self._next_index += 1
        if self.every_frame:
            while not self._stop.is_set():
                try:
                    self._queue.put(frame, timeout=0.1)
                    return
                except queue.Full:
                    continue
        else:
            with self._cond:
                self._latest = frame
                self._cond.notify_all()

    def _end(self) -> None:
        self.state = "ended"
        if self.every_frame:
            while not self._stop.is_set():
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
        with self._cond:
            self._cond.notify_all()

    def _reopen(self) -> bool:
        """Re-open a lost source with exponential back-off; False when asked to stop."""
        self.state = "unavailable"
        delay = self.retry_initial
        while not self._stop.is_set():
            self.source.release()
            try:
                self.source.open()
            except Exception as exc:  # a lost device fails in many ways; all mean "try again later"
                log.debug("re-open failed: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self.reconnects += 1
            log.info("input is back (%s)", getattr(self.source, "spec", self.source.kind))
            self.state = "live"
            return True
        return False

    def _run(self) -> None:
        """The capture thread: pump frames; on any failure, re-open with back-off (never die silently)."""
        while not self._stop.is_set():
            try:
                self._pump()
                return
            except Exception as exc:  # a lost file or device fails in many ways: all mean "retry later"
                log.warning("input %s failed (%s); retrying with back-off",
                            getattr(self.source, "spec", self.source.kind), first_line(exc))
                if not self._reopen():
                    return

    def _pump(self) -> None:
        failures = 0
        played = 0  # frames in the current pass over a file (a file that yields none must not spin)
        period = 1.0 / self.fps if self.fps > 0 else 1.0 / 30
        next_due = time.perf_counter()
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                image = self.source.read()
            except Exception as exc:  # a driver error is a failed read, not a crash of the loop
                log.debug("read failed: %s", exc)
                image = None
            if image is None:
                if self.source.kind == "file":
                    if self.loop and played > 0:
                        played = 0
                        self.source.open()  # raises when the file is gone: _run retries with back-off
                        continue
                    self._end()
                    return
                failures += 1
                if failures >= self.failures_before_reopen:
                    if self.state == "live":
                        log.warning("input %s stopped delivering; retrying with back-off",
                                    getattr(self.source, "spec", self.source.kind))
                    if not self._reopen():
                        return
                    failures = 0
                else:
                    self._stop.wait(min(0.05 * failures, 0.2))
                continue
            failures = 0
            played += 1
            self.state = "live"
            self._deliver(image, started)
            if self.realtime and self.source.kind in ("file", "image"):
                next_due = max(next_due + period, time.perf_counter() - period)
                self._stop.wait(max(0.0, next_due - time.perf_counter()))
