"""Segmentation: the person's soft mask, from the same frame, without flicker, trailing or haloed edges.

Per frame (all heavy work at the model's small input size; only two resizes and a multiply-add at full
resolution):
1. the frame is shrunk to the model's input width (256 px) keeping its aspect, and MediaPipe selfie
   segmentation (general 256x256 or landscape 256x144 model; or a MediaPipe Tasks segmenter from a
   user-supplied .tflite) gives a low-resolution soft mask of THIS frame (no one-frame-old masks);
2. `adaptive_ema` smooths it over time per pixel: small changes (flicker) are averaged, large ones (real
   motion) are followed at once, so the mask does not trail a moving person;
3. `fast_guided_filter` (He & Sun 2015) fits a local linear model mask ≈ a·gray + b at low resolution and
   applies the upsampled (a, b) to the full-resolution gray image, so the mask edge snaps to the real
   edge of hair and shoulders instead of a blurred, haloed upsample;
4. `stretch` maps near-0/near-1 values to exactly 0/1: the background is exactly the background.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from vcam.frame import Frame

log = logging.getLogger("vcam.segment")

MODEL_WIDTH = 256  # both MediaPipe selfie models take 256 px wide input
STRETCH = (0.15, 0.9)  # mask values mapped to exactly 0 and 1 (tight: no rim of the old background)


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges reflected (float32 in, float32 out)."""
    return cv2.boxFilter(image, cv2.CV_32F, (2 * radius + 1, 2 * radius + 1), normalize=True,
                         borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide_low: np.ndarray, mask_low: np.ndarray, radius: int = 2,
                        eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's smoothed local linear model mask ≈ a·guide + b, at low resolution.

    Args:
        guide_low: float32 h×w gray image in [0, 1] at the mask's resolution.
        mask_low: float32 h×w mask in [0, 1].
        radius: box radius at low resolution.
        eps: regularisation; smaller follows image edges more closely.

    Returns:
        (mean_a, mean_b), float32 h×w each.

    Raises:
        ValueError: shapes that do not match.
    """
    if guide_low.shape != mask_low.shape or guide_low.ndim != 2:
        raise ValueError(f"guide_low and mask_low must be equal 2-D shapes, got {guide_low.shape} and "
                         f"{mask_low.shape}")
    mean_i = box_mean(guide_low, radius)
    mean_p = box_mean(mask_low, radius)
    cov_ip = box_mean(guide_low * mask_low, radius) - mean_i * mean_p
    var_i = box_mean(guide_low * guide_low, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius), box_mean(b, radius)


def fast_guided_filter(guide_low: np.ndarray, mask_low: np.ndarray, guide_full: np.ndarray,
                       radius: int = 2, eps: float = 1e-4) -> np.ndarray:
    """Edge-aware upsampling of a low-resolution mask, guided by the image (He & Sun's fast guided filter).

    Args:
        guide_low: float32 h×w gray image in [0, 1] at the mask's resolution.
        mask_low: float32 h×w mask in [0, 1].
        guide_full: float32 H×W gray image in [0, 1] at output resolution.
        radius: box radius at low resolution.
        eps: regularisation; smaller follows image edges more closely.

    Returns:
        float32 H×W mask (not clipped; callers clip).

    Raises:
        ValueError: shapes that do not match.
    """
    if guide_full.ndim != 2:
        raise ValueError(f"guide_full must be 2-D, got shape {guide_full.shape}")
    mean_a, mean_b = guided_coefficients(guide_low, mask_low, radius, eps)
    height, width = guide_full.shape
    mean_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
    mean_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide_full + mean_b


def adaptive_ema(previous: np.ndarray | None, mask: np.ndarray, alpha_min: float = 0.25,
                 threshold: float = 0.35) -> np.ndarray:
    """Per-pixel exponential moving average whose rate rises with the change.

    alpha = alpha_min + (1 - alpha_min) * min(|mask - previous| / threshold, 1); result = previous +
    alpha * (mask - previous). A change of `threshold` or more is taken in full (no trailing behind
    motion); small frame-to-frame jitter is averaged with weight alpha_min.

    Raises:
        ValueError: shapes differ or parameters out of range.
    """
    if not 0 < alpha_min <= 1 or threshold <= 0:
        raise ValueError(f"need 0 < alpha_min <= 1 and threshold > 0, got {alpha_min}, {threshold}")
    if previous is None:
        return mask.astype(np.float32, copy=True)
    if previous.shape != mask.shape:
        raise ValueError(f"previous mask {previous.shape} and mask {mask.shape} differ")
    diff = mask - previous
    alpha = np.minimum(np.abs(diff) * ((1.0 - alpha_min) / threshold) + alpha_min, 1.0)
    return (previous + alpha * diff).astype(np.float32, copy=False)


def stretch(mask: np.ndarray, low: float = STRETCH[0], high: float = STRETCH[1]) -> np.ndarray:
    """Map [low, high] to [0, 1] and clip: near-certain pixels become exactly 0 or 1."""
    return _clip01((mask.astype(np.float32) - low) * (1.0 / (high - low)))


def _clip01(mask: np.ndarray) -> np.ndarray:
    # Two cv2 thresholds are cheaper than np.clip on a 720p float32 plane.
    mask = cv2.threshold(mask, 1.0, 1.0, cv2.THRESH_TRUNC)[1]
    return cv2.threshold(mask, 0.0, 0.0, cv2.THRESH_TOZERO)[1]


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library handle (Windows): nothing buffered to worry about
        pass


@contextlib.contextmanager
def _native_stderr_muted():
    """Silence file descriptor 2 for a moment.

    MediaPipe's C++ core prints TFLite/absl chatter ("Created TensorFlow Lite XNNPACK delegate", "W0000 ...
    Feedback manager requires ...") straight to fd 2 when the graph starts and on its first frame; users
    read that as an error. Python-level errors still raise as exceptions.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (some embedded hosts): nothing to mute
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_c_stdio()  # C++ may hold the lines in stdio's buffer when fd 2 is a pipe: drop them here
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_mediapipe():
    """`import mediapipe`, without its audio tasks' `sounddevice`: importing that runs `ldconfig` and `gcc`
    (ctypes' find_library for PortAudio) at every start, and vcam never records audio. A None entry in
    sys.modules makes its import an ImportError, which MediaPipe catches."""
    sys.modules.setdefault("sounddevice", None)
    import mediapipe

    return mediapipe


class _SelfieSegmentation:
    """MediaPipe's bundled selfie segmentation (legacy `solutions` API; model ships in the wheel)."""

    def __init__(self, model_selection: int):
        with _native_stderr_muted():
            mp = _import_mediapipe()
            self._net = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
            # One dummy frame starts the graph's calculators (and their log lines) inside the muted window.
            self._net.process(np.zeros((144, 256, 3), np.uint8))
        self.name = f"mediapipe-selfie-{'landscape' if model_selection == 1 else 'general'}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        result = self._net.process(image)
        return result.segmentation_mask.astype(np.float32, copy=False)

    def close(self) -> None:
        self._net.close()


class _TasksSegmentation:
    """A MediaPipe Tasks ImageSegmenter from a user-supplied .tflite (selfie or multiclass)."""

    def __init__(self, model_path: str):
        mp = _import_mediapipe()
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"segmenter model not found: {model_path}")
        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                               running_mode=vision.RunningMode.VIDEO,
                                               output_confidence_masks=True)
        try:
            self._net = vision.ImageSegmenter.create_from_options(options)
        except Exception as exc:  # MediaPipe raises RuntimeError/ValueError with long C++ messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load segmenter model {model_path}: {first}") from None
        self._mp = mp
        self._t0 = time.perf_counter()
        self._last_ms = -1
        self.name = f"mediapipe-tasks:{path.name}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        # VIDEO mode needs strictly increasing timestamps.
        stamp = max(int((time.perf_counter() - self._t0) * 1000), self._last_ms + 1)
        self._last_ms = stamp
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        masks = self._net.segment_for_video(mp_image, stamp).confidence_masks
        if len(masks) == 1:  # selfie models: one channel, the person
            return masks[0].numpy_view().astype(np.float32)
        # Multiclass models (selfie_multiclass): channel 0 is the background, the rest is the person.
        return (1.0 - masks[0].numpy_view()).astype(np.float32)

    def close(self) -> None:
        self._net.close()


