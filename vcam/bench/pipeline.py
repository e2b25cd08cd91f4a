"""The pipeline benchmark: the whole app from a video file to the null output, with and without harmonization.

Each run builds the app's own `vcam.pipeline.Pipeline` from a `RunConfig` (capture thread, MediaPipe,
background, composite, the harmonize stage with its worker, outputs) and runs its frame loop; the only
thing swapped in is the metrics collector (`_BenchMetrics`, a `vcam.metrics.Metrics`), which leaves the
first `warmup` frames out of every figure and reads the process's CPU time and the harmonizer's estimate
count where the timed part starts and ends. Two ways to feed frames:

- "as fast as possible" (`--max-frames`: every frame of the file, decoded one ahead): the capacity of the
  pipeline, FPS = what it could sustain; latency = from the frame being handed to the loop to its output.
- "camera rate" (the file played at its own rate, 30 fps for generated inputs, newest frame wins): how a
  webcam feeds the app; latency = output time − delivery time, including any wait for the loop, and
  frames the loop was too slow for are dropped (counted).

Inputs: 720p/1080p/4K clips are generated from a real video of a person (../shared/data/videos, cover-
cropped and re-encoded into `<out>/inputs`, never into the repository); where no video exists, a clearly
labelled synthetic clip. Video paths are used as they are.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcam.metrics import Metrics

log = logging.getLogger(__name__)

RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080),
               "1440p": (2560, 1440), "4k": (3840, 2160), "2160p": (3840, 2160)}
# The most webcam-like clips of the development data first (a person at a desk, 16:9), then any.
PREFERRED_SOURCES = ("volcomix_Doctor_-_26732.mp4", "volcomix_Thoughtful_-_35590.mp4", "liveportrait_s18.mp4")
PREFERRED_BACKGROUNDS = ("volcomix_", "nyu_densedepth_", "bgmatting_")
# Issue 4's CPU target at 720p (acceptance 5) and issue 6's (acceptance 2).
TARGET_FPS, TARGET_REFRESH_HZ, TARGET_LATENCY_P95_MS = 30.0, 5.0, 50.0
# Issue 6, acceptance 1 (on an H200): 1080p from a file with harmonization on every frame.
GPU_TARGET_FPS_1080P = 200.0


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
    cv2.ellipse(image, (cx, int(height * 1.05)), (int(unit * 0.45), int(unit * 0.45)), 0, 180, 360,
                (90, 60, 40), -1)  # shoulders and torso (a dark blue shirt in BGR)
    cv2.ellipse(image, (cx, int(height * 0.42)), (int(unit * 0.14), int(unit * 0.19)), 0, 0, 360,
                (120, 150, 200), -1)  # head (skin tone)
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


class _BenchMetrics(Metrics):
    """The app's Metrics, minus a warm-up, plus CPU time and harmonizer estimates, and a stop rule.

    `record` is called by the pipeline's frame loop once per output frame. The warm-up (the first
    `warmup` frames, or `warmup_seconds` after the first frame, whichever comes first: a 4K frame with
    harmonization can take seconds on 2 cores) is not counted; where it ends, the start of the timed
    part is taken: wall time, process CPU time (every thread: capture, MediaPipe, the harmonizer worker)
    and the harmonizer's estimate count. The run is ended after `target_frames` timed frames (paced runs;
    fast runs end by --max-frames) or once the timed part has lasted `max_seconds`.
    """

    def __init__(self, warmup: int, harmonize_stats, config=None, max_seconds: float | None = None,
                 target_frames: int | None = None, warmup_seconds: float = 5.0):
        super().__init__(status_interval=0.0)
        self.warmup = warmup
        self.warmup_seconds = warmup_seconds
        self.warmup_done = 0  # frames spent warming up
        self._config = config  # the pipeline's RunConfig: its max_frames ends the frame loop
        self.max_seconds = max_seconds
        self.target_frames = target_frames
        self.budget_hit = False
        self._harmonize_stats = harmonize_stats  # () -> dict or None
        self._first_at: float | None = None
        self.mark: tuple[float, float, int] | None = None  # (wall, cpu, estimates) where timing starts
        self.end: tuple[float, float, int] | None = None
        self.last_index = -1
        if warmup == 0:
            self.mark = self._now()

    def _now(self) -> tuple[float, float, int]:
        stats = self._harmonize_stats() or {}
        return time.perf_counter(), time.process_time(), int(stats.get("estimates") or 0)

    def _stop(self) -> None:
        # The frame loop runs while frames < config.max_frames (None: to the end of the file) and reads
        # it every frame: lowering it to the frames done ends the run after this frame.
        if self._config is not None:
            self._config.max_frames = self.frames

    def record(self, frame, sent_at: float | None = None) -> None:
        self.last_index = max(self.last_index, frame.index)
        if self.mark is None:
            now = time.perf_counter()
            self._first_at = self._first_at or now
            self.warmup_done += 1
            if self.warmup_done >= self.warmup or now - self._first_at >= self.warmup_seconds:
                self.mark = self._now()
            return
        super().record(frame, sent_at)
        self.end = self._now()
        if self.target_frames is not None and self.frames >= self.target_frames:
            self._stop()
        elif self.max_seconds is not None and self.end[0] - self.mark[0] >= self.max_seconds:
            self.budget_hit = True
            self._stop()


def _config_for(clip: InputClip, harmonize: bool, paced: bool, frames: int, opts: dict):
    from vcam.config import RunConfig, validate

    return validate(RunConfig(
        input=str(clip.path), output=["null"], background=[opts["background"]], harmonize=harmonize,
        model=opts.get("model"), weights=opts.get("weights"), backend=opts.get("backend", "auto"),
        device=opts.get("device", "auto"), net_size=opts.get("net_size", 256),
        refresh_hz=opts.get("refresh_hz", 10.0), threads=opts.get("threads", 1),
        harmonize_mode=opts.get("harmonize_mode", "auto"), status_interval=0.0,
        # Fast: --max-frames makes the app read every frame of the file as fast as it can; paced: no
        # --max-frames, so the file plays at its own rate, newest frame wins (the metrics end the run).
        # Both loop the file, so a slow start never runs out of input.
        max_frames=None if paced else frames, loop=True))


def run_once(clip: InputClip, harmonize: bool, paced: bool, frames: int, warmup: int, opts: dict,
             max_seconds: float | None = None) -> dict:
    """One pipeline run; a row of the report (status "failed" with the reason when it cannot run).

    `max_seconds` caps the timed part: a slow configuration (4K with harmonization on 2 cores) stops
    early with fewer frames ("budget_hit") instead of running for many minutes.
    """
    from vcam.pipeline import Pipeline

    mode = ("harmonize" if harmonize else "no-harmonize") + (f" @{clip.fps:g}fps" if paced else "")
    row = {"input": clip.label, "resolution": f"{clip.size[0]}x{clip.size[1]}", "origin": clip.origin,
           "mode": mode, "harmonize": harmonize, "paced": paced, "source_fps": clip.fps}
    import torch

    # A model named without weights gets random initial weights; seeding makes them the same in every
    # run, so the engine's ONNX cache (keyed by the weights) is reused instead of re-exported per run.
    torch.manual_seed(0)
    try:
        pipeline = Pipeline(_config_for(clip, harmonize, paced, frames, opts))
    except Exception as exc:
        return {**row, "status": "failed", "reason": _first_line(exc)}
    metrics = _BenchMetrics(warmup, lambda: pipeline.harmonize.stats() if pipeline.harmonize else None,
                            pipeline.config, max_seconds, target_frames=frames if paced else None)
    pipeline.metrics = metrics  # the one thing swapped in: the frame loop reads self.metrics at start
    harmonize_stats = pipeline.harmonize.stats if pipeline.harmonize else None
    last_stats: dict = {}
    if harmonize_stats is not None:
        original_close = pipeline.harmonize.close

        def close_keeping_stats():  # the stage's stats die with it: keep the last ones
            last_stats.update(harmonize_stats())
            original_close()
        pipeline.harmonize.close = close_keeping_stats
    started = time.perf_counter()
    try:
        summary = pipeline.run()
    except Exception as exc:
        return {**row, "status": "failed", "reason": _first_line(exc)}
    wall = time.perf_counter() - started
    if metrics.mark is None or metrics.end is None or metrics.frames < 2:
        return {**row, "status": "failed",
                "reason": f"only {metrics.frames} frames after {metrics.warmup_done} warm-up frames"}
    span = metrics.end[0] - metrics.mark[0]
    cpu = metrics.end[1] - metrics.mark[1]
    estimates = metrics.end[2] - metrics.mark[2]
    harmonizer = summary.get("harmonizer", {})
    if last_stats:
        harmonizer = {**harmonizer, **last_stats}
    processed = metrics.frames + metrics.warmup_done
    return {
        **row, "status": "ok",
        "frames": metrics.frames, "warmup_frames": metrics.warmup_done, "budget_hit": metrics.budget_hit,
        "dropped": max(0, metrics.last_index + 1 - processed) if paced else 0,
        "fps": metrics.frames / span if span > 0 else None,
        "latency_p50_ms": summary["latency_ms"]["p50"], "latency_p95_ms": summary["latency_ms"]["p95"],
        "latency_ms": summary["latency_ms"],
        "stages_ms": {name: {"p50": v["p50"], "p95": v["p95"]} for name, v in summary["stages_ms"].items()},
        "refresh_hz": (estimates / span if span > 0 else None) if harmonize else None,
        "cpu_util": cpu / span if span > 0 else None,
        "cpu_pct": 100.0 * cpu / span / (os.cpu_count() or 1) if span > 0 else None,
        "harmonizer": harmonizer, "wall_s": round(wall, 2),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def add_ratios(rows: list[dict]) -> None:
    """"FPS ÷ no-harm.": each harmonize row's FPS over the no-harmonize row of the same input and pacing
    (the cost of harmonization as a measured ratio), and the latency it adds (p50, ms)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in (r for r in ok if r["harmonize"]):
        base = next((b for b in ok if b["input"] == r["input"] and b["paced"] == r["paced"]
                     and not b["harmonize"]), None)
        if base is None or not base.get("fps") or r.get("fps") is None:
            continue
        r["fps_ratio"] = r["fps"] / base["fps"]
        if r.get("latency_p50_ms") is not None and base.get("latency_p50_ms") is not None:
            r["latency_added_p50_ms"] = r["latency_p50_ms"] - base["latency_p50_ms"]


