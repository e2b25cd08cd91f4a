"""The held-out slice that looks like vcam's own input: frames of real webcam and talking-head videos.

    .venv/bin/python scripts/make_webcam_slice.py --data ../shared/data --out .pack/webcam --frames 3

Takes ``--frames`` frames, evenly spaced, of every clip in ``<data>/videos`` (talking heads and people at
a desk, filmed by webcams and phones; 480-1280 px, H.264), at their own resolution, and makes
``trainer.make_dataset`` composites of them (MediaPipe person mask, the FFHQH re-colouring, 2 per frame,
seed 1), all listed as test. No frame of these videos is in any training pack (scripts/make_pack.py reads
photos only). Names are ``webcam_<video>_f<k>``, so trainer.distribution reports them as the group
"webcam". The photos made by cameras of the same kind (the held-out hagrid and liveportrait photos) stay
in ``.pack/heldout`` under their own groups.

OUT must be git-ignored (.pack/ is): the frames are not the project's to commit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from trainer.make_dataset import make_dataset

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def video_frames(path: Path, count: int) -> list:
    """``count`` RGB frames spaced evenly over the clip (its first and last frames excluded)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for k in range(count):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int((k + 1) * total / (count + 1)))
        ok, bgr = cap.read()
        if ok:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="holds videos/")
    p.add_argument("--out", type=Path, default=Path(".pack/webcam"))
    p.add_argument("--frames", type=int, default=3, help="frames per video")
    p.add_argument("--per-image", type=int, default=2, help="composites per frame")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    videos = sorted(f for f in (args.data / "videos").glob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        print(f"no videos in {args.data / 'videos'}", file=sys.stderr)
        return 1
    src = args.out.parent / f"{args.out.name}_src"
    src.mkdir(parents=True, exist_ok=True)
    for old in src.glob("*.png"):
        old.unlink()
    for video in videos:
        stem = video.stem.replace("_", "-")
        for k, frame in enumerate(video_frames(video, args.frames)):
            cv2.imwrite(str(src / f"webcam_{stem}_f{k}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    meta = make_dataset(src, args.out, per_image=args.per_image, seed=args.seed, test_fraction=1.0)
    print(f"webcam slice: {meta['photos']} frames of {len(videos)} videos x {args.per_image} composites -> "
          f"{args.out} ({len(meta['skipped'])} skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
