"""Time the segment stage (vcam.segment.Segmenter) on real 720p frames: the network alone and the whole stage.

    .venv/bin/python scripts/bench_segment.py --frames 300 --json out/bench_segment.json
    PYTHONPATH=/path/to/other/checkout python scripts/bench_segment.py   # another vcam's segment.py, same frames

Runs whichever `vcam.segment` the interpreter imports, so two checkouts (or two MediaPipe versions) can be
compared on the same frames: the first frames of a real desk video from ../shared/data, scaled to
1280x720 like a webcam's. Warm-up first, then every frame is timed; reports median and p95 in ms of
`Segmenter.mask_for` (resize, network, adaptive EMA, guided filter, full-resolution mask) and of the
network call alone on the 256x144 input, and writes them as JSON. Alternate A and B runs a few times: a
shared 2-core machine drifts over minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO.parent / "shared" / "data" / "videos" / "volcomix_Doctor_-_26732.mp4"


def read_frames(path: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise FileNotFoundError(f"no frames read from {path}")
    return frames


def summary(times_ms: list[float]) -> dict:
    values = np.array(times_ms)
    return {"median_ms": round(float(np.median(values)), 3), "p95_ms": round(float(np.percentile(values, 95)), 3),
            "n": len(values)}


def bench(frames: list[np.ndarray], model_selection: int, warmup: int) -> dict:
    from vcam.segment import Segmenter

    segmenter = Segmenter(model_selection)
    small = [cv2.resize(f, (256, 144), interpolation=cv2.INTER_LINEAR) for f in frames]
    for image in frames[:warmup]:
        segmenter.mask_for(image)
    stage, net = [], []
    for image, low in zip(frames, small):
        start = time.perf_counter()
        segmenter.mask_for(image)
        stage.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        segmenter._net(low)  # the network alone (MediaPipe's resize, inference, mask upsample)
        net.append((time.perf_counter() - start) * 1e3)
    segmenter.close()
    return {"stage": summary(stage), "network": summary(net)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--model-selection", type=int, default=1, choices=(0, 1))
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (MediaPipe: its own)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not args.video.is_file():
        print(f"video not found: {args.video}", file=sys.stderr)
        return 1
    cv2.setNumThreads(args.threads)
    import vcam.segment

    try:
        from importlib.metadata import version

        mediapipe_version = version("mediapipe")
    except Exception:
        mediapipe_version = "unknown"
    frames = read_frames(args.video, args.frames, (1280, 720))
    result = bench(frames, args.model_selection, args.warmup)
    result["setup"] = {"segment_py": vcam.segment.__file__, "mediapipe": mediapipe_version,
                       "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                       "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                       "frames": len(frames), "size": "1280x720", "model_selection": args.model_selection}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