def check_targets(rows: list[dict]) -> list[str]:
    """Lines saying whether the 720p CPU targets (issue 4 acceptance 5, issue 6 acceptance 2) and the 1080p
    GPU target (issue 6 acceptance 1, where the harmonizer runs inline on a GPU) are met."""
    lines = []
    for r in rows:
        if (r.get("status") == "ok" and r["harmonize"] and not r["paced"] and r["resolution"] == "1920x1080"
                and (r.get("harmonizer") or {}).get("mode") == "inline"):
            verdict = "MET" if r["fps"] >= GPU_TARGET_FPS_1080P else "NOT MET"
            ratio = f" ({r['fps_ratio']:.2f}× the FPS without harmonization)" if r.get("fps_ratio") else ""
            lines.append(f"1080p GPU target (harmonization on every frame, {r['harmonizer'].get('backend')}): "
                         f"{verdict}: {r['fps']:.1f} FPS >= {GPU_TARGET_FPS_1080P:g}{ratio}")
        if r.get("status") != "ok" or not r["harmonize"] or r["resolution"] != "1280x720":
            continue
        if r["paced"]:
            keeps_up = r["fps"] >= 0.97 * min(r["source_fps"], TARGET_FPS)
            checks = [
                (f"output {r['fps']:.1f} FPS keeps up with the {r['source_fps']:g} fps source", keeps_up),
                (f"refresh {r['refresh_hz']:.1f} Hz >= {TARGET_REFRESH_HZ:g}", r["refresh_hz"] >= TARGET_REFRESH_HZ),
                (f"latency p95 {r['latency_p95_ms']:.1f} ms <= {TARGET_LATENCY_P95_MS:g}",
                 r["latency_p95_ms"] <= TARGET_LATENCY_P95_MS),
            ]
        else:
            checks = [(f"capacity {r['fps']:.1f} FPS >= {TARGET_FPS:g}", r["fps"] >= TARGET_FPS),
                      (f"refresh {r['refresh_hz']:.1f} Hz >= {TARGET_REFRESH_HZ:g}",
                       r["refresh_hz"] >= TARGET_REFRESH_HZ)]
        verdict = "MET" if all(ok for _, ok in checks) else "NOT MET"
        lines.append(f"720p target ({r['mode']}): {verdict}: " +
                     "; ".join(f"{text} {'yes' if ok else 'NO'}" for text, ok in checks))
    return lines


