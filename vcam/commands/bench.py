"""`vcam bench engine|pipeline`: time the network alone, or the whole app from a video file.

Examples:
    vcam bench engine                                     # torch, ONNX Runtime, TensorRT where each runs
    vcam bench engine --backends torch,onnxruntime --models phnet-xs --sizes 256 --runs 50
    vcam bench pipeline --inputs 720p,1080p --frames 300  # with and without harmonization, one run
    vcam bench pipeline --inputs 720p --camera-rate 30    # also paced like a webcam, for latency

Each writes `<out>/<engine|pipeline>.json`, `.md` and `.png` (default out: out/bench).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vcam.commands.run import add_engine_arguments
from vcam.errors import VcamError

HELP = "benchmark the engine (network alone) or the whole pipeline; writes JSON, Markdown and a plot"

log = logging.getLogger("vcam.bench")

DEFAULT_OUT = Path("out/bench")
# Harmonization flags of `vcam run` the pipeline bench takes; None = RunConfig's default (vcam.config).
HARMONIZE_FLAGS = ("model", "weights", "backend", "device", "net_size", "refresh_hz", "threads", "harmonize_mode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="<benchmark>")
    eng = sub.add_parser("engine", help="time the network alone per backend × precision × model × size",
                         description="Time the network alone per backend × precision × model × net size: "
                                     "p50/p95 latency, FPS, speed-up over torch fp32.")
    eng.add_argument("--backends", default="torch,onnxruntime,tensorrt",
                     help="comma list of torch, onnxruntime, tensorrt (default all; those that cannot start "
                          "here are listed as skipped with the reason)")
    eng.add_argument("--precisions", default="fp32,fp16", help="comma list of fp32, fp16 (default both)")
    eng.add_argument("--models", default="phnet-xs", help="comma list of model names (default phnet-xs)")
    eng.add_argument("--sizes", default="256", help="net sizes, square, multiples of 8 (default 256)")
    eng.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    eng.add_argument("--runs", type=int, default=20, help="timed calls per configuration (default 20)")
    eng.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    eng.add_argument("--max-seconds", type=float, default=5.0,
                     help="time budget per configuration; stops early after 3 runs (default 5)")
    eng.add_argument("--threads", type=int, default=None,
                     help="CPU threads for ONNX Runtime and torch (default: each one's choice)")
    eng.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    _add_pipeline_arguments(sub.add_parser(
        "pipeline", help="time the whole app from a video file to the null output",
        description="Run the whole pipeline (capture, segment, composite, harmonize, null output) from "
                    "video files, with and without harmonization."))


def _add_pipeline_arguments(pipe: argparse.ArgumentParser) -> None:
    pipe.add_argument("--inputs", default="720p,1080p,4k",
                      help="comma list of 360p, 720p, 1080p, 4k, WxH (generated from a real video of a person) "
                           "or video paths (default 720p,1080p,4k)")
    pipe.add_argument("--frames", type=int, default=150, help="frames timed per run (default 150)")
    pipe.add_argument("--warmup-frames", type=int, default=15,
                      help="frames run before the clock starts (models load, threads spin up; default 15)")
    pipe.add_argument("--max-seconds", type=float, default=30.0,
                      help="time budget of each run's timed part: a slow run stops early (default 30)")
    pipe.add_argument("--camera-rate", type=float, default=30.0,
                      help="also run paced at this fps, as a webcam delivers frames (0 = skip; default 30)")
    pipe.add_argument("--modes", default="harmonize,no-harmonize",
                      help="comma list of harmonize, no-harmonize (default both)")
    pipe.add_argument("--source", type=Path, default=None,
                      help="real video of a person to build the inputs from (default: one in ../shared/data)")
    pipe.add_argument("--background", default=None,
                      help="virtual background, as for `vcam run` (default: a real indoor photo from "
                           "../shared/data/backgrounds, else a flat colour)")
    pipe.add_argument("--overlap", default="auto",
                      help="comma list of auto, on, off: each run once per setting, side by side (before/after in "
                           "one run; see `vcam run --overlap`; default auto)")
    harm = pipe.add_argument_group("harmonization (as for `vcam run`; defaults are vcam run's)")
    add_engine_arguments(harm)
    pipe.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> int:
    if args.bench == "engine":
        return _run_engine(args)
    if args.bench == "pipeline":
        return _run_pipeline(args)
    raise VcamError("vcam bench: choose a benchmark: `vcam bench engine` or `vcam bench pipeline` "
                    "(see vcam bench --help)", exit_code=2)


def _command_line() -> list[str]:
    """The command as typed, for the report; in-process calls (tests, tools) have no command line."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("vcam", "__main__.py", "bench_engine.py", "bench_pipeline.py"):
        return [program, *sys.argv[1:]]
    return ["(vcam.cli.main called in-process)"]


