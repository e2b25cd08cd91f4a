"""Segmentation: the person's soft mask, from the same frame, without flicker, trailing or haloed edges.

Per frame (all heavy work at the model's small input size; only two resizes and a multiply-add at full
resolution):
1. the frame is shrunk to the model's input width (256 px) keeping its aspect, and MediaPipe's Tasks
   ImageSegmenter with a selfie-segmentation model shipped in vcam/models (general 256x256 or landscape
   256x144; or a user-supplied .tflite) gives a low-resolution soft mask of THIS frame (no one-frame-old
   masks);
2. `adaptive_ema` smooths it over time per pixel: small changes (flicker) are averaged, large ones (real
   motion) are followed at once, so the mask does not trail a moving person;
3. `fast_guided_filter` (He & Sun 2015) fits a local linear model mask ≈ a·gray + b at low resolution and
   applies the upsampled (a, b) to the full-resolution gray image, so the mask edge snaps to the real
   edge of hair and shoulders instead of a blurred, haloed upsample; with smoothing on, that gray image
   is steadied where the picture is still (`Segmenter._steady_guide`: the camera's noise, times the edge's
   steep a, was most of the edge's flicker on a still person);
4. `stretch` maps [0.4, 0.6] to [0, 1] and clips: the model's 0.5 is the edge, and the soft ramp is a few
   pixels wide, so little of the old backdrop is left in the edge (scripts/rim_eval.py measures it);
   the background is exactly the background.

Only the person's box is upsampled (steps 3-4 at full resolution): the box is found at low resolution,
the rest of the full-resolution mask is 0 (exactly what the guided filter and stretch give there), and
`Segmenter.box` says where the person is, so the later stages work in the box too.

Zoom (`zoom_region`): the model sees 256 px whatever the frame, so a person who fills less than 60 % of
it (far from the camera, a full-body photo) is segmented in a crop around them, grown by 15 % per side.
The crop is found from a whole-frame pass (specks of background away from the person left out,
`person_parts`) and kept from frame to frame while the person stays well inside it (`zoom_holds`): one
model run per frame, on that frame. When they near its side, the next frame's crop is put around them and
ahead of their motion (`follow_box`; the smoothing state is resampled into it), not found again from the
whole frame, whose 256 px miss a small person's legs or take in a speck of background. A crop that cuts
the person (`cut_sides`) is grown on that side and the same frame segmented again; where no crop small
enough holds them, the whole frame's mask fills in outside it. The whole frame is looked at again in the
frame something changes outside the crop (`ZOOM_WATCH_LEVEL`: someone coming in), and once a second; when
they leave, the same frame is segmented whole. Head-and-shoulders webcam frames (the person's crop is
70-100 % of the frame) are segmented whole, as before. scripts/mask_motion.py measures all of it.

The landscape model (model_selection=1, 256x144 input) is for wide frames: MediaPipe squashes any frame
into its input, so a 4:3, square or portrait frame (narrower than 3:2) is segmented with the general
model (256x256) instead; measured on the photos with published masks, the edge error drops by a tenth.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from engine.resampling import resize_box
from vcam import mp_tasks
from vcam.frame import Frame
from vcam.zoom import (
    ZOOM_FOLLOW,
    ZOOM_GROW_TRIES,
    ZOOM_MAX_AREA,
    ZOOM_RECHECK_FRAMES,
    ZOOM_WATCH_FRACTION,
    ZOOM_WATCH_LEVEL,
    cut_sides,
    follow_box,
    tight_box,
    zoom_holds,
    zoom_region,
)

log = logging.getLogger("vcam.segment")

MODEL_WIDTH = 256  # both MediaPipe selfie models take 256 px wide input
# The selfie models ship inside vcam (from the mediapipe 0.10.21 wheel; vcam/models/NOTICE), by
# model_selection as MediaPipe's `solutions` API numbered them.
MODELS_DIR = Path(__file__).resolve().parent / "models"
SELFIE_MODELS = {0: "selfie_segmentation.tflite", 1: "selfie_segmentation_landscape.tflite"}
STRETCH = (0.4, 0.6)  # mask values mapped to exactly 0 and 1: a narrow ramp around the model's 0.5
LANDSCAPE_MIN_ASPECT = 1.5  # frames at least this wide (w/h, between 4:3 and 16:9) suit the landscape model
BOX_THRESHOLD = 0.05  # low-resolution mask values above this belong to the person's box
STILL_LEVEL = 6  # a low-resolution pixel (3x3 mean) that changed more than this (of 255) moved ...
STILL_REACH = np.ones((5, 5), np.uint8)  # ... and so did the mask within 2 low-resolution pixels of it
STILL_FRACTION = 0.002  # the mask's jitter is damped only while at most this fraction of the picture moved
ALPHA_STILL = 0.1  # ... with this weight for the new mask (chosen on held-in photos, scripts/mask_motion.py)


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
                 threshold: float = 0.35, still: np.ndarray | bool | None = None,
                 alpha_still: float = ALPHA_STILL) -> np.ndarray:
    """Per-pixel exponential moving average whose rate rises with the change.

    alpha = alpha_min + (1 - alpha_min) * min(|mask - previous| / threshold, 1); result = previous +
    alpha * (mask - previous). A change of `threshold` or more is taken in full (no trailing behind
    motion); small frame-to-frame jitter is averaged with weight alpha_min. Where `still` (bool plane,
    the picture did not change there; True: nowhere) the change is the model's own jitter whatever its
    size: alpha_still.

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
    if still is True:  # the whole picture still: one weight (and no per-pixel rate to compute)
        return (previous + alpha_still * diff).astype(np.float32, copy=False)
    alpha = np.minimum(np.abs(diff) * ((1.0 - alpha_min) / threshold) + alpha_min, 1.0)
    if still is not None:
        alpha[still] = alpha_still
    return (previous + alpha * diff).astype(np.float32, copy=False)