def run_pipeline_bench(clips: list[InputClip], modes: list[bool], camera_rate: bool, frames: int, warmup: int,
                       opts: dict, progress=None, max_seconds: float | None = None) -> list[dict]:
    """Every clip × (fast, then paced if `camera_rate`) × harmonize on/off, in that order."""
    say = progress or log.info
    rows = []
    for clip in clips:
        for paced in ((False, True) if camera_rate else (False,)):
            for harmonize in modes:
                row = run_once(clip, harmonize, paced, frames, warmup, opts, max_seconds)
                rows.append(row)
                if row["status"] == "ok":
                    say(f"{clip.label} {row['mode']}: {row['fps']:.1f} FPS, latency p50 {row['latency_p50_ms']} ms "
                        f"p95 {row['latency_p95_ms']} ms, CPU {row['cpu_util']:.2f} cores"
                        + (f", refresh {row['refresh_hz']:.1f} Hz" if harmonize else ""))
                else:
                    say(f"{clip.label} {row['mode']}: {row['status']}: {row['reason']}")
    add_ratios(rows)
    return rows


def _parse_modes(text: str) -> list[bool]:
    modes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item not in ("harmonize", "no-harmonize"):
            raise ValueError(f"--modes: expected harmonize and/or no-harmonize, got {item!r}")
        modes.append(item == "harmonize")
    if not modes:
        raise ValueError("--modes: give harmonize, no-harmonize or both")
    return modes


