"""The whole app from a video file to the null output, with and without harmonization, in one run.

Each run builds the app's own `vcam.pipeline.Pipeline` from a `RunConfig` and drives it through its public
hooks only: a `Metrics` passed in, `on_frame` (ends the warm-up, reads the clocks) and `stop()` (ends the run
after exactly `frames` timed frames, or at the time budget). Two ways to feed frames:

- "as fast as possible" (every frame of the file, decoded one ahead): the capacity of the pipeline;
  latency = from the frame being handed to the loop to its output.
- "camera rate" (the file played at its own rate, newest frame wins): what a webcam feeds the app;
  latency includes any wait for the loop, and frames the loop was too slow for are counted as dropped.

Inputs: 720p/1080p/4K clips are generated from a real video of a person (../shared/data/videos, cover-
cropped and re-encoded into `<out>/inputs`, never into the repository); where no video exists, a clearly
labelled synthetic clip. Video paths are used as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcam.config import RunConfig
from vcam.metrics import CORES, Metrics

log = logging.getLogger(__name__)

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
# The most webcam-like clips of the development data first (a person at a desk, 16:9), then any.
PREFERRED_SOURCES = ("volcomix_Doctor_-_26732.mp4", "volcomix_Thoughtful_-_35590.mp4", "liveportrait_s18.mp4")
PREFERRED_BACKGROUNDS = ("volcomix_", "nyu_densedepth_", "bgmatting_")
WARMUP_SECONDS = 5.0  # the warm-up also ends after this long: a 4K frame can take seconds on 2 cores


def shared_data_dir() -> Path:
    """../shared/data beside the checkout, or $VCAM_SHARED_DATA (may not exist)."""
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("VCAM_SHARED_DATA", repo.parent / "shared" / "data"))


def default_source_video() -> Path | None:
    """The real video of a person the inputs are generated from; None when the data is not there."""
    videos = shared_data_dir() / "videos"
    if not videos.is_dir():
        return None
    for name in PREFERRED_SOURCES:
        if (videos / name).is_file():
            return videos / name
    found = sorted(videos.glob("*.mp4"))
    return found[0] if found else None


def default_background() -> str:
    """A real indoor photo as the virtual background where the data exists, else a flat colour.

    Harmonization matters against a virtual background (against a blur of the real room there is little
    to correct), so the benchmark uses one.
    """
    backgrounds = shared_data_dir() / "backgrounds"
    if backgrounds.is_dir():
        for prefix in PREFERRED_BACKGROUNDS:
            found = sorted(backgrounds.glob(prefix + "*.jpg")) + sorted(backgrounds.glob(prefix + "*.png"))
            if found:
                return str(found[0])
    return "color:#6b8fb5"


@dataclass
class InputClip:
    """One input of the benchmark: a label ("720p"), the file, its size and fps, where it came from."""

    label: str
    path: Path
    size: tuple[int, int]
    fps: float
    frames: int
    origin: str  # "real video <name>", "synthetic (no real person)" or "user file"


def parse_input(spec: str) -> tuple[str, tuple[int, int] | None, Path | None]:
    """(label, (width, height) to generate, or None; path of a given video, or None).

    Raises:
        ValueError: neither a known resolution, nor WxH, nor an existing file.
        FileNotFoundError: a path that does not exist.
    """
    key = spec.strip().lower()
    if key in RESOLUTIONS:
        return key, RESOLUTIONS[key], None
    match = re.fullmatch(r"(\d+)x(\d+)", key)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"--inputs: size {spec!r} must be even and at least 16x16")
        return key, (width, height), None
    path = Path(spec.strip())
    if path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--inputs: video not found: {spec}")
        return path.stem, None, path
    raise ValueError(f"--inputs: expected {', '.join(RESOLUTIONS)}, WxH or a video path, got {spec!r}")


def _synthetic_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """A BGR frame of a person-like silhouette (head and shoulders) swaying over a lit wall."""
    import cv2

    width, height = size
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    wall = np.stack([150 + 60 * xs + 0 * ys, 140 + 40 * ys + 0 * xs, 120 + 30 * xs * ys], axis=-1)
    image = np.ascontiguousarray(wall.astype(np.uint8))
    sway = int(0.04 * width * np.sin(index / 10.0))
    cx, unit = width // 2 + sway, min(width, height)
    # Shoulders and torso (a dark blue shirt in BGR), then the head (skin tone).
    cv2.ellipse(image, (cx, int(height * 1.05)), (int(unit * 0.45),) * 2, 0, 180, 360, (90, 60, 40), -1)
    cv2.ellipse(image, (cx, int(height * 0.42)), (int(unit * 0.14), int(unit * 0.19)), 0, 0, 360, (120, 150, 200), -1)
    noise = np.random.default_rng(index).integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def generate_clip(size: tuple[int, int], frames: int, fps: float, out_dir: Path, label: str,
                  source: Path | None) -> InputClip:
    """Write (or reuse) a clip of `frames` frames at `size` and `fps` into `out_dir`.

    From `source` (cover-cropped, looped when shorter) when given, else synthetic.

    Raises:
        RuntimeError: the source cannot be read or the clip cannot be written.
    """
    import cv2

    from vcam.capture import cover_crop

    width, height = size
    stem = source.stem if source is not None else "synthetic"
    path = Path(out_dir) / f"{label}_{width}x{height}_{fps:g}fps_{frames}f_{stem}.mp4"
    origin = f"real video {source.name}, cover-cropped" if source is not None else \
        "synthetic (no real person: a drawn silhouette; MediaPipe may find no one)"
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        if count >= frames:
            return InputClip(label, path, size, fps, count, origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {tmp} (OpenCV has no mp4v encoder?)")
    cap = cv2.VideoCapture(str(source)) if source is not None else None
    if cap is not None and not cap.isOpened():
        writer.release()
        raise RuntimeError(f"cannot read the source video {source}")
    try:
        written = 0
        while written < frames:
            if cap is None:
                image = _synthetic_frame(written, size)
            else:
                ok, image = cap.read()
                if not ok:
                    if written == 0:
                        raise RuntimeError(f"the source video {source} has no decodable frames")
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop a short source
                    continue
                image = cover_crop(image, size)
            writer.write(image)
            written += 1
    finally:
        writer.release()
        if cap is not None:
            cap.release()
    os.replace(tmp, path)
    return InputClip(label, path, size, fps, frames, origin)


def prepare_inputs(specs: list[str], frames: int, fps: float, out_dir: Path,
                   source: Path | None = None) -> list[InputClip]:
    """The benchmark's input clips, generated where a resolution was asked for.

    Raises:
        ValueError, FileNotFoundError: a bad --inputs entry or --source.
        RuntimeError: a clip cannot be generated.
    """
    if source is not None and not Path(source).is_file():
        raise FileNotFoundError(f"--source video not found: {source}")
    source = Path(source) if source is not None else default_source_video()
    clips = []
    for spec in specs:
        label, size, path = parse_input(spec)
        if path is not None:
            import cv2

            cap = cv2.VideoCapture(str(path))
            ok = cap.isOpened()
            width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            rate, count = cap.get(cv2.CAP_PROP_FPS) or 30.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            if not ok or width <= 0:
                raise ValueError(f"--inputs: cannot read video {path}")
            clips.append(InputClip(label, path, (width, height), float(rate), count, "user file"))
        else:
            log.info("preparing %s input (%dx%d, %d frames)...", label, size[0], size[1], frames)
            clips.append(generate_clip(size, frames, fps, Path(out_dir) / "inputs", label, source))
    return clips


class _Clock:
    """The bench's `on_frame` hook: ends the warm-up, takes the clocks, stops the pipeline when done.

    At the end of the warm-up (`warmup` frames, or WARMUP_SECONDS) it restarts the metrics and reads wall
    time, process CPU time (every thread: capture, MediaPipe, the harmonizer's worker) and the harmonizer's
    estimate count; after `frames` timed frames, or `max_seconds` of them, it calls `pipeline.stop()`.
    """

    def __init__(self, metrics: Metrics, warmup: int, frames: int, max_seconds: float | None):
        self.metrics, self.warmup, self.frames, self.max_seconds = metrics, warmup, frames, max_seconds
        self.pipeline = None
        self.warmup_done, self.first_at, self.last_index = 0, None, -1
        self.mark: tuple[float, float, int] | None = None
        self.end: tuple[float, float, int] | None = None
        self.budget_hit = False

    def run(self, config: RunConfig) -> dict:
        """Build the pipeline with this object as its `on_frame` hook and run it; returns its stats."""
        from vcam.pipeline import Pipeline

        self.pipeline = Pipeline(config, metrics=self.metrics, on_frame=self)
        return self.pipeline.run()

    def _now(self) -> tuple[float, float, int]:
        stage = self.pipeline.harmonize
        return time.perf_counter(), time.process_time(), stage.status()["estimates"] if stage else 0

    def __call__(self, frame) -> None:
        self.last_index = max(self.last_index, frame.index)
        if self.mark is None:
            self.first_at = self.first_at or time.perf_counter()
            self.warmup_done += 1
            if self.warmup_done >= self.warmup or time.perf_counter() - self.first_at >= WARMUP_SECONDS:
                self.metrics.restart()  # the timed part starts with the next frame
                self.mark = self._now()
            return
        self.end = self._now()
        if self.metrics.frames >= self.frames:
            self.pipeline.stop()
        elif self.max_seconds is not None and self.end[0] - self.mark[0] >= self.max_seconds:
            self.budget_hit = True
            self.pipeline.stop()


def run_once(clip: InputClip, harmonize: bool, paced: bool, frames: int, warmup: int, base: RunConfig,
             max_seconds: float | None = None) -> dict:
    """One pipeline run; a row of the report (status "failed" with the reason when it cannot run)."""
    mode = ("harmonize" if harmonize else "no-harmonize") + (f" @{clip.fps:g}fps" if paced else "") + \
        ("" if base.overlap == "auto" else f" overlap {base.overlap}")
    row = {"input": clip.label, "resolution": f"{clip.size[0]}x{clip.size[1]}", "origin": clip.origin, "mode": mode,
           "harmonize": harmonize, "paced": paced, "source_fps": clip.fps}
    # Fast: a --max-frames makes the app read every frame of the file; paced: the file plays at its rate.
    # Both loop the file so that a slow start never runs out of input; the clock hook ends the run.
    config = base.replace(input=str(clip.path), output=["null"], harmonize=harmonize, status_interval=0.0,
                          max_frames=None if paced else 10**9, loop=True)
    with contextlib.suppress(ImportError):  # a model named without weights: the same random weights, the ONNX
        __import__("torch").manual_seed(0)  # cache reused (the lean runtime has no torch: the shipped graph)
    metrics = Metrics(status_interval=0.0)
    clock = _Clock(metrics, warmup, frames, max_seconds)
    try:
        summary = clock.run(config)
    except Exception as exc:
        return {**row, "status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip()[:200]}"}
    if clock.mark is None or clock.end is None or metrics.frames < 2:
        return {**row, "status": "failed", "reason": f"only {metrics.frames} frames after the warm-up"}
    return {**row, "status": "ok", **_figures(clock, summary, harmonize, paced)}


def _figures(clock: _Clock, summary: dict, harmonize: bool, paced: bool) -> dict:
    (wall0, cpu0, est0), (wall1, cpu1, est1) = clock.mark, clock.end
    span = max(wall1 - wall0, 1e-9)
    timed = clock.metrics.frames
    # Frames timed from the first one's output to the last one's: timed - 1 intervals.
    # CPU: the process's user+system time (every thread) between the two marks, per output frame and as
    # a share of the cores; per stage, the frame loop thread's own CPU time (p50).
    return {"frames": timed, "warmup_frames": clock.warmup_done, "budget_hit": clock.budget_hit,
            "dropped": max(0, clock.last_index + 1 - timed - clock.warmup_done) if paced else 0,
            "fps": (timed - 1) / span, "latency_p50_ms": summary["latency_ms"]["p50"],
            "latency_p95_ms": summary["latency_ms"]["p95"], "latency_ms": summary["latency_ms"],
            "stages_ms": {k: {"p50": v["p50"], "p95": v["p95"]} for k, v in summary["stages_ms"].items()},
            "stages_cpu_ms": {k: v["p50"] for k, v in summary["stages_cpu_ms"].items()},
            "refresh_hz": (est1 - est0) / span if harmonize else None,
            "cpu_util": (cpu1 - cpu0) / span, "cpu_ms_per_frame": 1000.0 * (cpu1 - cpu0) / max(timed - 1, 1),
            "cpu_machine_pct": 100.0 * (cpu1 - cpu0) / span / CORES, "harmonizer": summary["harmonizer"],
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # the machine's, as the row ends
            "overlap": summary.get("overlap")}


def run_pipeline_bench(clips: list[InputClip], modes: list[bool], camera_rate: bool, frames: int, warmup: int,
                       base: RunConfig, max_seconds: float | None = None, overlaps=("auto",)) -> list[dict]:
    """Every clip × (fast, then paced if `camera_rate`) × each mode × each overlap setting, in that order."""
    rows = []
    for clip, paced, harmonize, overlap in ((c, p, h, o) for c in clips for p in ((False, True) if camera_rate
                                            else (False,)) for h in modes for o in overlaps):
        row = run_once(clip, harmonize, paced, frames, warmup, base.replace(overlap=overlap), max_seconds)
        rows.append(row)
        log.info("%s %s: %s", clip.label, row["mode"], f"{row['fps']:.1f} FPS, latency p95 "
                 f"{row['latency_p95_ms']} ms" if row["status"] == "ok" else row["reason"])
    add_ratios(rows)
    return rows

def add_ratios(rows: list[dict]) -> None:
    """"FPS ÷ no-harm.": each harmonize row's FPS over the no-harmonize row of the same input and pacing
    (the cost of harmonization as a measured ratio), and the latency it adds (p50, ms)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in (r for r in ok if r["harmonize"]):
        base = next((b for b in ok if b["input"] == r["input"] and b["paced"] == r["paced"]
                     and not b["harmonize"] and b.get("overlap") == r.get("overlap")), None)
        if base is None or not base.get("fps") or r.get("fps") is None:
            continue
        r["fps_ratio"] = r["fps"] / base["fps"]
        if r.get("latency_p50_ms") is not None and base.get("latency_p50_ms") is not None:
            r["latency_added_p50_ms"] = r["latency_p50_ms"] - base["latency_p50_ms"]


def parse_modes(text: str) -> list[bool]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in ("harmonize", "no-harmonize")]
    if bad or not items:
        raise ValueError(f"--modes: expected harmonize and/or no-harmonize, got {(bad or [text])[0]!r}")
    return [t == "harmonize" for t in items]
