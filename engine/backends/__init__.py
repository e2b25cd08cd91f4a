"""Backends that run a model: one small interface (base.Backend), one file each, heavy imports inside.

`create_backend(name, model, device, precision)` is the registry: a dict of names to classes, and for
"auto" an ordered list of (backend, device) candidates tried in turn, like pyvirtualcam's backends: the
first that starts wins, the choice and the reasons for skipping the others are logged, and if none starts
ONE RuntimeError lists every reason.
"""

from __future__ import annotations

import importlib
import logging

import torch

from engine.backends.base import Backend, resolve_device, resolve_precision
from engine.errors import first_line

log = logging.getLogger(__name__)

# name -> "module:Class", imported only when asked for (onnxruntime and tensorrt are heavy/optional).
BACKENDS = {
    "torch": "engine.backends.torch_backend:TorchBackend",
    "onnxruntime": "engine.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "engine.backends.tensorrt_backend:TensorRTBackend",
}
_ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
NAMES = ("auto", *BACKENDS)

# The order `auto` tries. GPU: TensorRT (fused fp16 kernels) before ONNX Runtime's CUDA provider (fp32,
# per-op kernels) before eager torch. CPU: ONNX Runtime before torch because it is faster for the
# CPU model: phnet-xs at 256x256, 1 thread, median of 20 runs on a shared 2-core machine: see
# docs/notes/runtime.md ("CPU backend choice") for the figures and the command (scripts are noisy there;
# the lead re-measures on a quiet machine).
AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"), ("onnxruntime", "cpu"),
              ("torch", "cpu"))


def _backend_class(name: str) -> type[Backend]:
    module_name, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls)


def canonical_name(name: str) -> str:
    """"ort" -> "onnxruntime", "trt" -> "tensorrt"; validates.

    Raises:
        ValueError: unknown backend name.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
    return key


def _options(name: str, threads: int | None) -> dict:
    """Backend-specific keyword arguments: only ONNX Runtime owns a per-session thread pool."""
    return {"threads": threads} if name == "onnxruntime" and threads else {}


def create_backend(name: str, model: torch.nn.Module, device: str | torch.device = "auto",
                   precision: str | None = None, threads: int | None = None) -> Backend:
    """Start a backend for `model`.

    Args:
        name: "auto", "torch", "onnxruntime" ("ort") or "tensorrt" ("trt").
        model: the nn.Module to run (create_model / load_weights); backends copy or export it.
        device: "auto", "cpu", "cuda" or "cuda:N". With "auto" and name "auto", every candidate of
            AUTO_ORDER is tried; with a named backend, "auto" means CUDA where available.
        precision: "fp32", "fp16" or None (fp16 on CUDA, fp32 on CPU; ONNX Runtime always fp32).
        threads: ONNX Runtime's intra-op threads on a CPU (None: its default_threads()). torch's thread
            pool is process-wide: set it with torch.set_num_threads in the thread that runs the model.

    Returns:
        A started Backend.

    Raises:
        ValueError: an unknown name, device or precision.
        RuntimeError: the requested backend (or, for "auto", every candidate) cannot start; the message
            names every reason.
    """
    name = canonical_name(name)
    if precision not in (None, "fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'fp16' or None, got {precision!r}")
    if name != "auto":
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        if name == "onnxruntime" and precision is None:
            prec = "fp32"
        try:
            backend = _backend_class(name)(model, dev, prec, **_options(name, threads))
        except (RuntimeError, ImportError, OSError) as exc:
            raise RuntimeError(f"backend {name!r} cannot start on {dev.type} ({prec}): {first_line(exc)}") from exc
        log.info("backend: %s (requested)", backend.description)
        return backend

    wanted = None if device in (None, "auto") else resolve_device(device)
    reasons = []
    no_cuda = []  # said once, not once per CUDA candidate
    for cand, dev_type in AUTO_ORDER:
        if wanted is not None and wanted.type != dev_type:
            continue
        label = f"{cand} ({dev_type})"
        if dev_type == "cuda" and not torch.cuda.is_available():
            no_cuda.append(label)
            continue
        dev = wanted or resolve_device(dev_type)
        try:
            prec = "fp32" if cand == "onnxruntime" and precision is None else resolve_precision(precision, dev)
            backend = _backend_class(cand)(model, dev, prec, **_options(cand, threads))
        except (RuntimeError, ImportError, OSError, ValueError) as exc:
            reasons.append(f"{label}: {first_line(exc)}")
            continue
        skipped = [f"no CUDA device for {', '.join(no_cuda)}"] if no_cuda else []
        why = "; ".join(skipped + reasons) if skipped or reasons else "first choice"
        log.info("backend: %s (auto: %s)", backend.description, why)
        return backend
    skipped = [f"no CUDA device for {', '.join(no_cuda)}"] if no_cuda else []
    raise RuntimeError("no backend could start: " + "; ".join(skipped + reasons))


__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "NAMES", "canonical_name", "create_backend"]