def main(args: argparse.Namespace, command: list[str]) -> int:
    """`vcam bench pipeline`: prepare the inputs, run, write JSON/Markdown/PNG.

    Raises:
        ValueError, FileNotFoundError: bad options.
        RuntimeError: no run succeeded.
    """
    from vcam.bench import report, sysinfo

    if args.frames < 2 or args.warmup_frames < 0:
        raise ValueError(f"expected --frames >= 2 and --warmup-frames >= 0, got {args.frames}, {args.warmup_frames}")
    if args.camera_rate < 0:
        raise ValueError(f"--camera-rate must be >= 0 (0 = skip), got {args.camera_rate}")
    modes = _parse_modes(args.modes)
    specs = [s for s in args.inputs.split(",") if s.strip()]
    if not specs:
        raise ValueError("--inputs: give at least one of 720p, 1080p, 4k, WxH or a video path")
    opts = {"background": args.background or default_background(), "model": args.model,
            "weights": str(args.weights) if args.weights else None, "backend": args.backend,
            "device": args.device, "net_size": args.net_size, "refresh_hz": args.refresh_hz,
            "threads": args.threads, "harmonize_mode": args.harmonize_mode}
    rate = args.camera_rate or 30.0
    clips = prepare_inputs(specs, args.frames + args.warmup_frames, rate, args.out, args.source)
    system = sysinfo.collect()
    log.info("machine: %s", sysinfo.describe(system))
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ValueError(f"--max-seconds must be > 0, got {args.max_seconds}")
    rows = run_pipeline_bench(clips, modes, args.camera_rate > 0, args.frames, args.warmup_frames, opts,
                              max_seconds=args.max_seconds)
    settings = {"inputs": specs, "frames": args.frames, "warmup_frames": args.warmup_frames,
                "max_seconds": args.max_seconds,
                "camera_rate": args.camera_rate, "modes": args.modes, **opts}
    result = report.new_report("pipeline", command, system, settings)
    result["rows"] = rows
    result["inputs"] = [{"label": c.label, "path": str(c.path), "size": list(c.size), "fps": c.fps,
                         "frames": c.frames, "origin": c.origin} for c in clips]
    result["notes"] = [f"input {c.label}: {c.origin}" for c in clips] + [
        f"background: {opts['background']}",
        "FPS: timed frames / wall time after the warm-up; 'CPU util': process CPU time / wall time in cores "
        f"(of {os.cpu_count()}); refresh Hz: network runs per second of the harmonizer",
        "fast rows: every frame of the file as fast as possible (capacity); '@N fps' rows: the file played "
        "at N fps, newest frame wins (what a webcam sees; latency includes the wait for the loop)",
    ] + [f"{r['input']} {r['mode']}: stopped by the {args.max_seconds:g} s budget after {r['frames']} frames"
         for r in rows if r.get("budget_hit")] + check_targets(rows)
    written = report.write_all(result, args.out, "pipeline")
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    print(report.to_markdown(result))
    if not any(r["status"] == "ok" for r in rows):
        raise RuntimeError(f"no pipeline run succeeded: see {written['markdown']}")
    return 0
