"""The shipped MediaPipe selfie models: opening one (Tasks ImageSegmenter, VIDEO mode, confidence masks)
with the C++ core's log lines muted, and running it on a small RGB image.

Only the raw network lives here: RGB uint8 h×w×3 in, float32 h×w person confidence out, no
post-processing. `vcam.segment.Segmenter` picks the model for a frame's aspect and does the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

import numpy as np

from vcam import mp_tasks

MODEL_WIDTH = 256  # both MediaPipe selfie models take 256 px wide input
# The selfie models ship inside vcam (from the mediapipe 0.10.21 wheel; vcam/models/NOTICE), by
# model_selection as MediaPipe's `solutions` API numbered them.
MODELS_DIR = Path(__file__).resolve().parent / "models"
SELFIE_MODELS = {0: "selfie_segmentation.tflite", 1: "selfie_segmentation_landscape.tflite"}
LANDSCAPE_MIN_ASPECT = 1.5  # frames at least this wide (w/h, between 4:3 and 16:9) suit the landscape model


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


class _TasksSegmentation:
    """One MediaPipe Tasks ImageSegmenter (VIDEO mode, confidence masks) on a .tflite file."""

    def __init__(self, model_path: str | Path, name: str):
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"segmenter model not found: {model_path}")
        tasks = mp_tasks.load()
        options = tasks.ImageSegmenterOptions(base_options=tasks.BaseOptions(model_asset_path=str(path)),
                                              running_mode=tasks.RunningMode.VIDEO,
                                              output_confidence_masks=True, output_category_mask=False)
        with _native_stderr_muted():
            try:
                self._net = tasks.ImageSegmenter.create_from_options(options)
            except Exception as exc:  # MediaPipe raises RuntimeError/ValueError with long C++ messages
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"cannot load segmenter model {model_path}: {first}") from None
            self._tasks = tasks
            self._timestamp_ms = 0
            # One dummy frame starts the graph's calculators (and their log lines) inside the muted window.
            self(np.zeros((144, 256, 3), np.uint8))
        self.name = name

    def __call__(self, image: np.ndarray) -> np.ndarray:
        # VIDEO mode needs strictly increasing timestamps; the segmenter keeps no state between frames,
        # so a frame counter serves (and keeps results independent of wall-clock time).
        self._timestamp_ms += 1
        mp_image = self._tasks.Image(image_format=self._tasks.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        masks = self._net.segment_for_video(mp_image, self._timestamp_ms).confidence_masks
        # h×w×1 (MediaPipe 1.x) or h×w (0.10.x), float32 at the input image's size.
        mask = masks[0].numpy_view().reshape(image.shape[:2])
        if len(masks) == 1:  # selfie models: one channel, the person
            return mask.astype(np.float32, copy=True)  # copy: the view dies with MediaPipe's result
        # Multiclass models (selfie_multiclass): channel 0 is the background, the rest is the person.
        return (1.0 - mask).astype(np.float32)

    def close(self) -> None:
        self._net.close()


def open_selfie_model(model_selection: int = 1, model_path: str | None = None) -> _TasksSegmentation:
    """The raw network: RGB uint8 h×w×3 -> float32 h×w person confidence, no post-processing.

    Args:
        model_selection: 0 general (256x256) or 1 landscape (256x144), both shipped in vcam/models.
        model_path: a MediaPipe Tasks segmenter .tflite to use instead of the shipped model.

    Raises:
        ValueError: bad model_selection or unusable model file.
        FileNotFoundError: model_path (or a shipped model) does not exist.
    """
    if model_selection not in SELFIE_MODELS:
        raise ValueError(f"model_selection must be 0 or 1, got {model_selection!r}")
    if model_path:
        return _TasksSegmentation(model_path, f"mediapipe-tasks:{Path(model_path).name}")
    return _TasksSegmentation(MODELS_DIR / SELFIE_MODELS[model_selection],
                              f"mediapipe-selfie-{'landscape' if model_selection == 1 else 'general'}")
