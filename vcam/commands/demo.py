"""`vcam demo`: the whole pipeline on a built-in clip of a real person; no camera, driver or download.

    vcam demo                      # writes out/demo/demo.mp4 and out/demo/before_after.png
    vcam demo --out-dir /tmp/d --frames 50

Input: NASA's public-domain portrait of the astronaut Eileen Collins (vcam/assets/demo/astronaut.jpg,
shipped in the package, no network; the copy scikit-image bundles as `skimage.data.astronaut()`), animated
into a short clip with a slow pan and zoom so that it is video. Background: SpaceX's public-domain photo
of a launch pad at dusk (vcam/assets/demo/rocket.jpg, scikit-image's `rocket()`: dark and blue, far from
the studio light on the astronaut, so harmonization has something to do). Provenance: vcam/assets/NOTICE. The clip runs through the same
`Pipeline` as `vcam run` (MediaPipe segmentation, composite, the engine's Harmonizer on every frame),
into an mp4 and a before/after picture.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from vcam.errors import VcamError

HELP = "run the pipeline on a built-in clip of a real person; writes out/demo/demo.mp4 + before_after.png"
SIZE = (640, 360)
FPS = 25.0

log = logging.getLogger("vcam.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="out/demo", help="where to write the results (default out/demo)")
    parser.add_argument("--frames", type=int, default=75, help="clip length in frames at 25 fps (default 75)")
    parser.add_argument("--no-harmonize", action="store_true", help="composite only (for comparison)")


DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo"


def load_bundled(name: str) -> np.ndarray:
    """One of the demo's photos ("astronaut" or "rocket") as RGB uint8.

    Raises:
        VcamError: the file is missing or does not decode (a broken install).
    """
    path = DEMO_DIR / f"{name}.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise VcamError(f"the demo's photo {path} is missing or unreadable: reinstall vcam")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def animate(photo: np.ndarray, frames: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """A slow pan-and-zoom clip (RGB uint8 frames of `size`) over a still photo."""
    height, width = photo.shape[:2]
    out_w, out_h = size
    clip = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        ease = 0.5 - 0.5 * np.cos(np.pi * t)  # smooth start and stop
        crop_w = width / (1.0 + 0.12 * ease)  # zoom in by 12 %
        crop_h = crop_w * out_h / out_w
        cx = width * (0.45 + 0.06 * ease)  # drift right
        cy = crop_h / 2 + 4 + 10 * ease  # keep the head in view, drift down a little
        x0 = float(np.clip(cx - crop_w / 2, 0, width - crop_w))
        y0 = float(np.clip(cy - crop_h / 2, 0, height - crop_h))
        # Sub-pixel crop + scale in one affine warp, so the motion is smooth (no 1-px jumps).
        scale = out_w / crop_w
        matrix = np.float32([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        clip.append(cv2.warpAffine(photo, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT))
    return clip


def _label(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.rectangle(image, (0, 0), (image.shape[1], 30), (0, 0, 0), -1)
    cv2.putText(image, text, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def run(args: argparse.Namespace) -> int:
    from vcam.capture import ArraySource
    from vcam.config import RunConfig
    from vcam.pipeline import Pipeline

    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2, got {args.frames}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, picture_path = out_dir / "demo.mp4", out_dir / "before_after.png"
    background_path = out_dir / "background.png"
    cv2.imwrite(str(background_path), cv2.cvtColor(load_bundled("rocket"), cv2.COLOR_RGB2BGR))
    clip = animate(load_bundled("astronaut"), args.frames)

    config = RunConfig(input="astronaut (vcam/assets/demo)", background=[str(background_path)],
                       output=[f"file:{video_path}"], harmonize=not args.no_harmonize,
                       harmonize_mode="inline", max_frames=len(clip), loop=False, status_interval=0)
    keep = len(clip) * 2 // 3  # the before/after frame: well into the clip, after smoothing settled
    kept = {}

    def keep_one(frame):
        if frame.index == keep:
            kept.update(image=frame.image, composite=frame.composite, output=frame.output)

    pipeline = Pipeline(config, source=ArraySource(clip, FPS), on_frame=keep_one)
    stats = pipeline.run()
    if stats["frames"] != len(clip) or not kept:
        raise RuntimeError(f"the demo produced {stats['frames']} of {len(clip)} frames")
    panel = np.hstack([_label(kept["image"], "camera"), _label(kept["composite"], "composite (before)"),
                       _label(kept["output"], "harmonized (after)")])
    cv2.imwrite(str(picture_path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    harmonizer = stats["harmonizer"]
    print(f"demo video:   {video_path} ({stats['frames']} frames, {SIZE[0]}x{SIZE[1]}, "
          f"{stats['fps']:.1f} fps processed, harmonizer: {harmonizer.get('backend', 'off')})")
    print(f"before/after: {picture_path}")
    return 0
