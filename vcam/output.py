"""Outputs: the virtual camera (pyvirtualcam), a preview window, a video file, null.

Every sink is opened with the real frame size and rate (read back from the capture), gets RGB `Frame`s and
has an idempotent `close()`. RGB -> BGR happens once per frame here, shared by the sinks that want BGR
(preview, file); pyvirtualcam takes RGB as is.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from pathlib import Path

import cv2
import numpy as np

from vcam.config import parse_output
from vcam.errors import VcamError
from vcam.frame import Frame

log = logging.getLogger("vcam.output")

MIN_SIZE = 16  # smallest frame side the encoders and virtual cameras take (a 1x1 mp4 cannot be opened)

MODPROBE = 'sudo modprobe v4l2loopback devices=1 video_nr=10 card_label="vcam" exclusive_caps=1'


def virtual_camera_help() -> str:
    """One line saying how to create a virtual-camera device on this platform."""
    system = platform.system()
    if system == "Linux":
        return (f"create one with: {MODPROBE} (package v4l2loopback-dkms), or use --output preview / "
                f"file:out.mp4")
    if system in ("Windows", "Darwin"):
        return "install OBS Studio and start its Virtual Camera once (Tools > Start Virtual Camera)"
    return "no virtual-camera backend is known for this platform; use --output preview or file:out.mp4"


def make_placeholder(size: tuple[int, int], text: str = "camera unavailable") -> np.ndarray:
    """A dark RGB frame with a centred message, sent while the camera is away (the call must not drop)."""
    width, height = size
    image = np.full((height, width, 3), 32, np.uint8)
    scale = max(0.4, width / 1280 * 1.2)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 200, 200), thickness, cv2.LINE_AA)
    return image


def split_view(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Left half `before`, right half `after`, a divider and labels (RGB uint8 in and out)."""
    height, width = after.shape[:2]
    if before.shape != after.shape:
        before = cv2.resize(before, (width, height), interpolation=cv2.INTER_LINEAR)
    view = after.copy()
    half = width // 2
    view[:, :half] = before[:, :half]
    view[:, max(half - 1, 0):half + 1] = 255
    scale = max(0.4, width / 1280)
    for text, x in (("before", 12), ("after", half + 12)):
        cv2.putText(view, text, (x, int(34 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, round(2 * scale)), cv2.LINE_AA)
    return view


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Check, before a run starts, that `path` can be written (creating its folder), so that nothing
    produced by a long run is lost at its end.

    Args:
        path: the file to be written later.
        what: the option that named it, for the message (e.g. "--stats-json").

    Returns:
        The path.

    Raises:
        VcamError: a directory in the way, a folder that cannot be created, or one that is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise VcamError(f"{what} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        raise VcamError(f"{what} {path} is not a regular file (a pipe or device?)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A real file in the real folder: permission bits lie on read-only mounts and for root.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise VcamError(f"{what} {path}: cannot write to {path.parent or '.'} ({exc.strerror or exc})") from None
    return path


def atomic_path(path: Path) -> Path:
    """A fresh hidden temporary file beside `path`, with its suffix (OpenCV picks the container by it).

    Written there and renamed over `path` when complete, a file is never seen half written under its name.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes the file 0600; the finished file gets the usual mode
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


class NullOutput:
    """Discards frames (benchmarks)."""

    name = "null"

    def send(self, frame: Frame, image: np.ndarray, bgr) -> None:
        pass

    def close(self) -> None:
        pass


class VirtualCamOutput:
    """pyvirtualcam, sized from the real frame; paces the loop with `sleep_until_next_frame`.

    Raises:
        ValueError: an unknown --vcam-backend.
        VcamError: no virtual-camera device (the message says how to create one).
    """

    name = "virtualcam"

    def __init__(self, size: tuple[int, int], fps: float, backend: str | None = None,
                 device: str | None = None):
        import pyvirtualcam
        from pyvirtualcam.camera import BACKENDS

        if backend is not None and backend not in BACKENDS:
            known = ", ".join(sorted(BACKENDS)) or "none on this platform"
            raise ValueError(f"unknown --vcam-backend {backend!r}; available: {known}")
        width, height = size
        try:
            self._camera = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                               device=device, backend=backend)
        except RuntimeError as exc:
            reasons = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            where = f" {device}" if device else ""
            raise VcamError(f"no virtual camera device{where} ({reasons}); {virtual_camera_help()}") from None
        log.info("virtual camera: %s (%s) %dx%d @ %.0f fps", self._camera.device, self._camera.backend,
                 width, height, fps)
        self.size = size

    @property
    def device(self) -> str:
        return self._camera.device

    def send(self, frame: Frame, image: np.ndarray, bgr) -> None:
        self._camera.send(image)

    def pace(self) -> None:
        self._camera.sleep_until_next_frame()

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


class FileOutput:
    """An mp4 (or any container OpenCV writes) via cv2.VideoWriter; finalized on close.

    The video is written to a temporary file beside `path` and renamed to `path` on close (so an existing
    file is replaced only by a complete one).

    Raises:
        VcamError: the folder is not writable, the frame is too small, or OpenCV cannot write this kind of
            file.
    """

    name = "file"

    def __init__(self, path: str, size: tuple[int, int], fps: float):
        self.path = check_writable(path, "--output file:")
        width, height = size
        if width < MIN_SIZE or height < MIN_SIZE:
            raise VcamError(f"cannot record {path!r}: the frame is {width}x{height}, smaller than "
                            f"{MIN_SIZE}x{MIN_SIZE}; choose a frame size with --size")
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
                                          else "MJPG"))
        self._tmp = atomic_path(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), (width, height))
        if not self._writer.isOpened():
            self._writer.release()
            self._tmp.unlink(missing_ok=True)
            raise VcamError(f"cannot write video file {path!r}: OpenCV has no writer for "
                            f"{self.path.suffix or 'files without an extension'} (use .mp4 or .avi)")
        self.frames = 0

    def send(self, frame: Frame, image: np.ndarray, bgr) -> None:
        self._writer.write(bgr())
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the index (mp4: the moov atom) that makes the file playable
            self._writer = None
            os.replace(self._tmp, self.path)
            log.info("wrote %s (%d frames)", self.path, self.frames)


class PreviewOutput:
    """An OpenCV window with an optional before/after split view; reports keys and window close.

    Raises:
        VcamError: no display to open a window on.
    """

    name = "preview"
    WINDOW = "vcam preview (b: background, h: harmonize, s: smoothing, +/-: strength, v: split, q: quit)"

    def __init__(self):
        if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise VcamError("--output preview needs a display (DISPLAY is not set); use file:out.mp4 or null")
        cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
        self.split = False
        self.closed_by_user = False
        self._shown = False

    def send(self, frame: Frame, image: np.ndarray, bgr) -> None:
        if self.split and frame.composite is not None:
            view = cv2.cvtColor(split_view(frame.composite, image), cv2.COLOR_RGB2BGR)
        else:
            view = bgr()
        cv2.imshow(self.WINDOW, view)
        self._shown = True

    def poll_key(self) -> int | None:
        """The key pressed since the last call (None if none); notices the window being closed."""
        key = cv2.waitKey(1)
        if self._shown and cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            self.closed_by_user = True
        return None if key < 0 else key & 0xFF

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.WINDOW)
            cv2.waitKey(1)
        except cv2.error:
            pass


class Outputs:
    """All requested sinks together: one RGB->BGR per frame, pacing, keys, close.

    Args:
        specs: --output values (virtualcam, preview, null, file:PATH).
        size: (width, height) of the frames to be sent.
        fps: the frame rate to announce (virtual camera, file).
        vcam_backend, vcam_device: passed to pyvirtualcam.

    Raises:
        ValueError: an unknown output kind; see the sinks for device and file errors.
    """

    def __init__(self, specs: list[str], size: tuple[int, int], fps: float, vcam_backend: str | None = None,
                 vcam_device: str | None = None):
        self.size = tuple(size)
        self.sinks = []
        self.virtualcam: VirtualCamOutput | None = None
        self.preview: PreviewOutput | None = None
        self._blank: np.ndarray | None = None
        kinds = [parse_output(spec) for spec in specs]  # validate all before opening any
        if min(self.size) < MIN_SIZE:
            raise VcamError(f"the frame is {self.size[0]}x{self.size[1]}, smaller than {MIN_SIZE}x{MIN_SIZE}: "
                            f"too small to send or record; choose a frame size with --size")
        try:
            for kind, arg in kinds:
                if kind == "virtualcam":
                    if self.virtualcam is None:
                        self.virtualcam = VirtualCamOutput(self.size, fps, vcam_backend, vcam_device)
                        self.sinks.append(self.virtualcam)
                elif kind == "preview":
                    if self.preview is None:
                        self.preview = PreviewOutput()
                        self.sinks.append(self.preview)
                elif kind == "file":
                    self.sinks.append(FileOutput(arg, self.size, fps))
                else:
                    self.sinks.append(NullOutput())
        except Exception:
            self.close()
            raise

    def send(self, frame: Frame) -> None:
        """Send `frame.output` (resized to the opened size if the camera changed size) to every sink.

        A frame without an output (a stage failed before setting one) is sent as a neutral placeholder,
        never as the camera picture: with a virtual background chosen, the room must not reach the call.
        """
        image = frame.output
        if image is None:
            if self._blank is None:
                self._blank = make_placeholder(self.size, "")
            image = self._blank
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        image = np.ascontiguousarray(image)
        cache = []

        def bgr() -> np.ndarray:  # the one RGB -> BGR of the pipeline, only if a sink needs it
            if not cache:
                cache.append(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            return cache[0]

        for sink in self.sinks:
            sink.send(frame, image, bgr)

    def pace(self) -> None:
        """Sleep until the next frame is due when a virtual camera sets the rate."""
        if self.virtualcam is not None:
            self.virtualcam.pace()

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # finish closing the others (files must be finalized)
                log.warning("closing %s failed: %s", sink.name, exc)
        self.sinks = []