def stretch(mask: np.ndarray, low: float = STRETCH[0], high: float = STRETCH[1]) -> np.ndarray:
    """Map [low, high] to [0, 1] and clip: near-certain pixels become exactly 0 or 1."""
    return _clip01((mask.astype(np.float32) - low) * (1.0 / (high - low)))


def _clip01(mask: np.ndarray) -> np.ndarray:
    # Two cv2 thresholds are cheaper than np.clip on a 720p float32 plane.
    mask = cv2.threshold(mask, 1.0, 1.0, cv2.THRESH_TRUNC)[1]
    return cv2.threshold(mask, 0.0, 0.0, cv2.THRESH_TOZERO)[1]


def person_box(mask_low: np.ndarray, edge_low: np.ndarray, size: tuple[int, int],
               margin: int = 6) -> tuple[int, int, int, int] | None:
    """The full-resolution (y0, y1, x0, x1) around the person, from low-resolution planes; None: nobody.

    A low-resolution pixel belongs to the person where the network's mask passes BOX_THRESHOLD or the
    guided, stretched mask is above 0 there; `margin` low-resolution pixels more on each side cover the
    guided filter's two box filters (radius 2 each) and the bilinear upsample, so outside the box the full
    mask is 0 as it would be if computed there.
    """
    rows = np.flatnonzero(((mask_low > BOX_THRESHOLD) | (edge_low > 0)).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(((mask_low[rows[0]:rows[-1] + 1] > BOX_THRESHOLD)
                           | (edge_low[rows[0]:rows[-1] + 1] > 0)).any(axis=0))
    low_h, low_w = mask_low.shape
    height, width = size
    sy, sx = height / low_h, width / low_w
    y0 = max(int((rows[0] - margin) * sy), 0)
    y1 = min(int(np.ceil((rows[-1] + 1 + margin) * sy)), height)
    x0 = max(int((cols[0] - margin) * sx), 0)
    x1 = min(int(np.ceil((cols[-1] + 1 + margin) * sx)), width)
    return y0, y1, x0, x1


GUIDE_STILL_LEVEL = 12  # a full-resolution guide pixel that changed at most this much (of 255) is still ...
GUIDE_WEIGHT = 0.33  # ... and is averaged with its last value with this weight for the new one (camera noise)


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


class Segmenter:
    """The segmentation stage: `frame.image` -> `frame.mask` (float32 H×W in [0, 1]).

    Args:
        model_selection: 0 general (256x256) or 1 landscape (256x144, faster, for 16:9 webcams).
        model_path: a MediaPipe Tasks segmenter .tflite to use instead of the shipped model.
        smoothing: temporal smoothing on (adaptive EMA) or off.
        edge: (low, high) mask values stretched to exactly 0 and 1 (STRETCH).
        match_aspect: with the landscape model, segment frames narrower than 3:2 with the general one.
        zoom: segment a person who fills a small part of the frame in a crop around them (`zoom_region`).

    Raises:
        ValueError: bad model_selection, unusable model file or edge out of range.
        FileNotFoundError: model_path does not exist.
    """

    def __init__(self, model_selection: int = 1, model_path: str | None = None, smoothing: bool = True,
                 edge: tuple[float, float] = STRETCH, match_aspect: bool = True, zoom: bool = True):
        if not 0.0 <= edge[0] < edge[1] <= 1.0:
            raise ValueError(f"edge must be (low, high) with 0 <= low < high <= 1, got {edge!r}")
        self._net = open_selfie_model(model_selection, model_path)
        self.name = self._net.name
        self.smoothing = smoothing
        self.edge = tuple(edge)
        # The general model for frames narrower than 3:2 when the landscape model was chosen (opened on need).
        self._portrait_net = None
        self._match_aspect = match_aspect and model_path is None and model_selection == 1
        self._previous: np.ndarray | None = None
        self._previous_region: tuple[int, int, int, int] | None = None  # where _previous was (None: whole)
        self._previous_gray: np.ndarray | None = None  # its small picture, gray, 3x3 mean
        self._watch: np.ndarray | None = None  # the last frame, small and gray: what changed outside the crop
        self._tight: tuple[int, int, int, int] | None = None  # the person's tight box in the last frame
        # (box in the frame, its uint8 gray guide, steadied by `_steady_guide`): the last frame's; this one's
        self._guide_last: tuple | None = None
        self._guide: tuple | None = None
        self.zoom = zoom
        # (y0, y1, x0, x1): the crop the last frame was segmented in (None: the whole frame); see zoom_region
        self.region: tuple[int, int, int, int] | None = None
        self._frames_zoomed = 0
        self._frame_size: tuple[int, int] | None = None
        self.box: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1) of the last mask's person

    def reset(self) -> None:
        """Forget the temporal state (after a cut or a camera reconnect)."""
        self._previous = self._watch = self._tight = self._guide = self._guide_last = None
        self.region = None

    def _network_for(self, height: int, width: int):
        if not self._match_aspect or width >= LANDSCAPE_MIN_ASPECT * height:
            return self._net
        if self._portrait_net is None:
            self._portrait_net = open_selfie_model(0)
        return self._portrait_net

    def low_res_mask(self, image: np.ndarray, smooth: bool = True,
                     region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(small image, its mask) at the model's input width, both of this frame; the mask smoothed over
        time where `smoothing` and `smooth` are on (`smooth=False` leaves the smoothing state alone).
        `image` is the frame's `region` (None: all of it): the last mask is carried into a moved crop."""
        height, width = image.shape[:2]
        low_w = min(MODEL_WIDTH, width)
        low_h = max(8, round(height * low_w / width))
        # Bilinear, like MediaPipe's own resize: INTER_AREA costs 15x more at 720p for no visible gain.
        small = cv2.resize(image, (low_w, low_h), interpolation=cv2.INTER_LINEAR)
        mask_low = self._network_for(height, width)(small)
        if mask_low.shape != (low_h, low_w):
            mask_low = cv2.resize(mask_low, (low_w, low_h), interpolation=cv2.INTER_LINEAR)
        if self.smoothing and smooth:
            previous = self._previous_in(region, mask_low)
            # where the picture did not move (a 3x3 mean against camera noise), the mask should not either
            gray = cv2.blur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (3, 3))
            still = None
            if previous is not None and region == self._previous_region and \
                    self._previous_gray is not None and self._previous_gray.shape == gray.shape:
                moved = cv2.compare(cv2.absdiff(gray, self._previous_gray), STILL_LEVEL, cv2.CMP_GT)
                # Only a picture that is still as a whole: a moving edge is seen where it has contrast,
                # and the mask follows it further than a few pixels from there.
                count = cv2.countNonZero(moved)
                if count == 0:
                    still = True
                elif count <= STILL_FRACTION * moved.size:
                    still = cv2.dilate(moved, STILL_REACH) == 0
            mask_low = self._previous = adaptive_ema(previous, mask_low, still=still)
            self._previous_region, self._previous_gray = region, gray
        return small, mask_low

    def _previous_in(self, region: tuple[int, int, int, int] | None, mask_low: np.ndarray) -> np.ndarray | None:
        """The last low-resolution mask on this one's grid: the same crop as it was; a crop that moved (at
        about the same scale) resampled, with this frame's mask where the last crop did not reach; None
        between the whole frame and a crop (their scales differ: a coarse mask would pull a fine one)."""
        previous, old = self._previous, self._previous_region
        if previous is None or (old is None) != (region is None):
            return None
        if old == region or region is None:
            return previous if previous.shape == mask_low.shape else None
        height, width = mask_low.shape
        sy, sx = (region[1] - region[0]) / height, (region[3] - region[2]) / width
        old_sy, old_sx = (old[1] - old[0]) / previous.shape[0], (old[3] - old[2]) / previous.shape[1]
        if not (0.8 < sx / old_sx < 1.25 and 0.8 < sy / old_sy < 1.25):
            return None
        # new grid (u, v) -> frame -> old grid, pixel centres: u_old = (x0 + (u + .5) sx - old_x0) / old_sx - .5
        warp = np.float32([[sx / old_sx, 0, (region[2] - old[2] + 0.5 * sx) / old_sx - 0.5],
                           [0, sy / old_sy, (region[0] - old[0] + 0.5 * sy) / old_sy - 0.5]])
        flags = cv2.WARP_INVERSE_MAP
        carried = cv2.warpAffine(previous, warp, (width, height), flags=flags | cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        known = cv2.warpAffine(np.ones_like(previous), warp, (width, height), flags=flags | cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return np.where(known > 0, carried, mask_low)

    def mask_for(self, image: np.ndarray) -> np.ndarray:
        """Soft person mask of an RGB uint8 image, float32 H×W in [0, 1]; sets `box` (None: no person).

        With `zoom`, a person who fills less than ZOOM_MAX_AREA of the frame is segmented in a crop around
        them (the model sees them ZOOM_MAX_AREA^-1/2 times larger or more). The crop is kept while they stay
        well inside it and moves with them when they near its side (ahead of their motion); a crop that
        cuts them is grown and the same frame segmented again; something moving outside the crop (someone
        coming in) makes the same frame be looked at whole. Each frame's mask comes from that frame.
        """
        height, width = image.shape[:2]
        if (height, width) != self._frame_size:  # a new camera mode or a new still: nothing carries over
            self._frame_size, self.region, self._frames_zoomed = (height, width), None, 0
            self._previous = self._watch = self._tight = self._guide = None
        self._guide_last, self._guide = self._guide, None
        if self.region is not None:
            self._frames_zoomed += 1
            # Once a second, or when something moved outside the crop, the whole frame: someone may have come in.
            look = self._outside_changed(image) or self._frames_zoomed % ZOOM_RECHECK_FRAMES == 0
            if not look or self._whole_frame_fits(image):
                found = self._mask_zoomed(image, self.region)
                if found is not None:
                    return found
            # A new crop (or none) from the whole frame.
            self.region, self._frames_zoomed, self._tight = None, 0, None
        mask, box, tight = self._mask_in(image, None)
        if self.zoom and tight is not None:
            region = zoom_region(tight, (height, width))
            if region is not None:
                found = self._mask_zoomed(image, region, (mask, box))
                if found is not None:
                    self._outside_changed(image)  # the watch starts from this frame
                    return found
        self.region, self._tight, self._watch = None, tight, None
        self.box = box
        return mask

    def _mask_zoomed(self, image: np.ndarray, region: tuple[int, int, int, int],
                     whole: tuple[np.ndarray, tuple] | None = None) -> np.ndarray | None:
        """The mask from a crop that holds the whole person (grown and redone where it cut them, at most
        ZOOM_GROW_TRIES runs); sets `region` to the next frame's crop and `box`. None: nobody in the crop,
        or a crop that would hold them is too large to gain (then the whole frame is segmented). `whole`
        (this frame's whole-frame mask and box): where the crop cannot grow, it fills in outside the crop.
        """
        size = self._frame_size
        for _ in range(ZOOM_GROW_TRIES):
            mask, box, tight = self._mask_in(image, region)
            ran = region
            if tight is None:
                return None
            cut = cut_sides(tight, region, size)
            previous = self._tight if self.region is not None else None
            if not any(cut):
                self.box, self._tight = box, tight
                # The next frame's crop: this one while they stay well inside it and fill it, else around
                # them and their motion (None: too large to gain; the next frame is segmented whole).
                if not zoom_holds(tight, region, size, guard=ZOOM_FOLLOW):
                    region = zoom_region(follow_box(tight, previous), size)
                self.region = region
                if region is None:
                    self._watch = None
                return mask
            grown = zoom_region(follow_box(tight, previous, cut), size, max_area=1.0)
            # the same frame again in a crop that keeps this one's other sides (the same zoom, or less)
            grown = (min(grown[0], region[0]), max(grown[1], region[1]),
                     min(grown[2], region[2]), max(grown[3], region[3]))
            if (grown[1] - grown[0]) * (grown[3] - grown[2]) > ZOOM_MAX_AREA * size[0] * size[1]:
                break
            region = grown
        if whole is None:
            return None
        # No crop small enough holds them: the last crop's mask inside it, the whole frame's outside.
        whole_mask, whole_box = whole
        y0, y1, x0, x1 = ran
        whole_mask[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        self.box = whole_box if box is None else (min(box[0], whole_box[0]), max(box[1], whole_box[1]),
                                                  min(box[2], whole_box[2]), max(box[3], whole_box[3]))
        self.region, self._tight, self._watch = None, None, None
        return whole_mask

    def _outside_changed(self, image: np.ndarray) -> bool:
        """Whether the frame changed outside the crop since the last frame (ZOOM_WATCH_LEVEL on at least
        ZOOM_WATCH_FRACTION of it), on a small gray copy; it remembers this frame for the next."""
        height, width = image.shape[:2]
        low_w = min(MODEL_WIDTH, width)
        low_h = max(8, round(height * low_w / width))
        gray = cv2.cvtColor(cv2.resize(image, (low_w, low_h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
        last, self._watch = self._watch, gray
        if last is None or self.region is None:
            return False
        changed = cv2.absdiff(gray, last) > ZOOM_WATCH_LEVEL
        y0, y1, x0, x1 = self.region
        sy, sx = low_h / height, low_w / width
        changed[max(int(y0 * sy) - 1, 0):int(np.ceil(y1 * sy)) + 1, max(int(x0 * sx) - 1, 0):int(np.ceil(x1 * sx)) + 1] = False
        return np.count_nonzero(changed) > ZOOM_WATCH_FRACTION * changed.size

    def _whole_frame_fits(self, image: np.ndarray) -> bool:
        """Whether every person the model finds in the whole frame is inside the current crop (one extra
        model run, the smoothing state untouched)."""
        _, mask_low = self.low_res_mask(image, smooth=False)
        return zoom_holds(tight_box(mask_low, image.shape[:2], specks=False), self.region, image.shape[:2],
                          min_fill=0.0)

    def _mask_in(self, image: np.ndarray, region: tuple[int, int, int, int] | None):
        """(mask H×W, the person's box, their tight box) from the model run on `region` of the frame (None: all
        of it); the mask is 0 outside the region, the boxes are in frame coordinates (None: nobody)."""
        height, width = image.shape[:2]
        ry0, ry1, rx0, rx1 = region if region is not None else (0, height, 0, width)
        mask = np.zeros((height, width), np.float32)
        part = image[ry0:ry1, rx0:rx1]
        size = (ry1 - ry0, rx1 - rx0)
        small, mask_low = self.low_res_mask(part, region=region)
        gray_low = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
        mean_a, mean_b = guided_coefficients(gray_low, mask_low)
        # Fold `stretch` and the 1/255 of the full-resolution guide into the low-resolution coefficients,
        # so that full resolution only sees: gray (uint8), two upsamples, one multiply-add, one clip.
        low, high = self.edge
        scale = 1.0 / (high - low)
        mean_a *= scale / 255.0
        mean_b = (mean_b - low) * scale
        box = person_box(mask_low, mean_a * (gray_low * 255.0) + mean_b, size)
        if box is None:
            return mask, None, None
        y0, y1, x0, x1 = box
        gray = self._steady_guide(cv2.cvtColor(part[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY),
                                  (ry0 + y0, ry0 + y1, rx0 + x0, rx0 + x1))
        up_a = resize_box(mean_a, size, box)
        up_b = resize_box(mean_b, size, box)
        out = cv2.add(cv2.multiply(up_a, gray, dtype=cv2.CV_32F), up_b)
        cv2.threshold(out, 1.0, 1.0, cv2.THRESH_TRUNC, dst=out)
        cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=mask[ry0 + y0:ry0 + y1, rx0 + x0:rx0 + x1])
        tight = tight_box(mask_low, size, specks=region is not None)
        if tight is not None:
            tight = (tight[0] + ry0, tight[1] + ry0, tight[2] + rx0, tight[3] + rx0)
        return mask, (y0 + ry0, y1 + ry0, x0 + rx0, x1 + rx0), tight

    def _steady_guide(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The full-resolution guide with the camera's noise averaged out where the picture is still.

        The guided filter's mask is a·gray + b with a steep `a` at the edge, so every level of sensor noise
        in the gray image moves the edge's mask from frame to frame (most of the edge flicker on a still
        person; the low-resolution mask hardly changes). A pixel that changed at most GUIDE_STILL_LEVEL
        since the last frame takes GUIDE_WEIGHT of its new value; one that changed more (motion, a cut)
        is taken as it is, so a moving edge is not held back. `gray` (uint8, the box of the frame) is
        changed in place and returned; off with `smoothing`.
        """
        if not self.smoothing:
            return gray
        if self._guide_last is not None:
            (ly0, ly1, lx0, lx1), last = self._guide_last
            y0, y1 = max(box[0], ly0), min(box[1], ly1)  # where both frames have a guide
            x0, x1 = max(box[2], lx0), min(box[3], lx1)
            if y0 < y1 and x0 < x1:
                now = gray[y0 - box[0]:y1 - box[0], x0 - box[2]:x1 - box[2]]
                before = last[y0 - ly0:y1 - ly0, x0 - lx0:x1 - lx0]
                still = cv2.compare(cv2.absdiff(now, before), GUIDE_STILL_LEVEL, cv2.CMP_LE)
                steady = cv2.addWeighted(now, GUIDE_WEIGHT, before, 1.0 - GUIDE_WEIGHT, 0.0)
                cv2.copyTo(steady, still, now)  # in place: `now` is a view of `gray`
        self._guide = (box, gray)
        return gray

    def __call__(self, frame: Frame) -> Frame:
        frame.mask = self.mask_for(frame.image)
        frame.box = self.box
        return frame

    def close(self) -> None:
        for name in ("_net", "_portrait_net"):
            net = getattr(self, name, None)
            if net is not None:
                net.close()
                setattr(self, name, None)
