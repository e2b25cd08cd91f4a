"""Record the segmentation masks of MediaPipe 0.10.21's `solutions` API, the reference for the parity test.

    python3.11 -m venv /tmp/mp021 && /tmp/mp021/bin/pip install mediapipe==0.10.21 'numpy<2'
    PYTHONPATH=. /tmp/mp021/bin/python scripts/record_segment_reference.py   # -> tests/data/segment_reference.npz

vcam segmented with `mp.solutions.selfie_segmentation` until MediaPipe dropped that API; it now runs the
same models through the Tasks ImageSegmenter (vcam/segment.py). The old API cannot be installed beside a
current MediaPipe (nor on Python 3.13 or with numpy 2), so its output is recorded here once, in an
environment that still has it, and tests/test_segment.py compares the new segmenter with the recording on
every run. Only derived masks are stored (uint8, at most 256 px wide, about 0.2 MB in all), never the
photos: the test re-reads those from ../shared/data.

For every case (real photos with both models; the first frames of a real webcam-like video with the
landscape model, vcam's default) it stores
- `raw`: the network's mask of the downsized frame (the old API's `segmentation_mask`), and
- `mask`: vcam's whole production path (`Segmenter.mask_for`: resize, network, adaptive EMA across the
  video's frames, guided filter, stretch) with the old API as its network, area-downsampled to half the
  raw mask's size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "tests" / "data" / "segment_reference.npz"
# Real photos of people from several sources (webcam-like, selfies, press photos, full body), and a real
# desk video; names relative to the shared data folder.
PHOTOS = [
    "portraits/bgmatting_0001_img.jpg", "portraits/bgmatting_1000_img.jpg",
    "portraits/volcomix_doctor-5871743_640.jpg", "portraits/volcomix_woman-5883428_1280.jpg",
    "portraits/selfie_gpen_2020-12-10_175750.jpg", "portraits/hagrid_hagrid_03.jpg",
    "portraits/u2net_human_language_1280p.jpg", "portraits/u2net_portrait_man.jpg",
    "portraits/deepface_img13.jpg", "portraits/liveportrait_d30.jpg", "portraits/pulid_liuyifei.jpg",
    "portraits/hallo_reference_images_6.jpg",
]
VIDEO = "videos/volcomix_Doctor_-_26732.mp4"
VIDEO_FRAMES = 30  # consecutive frames: 1 s, enough for the temporal smoothing to matter


def read_photo(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_video(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if len(frames) < count:
        raise FileNotFoundError(f"{path}: read {len(frames)} frames, need {count}")
    return frames


def cases(shared_data: Path) -> list[tuple[str, int, list[np.ndarray]]]:
    """(case name, model_selection, the RGB frames segmented in order: one for a photo)."""
    out = [(Path(name).stem, model_selection, [read_photo(shared_data / name)])
           for name in PHOTOS for model_selection in (0, 1)]
    out.append((Path(VIDEO).stem, 1, read_video(shared_data / VIDEO, VIDEO_FRAMES)))
    return out


def model_input(image: np.ndarray) -> np.ndarray:
    """The frame as Segmenter.mask_for hands it to the network (256 px wide, aspect kept)."""
    from vcam.segment import MODEL_WIDTH

    height, width = image.shape[:2]
    low_w = min(MODEL_WIDTH, width)
    low_h = max(8, round(height * low_w / width))
    return cv2.resize(image, (low_w, low_h), interpolation=cv2.INTER_LINEAR)


def shrink(mask: np.ndarray, raw_shape: tuple[int, int]) -> np.ndarray:
    """A full-resolution mask area-averaged to half the network mask's size: what the reference stores."""
    return cv2.resize(mask, (raw_shape[1] // 2, raw_shape[0] // 2), interpolation=cv2.INTER_AREA)


def to_uint8(mask: np.ndarray) -> np.ndarray:
    return np.round(np.clip(mask, 0, 1) * 255).astype(np.uint8)


class _SolutionsSelfie:
    """The old network: MediaPipe 0.10.21's `solutions` selfie segmentation, as vcam used it."""

    def __init__(self, model_selection: int):
        import mediapipe as mp

        self._net = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._net.process(image).segmentation_mask.astype(np.float32)

    def close(self) -> None:
        self._net.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    import mediapipe as mp

    if not hasattr(mp, "solutions"):
        print(f"mediapipe {mp.__version__} has no `solutions` API; run this with mediapipe==0.10.21",
              file=sys.stderr)
        return 1
    from vcam.segment import Segmenter

    arrays = {}
    for name, model_selection, frames in cases(args.shared_data):
        raw_net = _SolutionsSelfie(model_selection)
        segmenter = Segmenter(model_selection)
        # The production path with the old network in place of the new one: the post-processing is vcam's
        # own and unchanged, so this is what vcam's segment stage produced before the switch.
        segmenter._net.close()
        segmenter._net = _SolutionsSelfie(model_selection)
        raws, masks = [], []
        for image in frames:
            raw = raw_net(model_input(image))
            raws.append(to_uint8(raw))
            masks.append(to_uint8(shrink(segmenter.mask_for(image), raw.shape)))
        raw_net.close()
        segmenter.close()
        arrays[f"{name}/{model_selection}/raw"] = np.stack(raws)
        arrays[f"{name}/{model_selection}/mask"] = np.stack(masks)
    versions = {"mediapipe": mp.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
                "python": sys.version.split()[0]}
    arrays["versions"] = np.array(json.dumps(versions))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    print(f"{args.output}: {len(arrays) - 1} arrays, {args.output.stat().st_size / 1e3:.0f} kB, {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
