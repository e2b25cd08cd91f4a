"""Segmentation: the person's soft mask, from the same frame, without flicker, trailing or haloed edges.

The Segmenter orchestrates, per frame (all heavy work at the model's small input size; only two resizes
and a multiply-add at full resolution):
1. the frame is shrunk to the model's input width (256 px) keeping its aspect, and MediaPipe's Tasks
   ImageSegmenter with a selfie-segmentation model shipped in vcam/models (general 256x256 or landscape
   256x144; or a user-supplied .tflite; opened by vcam/selfie_model.py) gives a low-resolution soft
   mask of THIS frame (no one-frame-old masks);
2. `adaptive_ema` (vcam/mask_smoothing.py, `MaskSmoother`) smooths it over time per pixel: small changes
   (flicker) are averaged, large ones (real motion) are followed at once, so the mask does not trail a
   moving person; while the picture is still as a whole, the model's jitter is damped;
3. `fast_guided_filter` (He & Sun 2015; vcam/mask_edge.py) fits a local linear model mask ≈ a·gray + b
   at low resolution and applies the upsampled (a, b) to the full-resolution gray image, so the mask edge
   snaps to the real edge of hair and shoulders instead of a blurred, haloed upsample; with smoothing on,
   that gray image is steadied where the picture is still (`GuideSteadier`: the camera's noise, times
   the edge's steep a, was most of the edge's flicker on a still person);
4. `stretch` maps [0.4, 0.6] to [0, 1] and clips: the model's 0.5 is the edge, and the soft ramp is a few
   pixels wide, so little of the old backdrop is left in the edge (scripts/rim_eval.py measures it);
   the background is exactly the background.

Only the person's box is upsampled (steps 3-4 at full resolution): the box is found at low resolution,
the rest of the full-resolution mask is 0 (exactly what the guided filter and stretch give there), and
`Segmenter.box` says where the person is, so the later stages work in the box too.

Zoom (`zoom_region`; the crop's geometry is in vcam/zoom.py, the model runs here): the model sees 256 px
whatever the frame, so a person who fills less than 60 % of it (far from the camera, a full-body photo)
is segmented in a crop around them, grown by 15 % per side. The crop is found from a whole-frame pass
(specks of background away from the person left out, `person_parts`) and kept from frame to frame while
the person stays well inside it (`zoom_holds`): one model run per frame, on that frame. When they near its
side, the next frame's crop is put around them and ahead of their motion (`follow_box`; the smoothing
state is resampled into it), not found again from the whole frame, whose 256 px miss a small person's
legs or take in a speck of background. A crop that cuts the person (`cut_sides`) is grown on that side and
the same frame segmented again; where no crop small enough holds them, the whole frame's mask fills in
outside it. The whole frame is looked at again in the frame something changes outside the crop
(`ZOOM_WATCH_LEVEL`: someone coming in), and once a second; when they leave, the same frame is segmented
whole. Head-and-shoulders webcam frames (the person's crop is 70-100 % of the frame) are segmented whole,
as before. scripts/mask_motion.py measures all of it.

The landscape model (model_selection=1, 256x144 input) is for wide frames: MediaPipe squashes any frame
into its input, so a 4:3, square or portrait frame (narrower than 3:2) is segmented with the general
model (256x256) instead; measured on the photos with published masks, the edge error drops by a tenth.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from vcam.frame import Frame
from vcam.mask_edge import (
    BOX_THRESHOLD,
    STRETCH,
    box_mean,
    edge_coefficients,
    fast_guided_filter,
    guided_coefficients,
    person_box,
    refine_box,
    stretch,
)
from vcam.mask_smoothing import (
    ALPHA_STILL,
    GUIDE_STILL_LEVEL,
    GUIDE_WEIGHT,
    STILL_FRACTION,
    STILL_LEVEL,
    STILL_REACH,
    GuideSteadier,
    MaskSmoother,
    adaptive_ema,
)
from vcam.selfie_model import (
    LANDSCAPE_MIN_ASPECT,
    MODEL_WIDTH,
    MODELS_DIR,
    SELFIE_MODELS,
    open_selfie_model,
)
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

# The stage, and the names other modules, scripts and tests import from here (the maths and the model
# opening live in vcam/mask_edge.py, vcam/mask_smoothing.py and vcam/selfie_model.py).
__all__ = [
    "ALPHA_STILL", "BOX_THRESHOLD", "GUIDE_STILL_LEVEL", "GUIDE_WEIGHT", "LANDSCAPE_MIN_ASPECT", "MODELS_DIR",
    "MODEL_WIDTH", "SELFIE_MODELS", "STILL_FRACTION", "STILL_LEVEL", "STILL_REACH", "STRETCH", "Segmenter",
    "adaptive_ema", "box_mean", "fast_guided_filter", "guided_coefficients", "open_selfie_model",
    "person_box", "stretch", "zoom_region",
]

log = logging.getLogger("vcam.segment")


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
        self._smoother = MaskSmoother()  # the low-resolution mask over time
        self._watch: np.ndarray | None = None  # the last frame, small and gray: what changed outside the crop
        self._tight: tuple[int, int, int, int] | None = None  # the person's tight box in the last frame
        self._guides = GuideSteadier()  # the full-resolution guide over time
        self.zoom = zoom
        # (y0, y1, x0, x1): the crop the last frame was segmented in (None: the whole frame); see zoom_region
        self.region: tuple[int, int, int, int] | None = None
        self._frames_zoomed = 0
        self._frame_size: tuple[int, int] | None = None
        self.box: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1) of the last mask's person

    def reset(self) -> None:
        """Forget the temporal state (after a cut or a camera reconnect)."""
        self._watch = self._tight = None
        self._smoother.reset()
        self._guides.reset()
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
            mask_low = self._smoother.smooth(small, mask_low, region)
        return small, mask_low

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
            self._watch = self._tight = None
            self._smoother.reset()
            self._guides.reset()
        self._guides.next_frame()
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
        # `stretch` and the 1/255 of the full-resolution guide folded into the low-resolution coefficients,
        # so that full resolution only sees: gray (uint8), two upsamples, one multiply-add, one clip.
        mean_a, mean_b = edge_coefficients(gray_low, mask_low, self.edge)
        box = person_box(mask_low, mean_a * (gray_low * 255.0) + mean_b, size)
        if box is None:
            return mask, None, None
        y0, y1, x0, x1 = box
        gray = cv2.cvtColor(part[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        if self.smoothing:  # the camera's noise averaged out where the picture is still
            gray = self._guides.steady(gray, (ry0 + y0, ry0 + y1, rx0 + x0, rx0 + x1))
        refine_box(mean_a, mean_b, gray, size, box, mask[ry0 + y0:ry0 + y1, rx0 + x0:rx0 + x1])
        tight = tight_box(mask_low, size, specks=region is not None)
        if tight is not None:
            tight = (tight[0] + ry0, tight[1] + ry0, tight[2] + rx0, tight[3] + rx0)
        return mask, (y0 + ry0, y1 + ry0, x0 + rx0, x1 + rx0), tight

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
