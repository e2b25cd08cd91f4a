"""`vcam bench engine|pipeline`: measure the network alone, or the whole app from a video file.

Examples:
    vcam bench engine                                    # every backend/precision/model/size available
    vcam bench engine --backends torch,onnxruntime --models phnet-xs --sizes 256 --runs 50
    vcam bench pipeline --inputs 720p,1080p --frames 300  # with and without harmonization
    vcam bench pipeline --inputs 720p --camera-rate 30    # paced like a webcam, for latency

Each writes `<out>/<engine|pipeline>.json`, `.md` and `.png` (default out: out/bench).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vcam.errors import VcamError

HELP = "benchmark the engine (network alone) or the whole pipeline; writes JSON, Markdown and a plot"

log = logging.getLogger("vcam.bench")

DEFAULT_OUT = Path("out/bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="<benchmark>")
    eng = sub.add_parser("engine", help="time the network alone per backend × precision × model × size",
                         description="Time the network alone per backend × variant × precision × model × net "
                                     "size: p50/p95 latency, FPS, GFLOPs/frame, TFLOP/s, fraction of peak.")
    eng.add_argument("--backends", default="auto",
                     help="comma list of torch,onnxruntime,tensorrt, or auto = every one available (default)")
    eng.add_argument("--variants", default=None,
                     help="torch fast-path variants on the raw model: eager,channels_last,cudagraph,compile or "
                          "none (default: eager,cudagraph on CUDA, none on a CPU)")
    eng.add_argument("--precisions", default="fp32,fp16", help="comma list of fp32,fp16,bf16 (default fp32,fp16)")
    eng.add_argument("--models", default=None,
                     help="comma list of model names (default phnet,phnet-s,phnet-xs; on a CPU phnet-s,phnet-xs)")
    eng.add_argument("--sizes", default=None,
                     help="net sizes, square, multiples of 8 (default 256,512,1024; on a CPU 256,512)")
    eng.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    eng.add_argument("--runs", type=int, default=None, help="timed calls per configuration (CUDA 100, CPU 20)")
    eng.add_argument("--warmup", type=int, default=None, help="untimed calls first (CUDA 10, CPU 2)")
    eng.add_argument("--max-seconds", type=float, default=None,
                     help="time budget per configuration; stops early after 3 runs (CUDA 5, CPU 4)")
    eng.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime (default: each one's choice)")
    eng.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")

    pipe = sub.add_parser("pipeline", help="time the whole app from a video file to the null output",
                          description="Run the whole pipeline (capture, segment, composite, harmonize, null "
                                      "output) from video files, with and without harmonization.")
    pipe.add_argument("--inputs", default="720p,1080p,4k",
                      help="comma list of 720p, 1080p, 4k (generated from a real video of a person) or video "
                           "paths (default 720p,1080p,4k)")
    pipe.add_argument("--frames", type=int, default=150, help="frames timed per run (default 150)")
    pipe.add_argument("--warmup-frames", type=int, default=15,
                      help="frames run before the clock starts (models load, threads spin up; default 15)")
    pipe.add_argument("--max-seconds", type=float, default=30.0,
                      help="time budget of each run's timed part: a slow run stops early with fewer frames "
                           "(default 30)")
    pipe.add_argument("--camera-rate", type=float, default=30.0,
                      help="also run paced at this fps, as a webcam delivers frames, for latency "
                           "(0 = skip; default 30)")
    pipe.add_argument("--modes", default="harmonize,no-harmonize",
                      help="comma list of harmonize, no-harmonize (default both)")
    pipe.add_argument("--source", type=Path, default=None,
                      help="real video of a person to build the 720p/1080p/4k inputs from "
                           "(default: the first usable one in ../shared/data/videos; else a synthetic clip)")
    pipe.add_argument("--background", default=None,
                      help="virtual background for every run, as for `vcam run` (default: a real indoor photo "
                           "from ../shared/data/backgrounds, else a flat colour)")
    harm = pipe.add_argument_group("harmonization (as for `vcam run`)")
    harm.add_argument("--model", default=None, help="model name or weights path (default: the shipped weights)")
    harm.add_argument("--weights", type=Path, default=None, help="weights file (.safetensors)")
    harm.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default auto)")
    harm.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    harm.add_argument("--net-size", type=int, default=256, help="network input size (default 256)")
    harm.add_argument("--refresh-hz", type=float, default=10.0,
                      help="CPU worker: most network runs per second (0 = as fast as it goes; default 10)")
    harm.add_argument("--threads", type=int, default=1, help="torch threads of the CPU worker (default 1)")
    harm.add_argument("--harmonize-mode", default="auto", choices=("auto", "inline", "worker"),
                      help="auto: every frame on a GPU, a worker at --refresh-hz on a CPU")
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
    if program in ("vcam", "__main__.py"):
        return ["vcam", *sys.argv[1:]]
    if program in ("bench_engine.py", "bench_pipeline.py"):
        return [f"scripts/{program}", *sys.argv[1:]]
    return ["(vcam.cli.main called in-process)"]


def _run_engine(args: argparse.Namespace) -> int:
    from vcam.bench import engine, report, sysinfo

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    settings = engine.EngineBenchSettings(
        backends=engine._split(args.backends), variants=engine._split(args.variants),
        precisions=engine._split(args.precisions) or ("fp32",), models=engine._split(args.models),
        sizes=engine.parse_sizes(args.sizes), device=args.device, runs=args.runs, warmup=args.warmup,
        max_seconds=args.max_seconds)
    if settings.models:
        _check_models(settings.models)
    settings = engine.resolve(settings, engine.cuda_available())
    system = sysinfo.collect()
    log.info("machine: %s", sysinfo.describe(system))
    create_backend = None
    if args.threads is not None:  # the same thread count for ONNX Runtime's own pool as for torch's
        import functools

        from engine.backends import create_backend as _create

        create_backend = functools.partial(_create, threads=args.threads)
    rows, notes, auto = engine.run_engine_bench(settings, system, create_backend=create_backend)
    result = report.new_report("engine", _command_line(), system, _settings_dict(settings))
    result["rows"] = rows
    result["auto"] = auto
    result["notes"] = notes + engine.auto_lines(auto) + engine.target_lines(rows)
    written = report.write_all(result, args.out, "engine")
    for line in engine.auto_lines(auto):
        log.info("%s", line)
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    print(report.to_markdown(result))
    if not any(r["status"] == "ok" for r in rows):
        raise RuntimeError("no configuration could run: see the skipped/failed list in " + str(written["markdown"]))
    return 0


def _check_models(names) -> None:
    from engine.phnet import MODEL_NAMES

    for name in names:
        if name not in MODEL_NAMES:
            raise ValueError(f"--models: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")


def _settings_dict(settings) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "notes"}


def _run_pipeline(args: argparse.Namespace) -> int:
    from vcam.bench import pipeline

    return pipeline.main(args, _command_line())