class Segmenter:
    """The segmentation stage: `frame.image` -> `frame.mask` (float32 H×W in [0, 1]).

    Args:
        model_selection: 0 general (256x256) or 1 landscape (256x144, faster, for 16:9 webcams).
        model_path: a MediaPipe Tasks segmenter .tflite to use instead of the bundled model.
        smoothing: temporal smoothing on (adaptive EMA) or off.
        refine: guided-filter edge refinement on, or plain bilinear upsampling.

    Raises:
        ValueError: bad model_selection or unusable model file.
        FileNotFoundError: model_path does not exist.
    """

    def __init__(self, model_selection: int = 1, model_path: str | None = None, smoothing: bool = True,
                 refine: bool = True):
        if model_selection not in (0, 1):
            raise ValueError(f"model_selection must be 0 or 1, got {model_selection}")
        self._net = _TasksSegmentation(model_path) if model_path else _SelfieSegmentation(model_selection)
        self.name = self._net.name
        self.smoothing = smoothing
        self.refine = refine
        self._previous: np.ndarray | None = None
        self._scratch: list[np.ndarray] | None = None
        self._gray: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the temporal state (after a cut or a camera reconnect)."""
        self._previous = None

    def mask_for(self, image: np.ndarray) -> np.ndarray:
        """Soft person mask of an RGB uint8 image, float32 H×W in [0, 1]."""
        height, width = image.shape[:2]
        low_w = min(MODEL_WIDTH, width)
        low_h = max(8, round(height * low_w / width))
        # Bilinear, like MediaPipe's own resize: INTER_AREA costs 15x more at 720p for no visible gain.
        small = cv2.resize(image, (low_w, low_h), interpolation=cv2.INTER_LINEAR)
        mask_low = self._net(small)
        if mask_low.shape != (low_h, low_w):
            mask_low = cv2.resize(mask_low, (low_w, low_h), interpolation=cv2.INTER_LINEAR)
        if self.smoothing:
            if self._previous is not None and self._previous.shape != mask_low.shape:
                self._previous = None
            mask_low = self._previous = adaptive_ema(self._previous, mask_low)
        if not self.refine:
            mask = cv2.resize(mask_low, (width, height), interpolation=cv2.INTER_LINEAR)
            return stretch(mask)
        gray_low = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
        mean_a, mean_b = guided_coefficients(gray_low, mask_low)
        # Fold `stretch` and the 1/255 of the full-resolution guide into the low-resolution coefficients,
        # so that full resolution only sees: gray (uint8), two upsamples, one multiply-add, one clip.
        low, high = STRETCH
        scale = 1.0 / (high - low)
        mean_a *= scale / 255.0
        mean_b = (mean_b - low) * scale
        # Full-resolution scratch planes are reused across frames (fresh 3.7 MB arrays per op cost page
        # faults); only the returned mask is new, because other threads keep it with its frame.
        if self._scratch is None or self._scratch[0].shape != (height, width):
            self._scratch = [np.empty((height, width), np.float32) for _ in range(3)]
            self._gray = np.empty((height, width), np.uint8)
        up_a, up_b, product = self._scratch
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY, dst=self._gray)
        cv2.resize(mean_a, (width, height), dst=up_a, interpolation=cv2.INTER_LINEAR)
        cv2.resize(mean_b, (width, height), dst=up_b, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(up_a, self._gray, dst=product, dtype=cv2.CV_32F)
        mask = cv2.add(product, up_b)
        cv2.threshold(mask, 1.0, 1.0, cv2.THRESH_TRUNC, dst=mask)
        cv2.threshold(mask, 0.0, 0.0, cv2.THRESH_TOZERO, dst=mask)
        return mask

    def __call__(self, frame: Frame) -> Frame:
        frame.mask = self.mask_for(frame.image)
        return frame

    def close(self) -> None:
        if self._net is not None:
            self._net.close()
            self._net = None