def _finish(result: dict, out: Path) -> int:
    from vcam.benchmark import report

    written = report.write_all(result, out)
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    print(report.to_markdown(result))
    if not any(r["status"] == "ok" for r in result["rows"]):
        raise RuntimeError(f"no configuration could run: see {written['markdown']}")
    return 0


def _run_engine(args: argparse.Namespace) -> int:
    from engine.phnet import MODEL_NAMES
    from vcam.benchmark import network, report

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {args.threads}")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    for name in models:
        if name not in MODEL_NAMES:
            raise ValueError(f"--models: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    settings = network.EngineBenchSettings(
        backends=network.parse_list(args.backends, network.BACKENDS, "--backends"),
        precisions=network.parse_list(args.precisions, network.PRECISIONS, "--precisions"),
        models=models, sizes=network.parse_sizes(args.sizes), device=args.device, runs=args.runs,
        warmup=args.warmup, max_seconds=args.max_seconds, threads=args.threads)
    result = report.new_report("engine", _command_line(), vars(settings))
    result["rows"] = network.run_engine_bench(settings)
    result["notes"] = network.auto_note(result["rows"])
    return _finish(result, args.out)


def _run_pipeline(args: argparse.Namespace) -> int:
    from vcam.benchmark import app, report
    from vcam.config import resolve

    if args.frames < 2 or args.warmup_frames < 0:
        raise ValueError(f"expected --frames >= 2 and --warmup-frames >= 0, got {args.frames}, {args.warmup_frames}")
    if args.camera_rate < 0 or args.max_seconds <= 0:
        raise ValueError(f"expected --camera-rate >= 0 and --max-seconds > 0, got {args.camera_rate}, "
                         f"{args.max_seconds}")
    modes = app.parse_modes(args.modes)
    specs = [s for s in args.inputs.split(",") if s.strip()]
    if not specs:
        raise ValueError("--inputs: give at least one of 720p, 1080p, 4k, WxH or a video path")
    base = resolve({name: getattr(args, name) for name in HARMONIZE_FLAGS})
    base = base.replace(background=[args.background or app.default_background()])
    clips = app.prepare_inputs(specs, args.frames + args.warmup_frames, args.camera_rate or 30.0, args.out,
                               args.source)
    overlaps = [o.strip() for o in args.overlap.split(",") if o.strip()]
    if not overlaps or any(o not in ("auto", "on", "off") for o in overlaps):
        raise ValueError(f"--overlap: expected a comma list of auto, on, off, got {args.overlap!r}")
    rows = app.run_pipeline_bench(clips, modes, args.camera_rate > 0, args.frames, args.warmup_frames, base,
                                  args.max_seconds, overlaps)
    settings = {"inputs": specs, "frames": args.frames, "warmup_frames": args.warmup_frames,
                "max_seconds": args.max_seconds, "camera_rate": args.camera_rate, "modes": args.modes, "overlap": overlaps,
                "run_config": vars(base)}
    result = report.new_report("pipeline", _command_line(), settings)
    result["rows"] = rows
    result["inputs"] = [{"label": c.label, "path": str(c.path), "size": list(c.size), "fps": c.fps,
                         "frames": c.frames, "origin": c.origin} for c in clips]
    result["notes"] = [f"input {c.label}: {c.origin}" for c in clips] + [
        f"background: {base.background[0]}",
        "FPS: timed frames / wall time after the warm-up; CPU ms/frame: process CPU time (user+sys, every "
        "thread) / output frames; CPU % machine: process CPU time / wall time / cores; loop CPU: the frame "
        "loop thread's own CPU per stage (p50); refresh Hz: network runs per second",
        "fast rows: every frame of the file as fast as possible (capacity); '@N fps' rows: the file played at "
        "N fps, newest frame wins (what a webcam sees)",
    ] + [f"{r['input']} {r['mode']}: stopped by the {args.max_seconds:g} s budget after {r['frames']} frames"
         for r in rows if r.get("budget_hit")]
    return _finish(result, args.out)
