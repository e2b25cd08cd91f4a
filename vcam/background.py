"""Virtual backgrounds: image, looped video, blur of the real background, flat colour; cycled live.

Every background renders an RGB uint8 picture at frame size (`render(frame) -> H×W×3`). Images are
cover-cropped to the frame's aspect once per size and cached; videos play at their own fps on the wall
clock and loop; blur blurs only the real background (normalised convolution, so the person's colours do
not bleed into a halo around them).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2
import numpy as np

from vcam.capture import IMAGE_SUFFIXES, cover_crop
from vcam.config import DEFAULT_BLUR, background_kind, parse_blur, parse_color
from vcam.errors import VcamError, first_line
from vcam.frame import Frame

log = logging.getLogger("vcam.background")

NEUTRAL = (96, 96, 96)  # shown where a background fails before it ever rendered: never the real room


def blur_background(image: np.ndarray, mask: np.ndarray, sigma: float = DEFAULT_BLUR,
                    scale: int = 8) -> np.ndarray:
    """Blur the real background without the person: blur(image·(1-m)) / blur(1-m).

    Normalised convolution: the person's pixels carry zero weight, so they neither bleed into the blurred
    background (the "halo" of naive blur-then-composite) nor leave a dark rim. Work is done at 1/`scale`
    resolution, where a large blur is cheap and looks the same.

    Args:
        image: RGB uint8 H×W×3.
        mask: float32 H×W person mask in [0, 1].
        sigma: blur strength in full-resolution pixels.
        scale: largest downscale factor for the work (less for small sigmas).

    Returns:
        RGB uint8 H×W×3. Where the whole neighbourhood is person, the plain blur is used.

    Raises:
        ValueError: image and mask sizes differ, or sigma <= 0.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} sizes differ")
    if not math.isfinite(sigma) or sigma <= 0:  # NaN passes `<= 0` and would blur to garbage
        raise ValueError(f"blur strength must be a finite number > 0, got {sigma}")
    height, width = image.shape[:2]
    # Work where the blur is still >= ~1.5 px: the result is smooth, so a coarse grid loses nothing.
    scale = max(1, min(scale, int(sigma / 1.5)))
    small_size = (max(1, width // scale), max(1, height // scale))
    # Bilinear decimation aliases, but the big blur right after removes it; INTER_AREA costs 10x more.
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    weight = cv2.subtract(1.0, cv2.resize(mask, small_size, interpolation=cv2.INTER_LINEAR))
    sigma_small = max(sigma / scale, 0.5)
    numerator = cv2.GaussianBlur(small * weight[..., None], (0, 0), sigma_small)
    denominator = cv2.GaussianBlur(weight, (0, 0), sigma_small)[..., None]
    plain = cv2.GaussianBlur(small, (0, 0), sigma_small)
    # Weight ~0: the window is all person; there is no background to show, fade to the plain blur.
    blend = np.minimum(denominator * 20.0, 1.0)
    blurred = numerator / np.maximum(denominator, 1e-3) * blend + plain * (1.0 - blend)
    blurred = np.clip(blurred, 0.0, 255.0).astype(np.uint8)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)


class ColorBackground:
    """A flat colour."""

    def __init__(self, rgb: tuple[int, int, int]):
        self.rgb = rgb
        self.name = "color:#{:02x}{:02x}{:02x}".format(*rgb)
        self._cache: np.ndarray | None = None

    def render(self, frame: Frame) -> np.ndarray:
        height, width = frame.image.shape[:2]
        if self._cache is None or self._cache.shape[:2] != (height, width):
            self._cache = np.empty((height, width, 3), np.uint8)
            self._cache[:] = self.rgb
        return self._cache

    def close(self) -> None:
        self._cache = None


class ImageBackground:
    """A still picture, cover-cropped to the frame's aspect (cached per frame size)."""

    def __init__(self, path: str):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise VcamError(f"cannot read background image {path!r}")
        self.name = Path(path).name
        self._image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        self._cache: np.ndarray | None = None

    def render(self, frame: Frame) -> np.ndarray:
        height, width = frame.image.shape[:2]
        if self._cache is None or self._cache.shape[:2] != (height, width):
            self._cache = np.ascontiguousarray(cover_crop(self._image, (width, height)))
        return self._cache

    def close(self) -> None:
        self._cache = None


class VideoBackground:
    """A video file looped at its own frame rate (by the wall clock, not by the camera's frames)."""

    def __init__(self, path: str):
        self.path = path
        self.name = Path(path).name
        self._cap = cv2.VideoCapture(path)
        ok, image = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok:
            self._cap.release()
            raise VcamError(f"cannot read background video {path!r}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 1 <= fps <= 240 else 25.0
        self._raw = image
        self._shown = 0  # index of the decoded picture in _raw
        self._start: float | None = None
        self._cache: np.ndarray | None = None

    def _advance(self, wanted: int) -> None:
        while self._shown < wanted:
            ok, image = self._cap.read()
            if not ok:  # end of the file: loop from the start
                self._cap.release()
                if not Path(self.path).is_file():  # gone, or now a FIFO whose open() would block the loop
                    raise RuntimeError(f"background video {self.path!r} is gone or not a regular file")
                self._cap = cv2.VideoCapture(self.path)
                ok, image = self._cap.read()
                if not ok:
                    raise RuntimeError(f"background video {self.path!r} stopped decoding")
                self._start = time.perf_counter()
                wanted, self._shown = 0, 0
            else:
                self._shown += 1
            self._raw = image
            self._cache = None

    def render(self, frame: Frame) -> np.ndarray:
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        wanted = int((now - self._start) * self.fps)
        if wanted - self._shown > 2 * self.fps:  # fell far behind (paused): jump rather than decode all
            self._start, wanted, self._shown = now, self._shown, self._shown
        self._advance(wanted)
        height, width = frame.image.shape[:2]
        if self._cache is None or self._cache.shape[:2] != (height, width):
            rgb = cv2.cvtColor(self._raw, cv2.COLOR_BGR2RGB)
            self._cache = np.ascontiguousarray(cover_crop(rgb, (width, height)))
        return self._cache

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class BlurBackground:
    """The real background, blurred (needs frame.mask)."""

    def __init__(self, sigma: float = DEFAULT_BLUR):
        self.sigma = parse_blur(str(sigma))  # finite and in range: one check for flags, files and callers
        self.name = f"blur:{sigma:g}"

    def render(self, frame: Frame) -> np.ndarray:
        if frame.mask is None:
            raise ValueError("blur background needs the frame's mask (run segmentation first)")
        # Strength is given for 720p; scale with the frame so the look does not change with --size.
        sigma = self.sigma * frame.image.shape[0] / 720.0
        return blur_background(frame.image, frame.mask, max(sigma, 0.5))

    def close(self) -> None:
        pass


def open_background(spec: str):
    """Build one background from its --background value.

    Values: an image path, a video path, `blur` or `blur:STRENGTH` (sigma in pixels at 720p),
    `color:#RRGGBB`.

    Raises:
        FileNotFoundError: a path that does not exist.
        VcamError: a file that cannot be read.
        ValueError: a malformed value.
    """
    spec = str(spec).strip()
    kind, arg = background_kind(spec)
    if kind == "blur":
        return BlurBackground(parse_blur(arg))
    if kind == "color":
        return ColorBackground(parse_color(arg))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"background not found: {spec} (expected an image/video path, blur[:N] "
                                f"or color:#RRGGBB)")
    if path.is_dir():
        raise VcamError(f"background is a directory, not an image or video: {spec}")
    if not path.is_file():  # a FIFO or a device: opening it would block until a writer comes
        raise VcamError(f"background is not a regular file (a pipe or device?): {spec}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageBackground(spec)
    return VideoBackground(spec)


class Backgrounds:
    """The background stage: renders the current background into `frame.background`; `next()` cycles.

    Each entry is a --background value or an object with `name`, `render(frame)` and `close()` (a
    background of one's own, as sources are injectable in capture).

    A background that fails while streaming (a video deleted or corrupted under it, a render that raises
    or returns a wrong picture) never stops the stream and never lets the real room through: the last
    good rendering of this size stands in, or a neutral grey before there was one. The failure is logged
    once per background and kind; `failures` counts the frames that needed the stand-in.

    Raises:
        ValueError: an empty list; see `open_background` for bad values.
    """

    def __init__(self, specs: list[str]):
        if not specs:
            raise ValueError("at least one --background is needed")
        self.specs = list(specs)
        self._items = []
        try:
            for spec in specs:
                self._items.append(spec if hasattr(spec, "render") else open_background(spec))
        except Exception:
            self.close()
            raise
        self.index = 0
        self.failures = 0
        self._last_good: np.ndarray | None = None
        self._logged: set[tuple[int, str]] = set()

    @property
    def current(self):
        return self._items[self.index]

    def next(self) -> str:
        """Switch to the next background; returns its name."""
        self.index = (self.index + 1) % len(self._items)
        log.info("background: %s", self.current.name)
        return self.current.name

    def _render(self, frame: Frame) -> np.ndarray:
        background = self.current.render(frame)
        if (not isinstance(background, np.ndarray) or background.dtype != np.uint8
                or background.shape != frame.image.shape):
            got = (f"{background.dtype} {background.shape}" if isinstance(background, np.ndarray)
                   else type(background).__name__)
            raise ValueError(f"rendered {got}, expected uint8 {frame.image.shape}")
        return background

    def __call__(self, frame: Frame) -> Frame:
        try:
            frame.background = self._render(frame)
        except Exception as exc:  # privacy first: a stand-in, never the camera picture, never a stop
            self.failures += 1
            key = (self.index, type(exc).__name__)
            if key not in self._logged:
                self._logged.add(key)
                log.error("background %s failed (%s); showing the last good background",
                          self.current.name, first_line(exc))
            if self._last_good is None or self._last_good.shape != frame.image.shape:
                self._last_good = np.empty(frame.image.shape, np.uint8)
                self._last_good[:] = NEUTRAL
            frame.background = self._last_good
            return frame
        self._last_good = frame.background
        return frame

    def close(self) -> None:
        for item in self._items:
            item.close()
        self._items = []
