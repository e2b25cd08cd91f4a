"""`vcam export onnx|tensorrt`: write a model as an ONNX file (checked, with a parity figure) or build a
TensorRT engine.

    vcam export onnx --model phnet-xs --out phnet-xs.onnx                 # dynamic height/width
    vcam export onnx --weights engine/weights/default.safetensors --height 144 --width 256
    vcam export tensorrt --model phnet --height 512 --width 512 --precision fp16 --out phnet.engine
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HELP = "export a model to ONNX (checked against torch) or build a TensorRT engine"

TRT_MISSING = ("TensorRT is not installed: on an NVIDIA machine with CUDA, pip install 'vcam[trt]' "
               "(TensorRT 10) and run this again")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="<format>", parser_class=type(parser))
    sub.required = True
    onnx = sub.add_parser("onnx", help="write an ONNX file, run onnx.checker and an ONNX Runtime parity check")
    _common(onnx)
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    onnx.add_argument("--dynamic", action="store_true",
                      help="dynamic height and width (the default when --height/--width are not given)")
    trt = sub.add_parser("tensorrt", help="build a TensorRT 10 engine (needs an NVIDIA GPU and TensorRT)")
    _common(trt)
    trt.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="engine precision")
    trt.add_argument("--device", default="cuda", help="CUDA device (default cuda)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name (phnet, phnet-s, phnet-xs, stats): its shipped weights where the "
                             "default file holds that model, else its initial weights; with neither --model "
                             "nor --weights, the shipped default weights")
    parser.add_argument("--weights", type=Path, default=None, help=".safetensors file (its .json names the model)")
    parser.add_argument("--out", type=Path, default=None, help="output file (default: <model>.onnx/.engine)")
    parser.add_argument("--height", type=int, default=None, help="fixed input height (multiple of 8)")
    parser.add_argument("--width", type=int, default=None, help="fixed input width (multiple of 8)")


def _load_model(args):
    """--weights, --model, or neither: the shipped default weights (engine.weights.resolve_model)."""
    from engine.weights import resolve_model

    return resolve_model(args.model, args.weights)[0]


def _size(args) -> tuple[int | None, int | None]:
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width, or neither (dynamic size)")
    if getattr(args, "dynamic", False) and args.height is not None:
        raise ValueError("--dynamic and --height/--width exclude each other")
    for label, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and (value < 8 or value % 8):
            raise ValueError(f"{label} must be a positive multiple of 8, got {value}")
    return args.height, args.width


def _run_onnx(args) -> int:
    from engine.export import check_onnx_parity, example_inputs, export_onnx

    height, width = _size(args)
    model = _load_model(args)
    out = args.out or Path(f"{model.name}.onnx")
    export_onnx(model, out, height=height, width=width, opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"{'dynamic size' if height is None else f'{height}x{width}'}); onnx.checker passed")
    sizes = [(height, width)] if height is not None else [(64, 96), (144, 256)]
    worst = 0.0
    for h, w in sizes:
        diffs = check_onnx_parity(model, out, example_inputs(model, h, w))
        worst = max(worst, *diffs.values())
        print(f"parity torch vs onnxruntime at {h}x{w}: max abs diff "
              + ", ".join(f"{name} {diff:.2e}" for name, diff in diffs.items()))
    if worst > 1e-4:
        raise RuntimeError(f"ONNX Runtime differs from torch by {worst:.2e} (> 1e-4): the export is not faithful")
    return 0


def _run_tensorrt(args) -> int:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise RuntimeError(TRT_MISSING)
    height, width = _size(args)
    if height is None:
        raise ValueError("a TensorRT engine is built for one size: give --height and --width")
    import torch

    from engine.backends.base import resolve_device
    from engine.backends.graph import onnx_for
    from engine.backends.tensorrt_backend import (
        cached_engine,
        graph_stats_size,
        import_tensorrt,
        profile_shapes,
    )
    from engine.weights import resolve_runtime_model

    device = resolve_device(args.device)
    if device.type != "cuda":
        raise RuntimeError(f"TensorRT builds engines on a CUDA device, got --device {args.device}")
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    model = resolve_runtime_model(args.model, args.weights)[0]  # the shipped graph where there is one
    onnx_path = onnx_for(model)
    hw = (height, width)
    shapes = profile_shapes(graph_stats_size(trt, logger, onnx_path), hw, hw, hw)
    cached = cached_engine(trt, logger, onnx_path, torch.device(str(device)), args.precision, shapes)
    out = args.out or Path(f"{model.name}-{height}x{width}-{args.precision}.engine")
    shutil.copyfile(cached, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; cached as {cached})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        return _run_onnx(args)
    return _run_tensorrt(args)
