"""Backends that run a model: one small interface (base.Backend), one file each, heavy imports inside.

`create_backend(name, model, device, precision)` is the registry: a dict of names to classes, and for
"auto" an ordered list of (backend, device) candidates tried in turn, like pyvirtualcam's backends: the
first that starts wins, the choice and the reasons for skipping the others are logged in one line, and if
none starts ONE RuntimeError lists every reason.

Imports no torch: ONNX Runtime on the CPU runs without it (the lean install). The backends that need torch
(torch, ONNX Runtime and TensorRT on CUDA: their data stays in torch CUDA tensors) are only tried where it
imports, and `auto` says so ("torch not installed").
"""

from __future__ import annotations

import importlib
import logging

from engine.backends.base import Backend, cuda_available, resolve_device, resolve_precision, torch_available
from engine.errors import first_line

log = logging.getLogger(__name__)

# name -> "module:Class", imported only when asked for (onnxruntime and tensorrt are heavy/optional).
BACKENDS = {
    "torch": "engine.backends.torch_backend:TorchBackend",
    "onnxruntime": "engine.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "engine.backends.tensorrt_backend:TensorRTBackend",
}
# Where the device changes the class: ONNX Runtime on CUDA binds torch tensors (the CPU one takes NumPy).
_CUDA_CLASSES = {"onnxruntime": "engine.backends.onnxruntime_backend:OnnxRuntimeCudaBackend"}
_ALIASES = {"ort": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
NAMES = ("auto", *BACKENDS)

# The order `auto` tries. GPU: TensorRT (fused fp16 kernels) before ONNX Runtime's CUDA provider (fp32,
# per-op kernels) before eager torch. CPU: ONNX Runtime before torch because it is faster for the
# CPU model: phnet-xs at 256x256, 1 thread, median of 20 runs on a shared 2-core machine: see
# docs/notes/runtime.md ("CPU backend choice") for the figures and the command (scripts are noisy there;
# the lead re-measures on a quiet machine).
AUTO_ORDER = (("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"), ("onnxruntime", "cpu"),
              ("torch", "cpu"))


def _backend_class(name: str, device_type: str = "cpu") -> type[Backend]:
    target = _CUDA_CLASSES.get(name, BACKENDS[name]) if device_type == "cuda" else BACKENDS[name]
    module_name, cls = target.split(":")
    return getattr(importlib.import_module(module_name), cls)


def needs_torch(name: str, device_type: str) -> bool:
    """Whether a (backend, device) candidate needs torch: every one but ONNX Runtime on the CPU."""
    return not (name == "onnxruntime" and device_type == "cpu")


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


def _options(name: str, threads: int | None, max_size: int | None) -> dict:
    """Backend-specific keyword arguments: ONNX Runtime owns a per-session thread pool; TensorRT builds
    its engine for inputs up to max_size."""
    if name == "onnxruntime" and threads:
        return {"threads": threads}
    if name == "tensorrt" and max_size:
        return {"max_size": max_size}
    return {}


def create_backend(name: str, model, device="auto", precision: str | None = None, threads: int | None = None,
                   max_size: int | None = None, order: tuple[tuple[str, str], ...] = AUTO_ORDER) -> Backend:
    """Start a backend for `model`.

    Args:
        name: "auto", "torch", "onnxruntime" ("ort") or "tensorrt" ("trt").
        model: what to run: an engine.weights.ModelInfo (a weights file; ONNX Runtime and TensorRT run the
            graph shipped beside it, without torch) or an nn.Module (create_model / load_weights; backends
            copy or export it).
        device: "auto", "cpu", "cuda" or "cuda:N". With "auto" and name "auto", every candidate of
            `order` is tried; with a named backend, "auto" means CUDA where available.
        precision: "fp32", "fp16" or None (fp16 on CUDA, fp32 on CPU; ONNX Runtime always fp32).
        threads: ONNX Runtime's intra-op threads on a CPU (None: its default_threads()). torch's thread
            pool is process-wide: set it with torch.set_num_threads in the thread that runs the model.
        max_size: the longest input side the backend will see (engine.Harmonizer's net_size): TensorRT
            builds its engine for sizes up to it when it starts, never in the frame loop.
        order: the (backend, device type) candidates "auto" tries, first to last (AUTO_ORDER).

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
        return _create_named(name, model, device, precision, threads, max_size)
    wanted = None if device in (None, "auto") else resolve_device(device)
    has_torch = torch_available()
    has_cuda = has_torch and cuda_available()
    reasons = []
    skipped = {"torch not installed": [], "no CUDA device": []}  # said once, not once per candidate
    for cand, dev_type in order:
        if wanted is not None and wanted.type != dev_type:
            continue
        label = f"{cand} ({dev_type})"
        if needs_torch(cand, dev_type) and not has_torch:
            skipped["torch not installed"].append(label)
            continue
        if dev_type == "cuda" and not has_cuda:
            skipped["no CUDA device"].append(label)
            continue
        try:
            dev = wanted or resolve_device(dev_type)
            prec = "fp32" if cand == "onnxruntime" and precision is None else resolve_precision(precision, dev)
            backend = _backend_class(cand, dev.type)(model, dev, prec, **_options(cand, threads, max_size))
        except Exception as exc:  # noqa: BLE001 - whatever stops a candidate, `auto` goes on to the next
            reasons.append(f"{label}: {first_line(exc)}")
            continue
        why = _why(skipped, reasons)
        log.info("backend: %s, chosen by auto (%s)", backend.description, why or "its first choice")
        return backend
    raise RuntimeError("no backend could start: " + _why(skipped, reasons))


def inventory() -> tuple[list[str], tuple[str, str] | None]:
    """What could run here, without starting anything: (one line per runtime: ONNX Runtime's providers,
    torch and CUDA, TensorRT; the first AUTO_ORDER candidate whose prerequisites are met, or None).
    Imports torch only where it is installed (to ask it for CUDA)."""
    import importlib.metadata as md
    import importlib.util

    lines = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        lines.append(f"ONNX Runtime {ort.__version__}: providers {', '.join(providers)}")
    except ImportError:
        providers = []
        lines.append("ONNX Runtime: not installed (pip install onnxruntime)")
    has_torch, has_cuda = torch_available(), cuda_available()
    if not has_torch:
        lines.append("torch: not installed (the lean install: ONNX Runtime on the CPU; pip install 'vcam[gpu]' "
                     "for the CUDA backends)")
    else:
        import torch

        gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())] if has_cuda else []
        lines.append(f"torch {md.version('torch')}: " + (", ".join(gpus) if gpus else "no CUDA device"))
    has_trt = importlib.util.find_spec("tensorrt") is not None
    lines.append(f"TensorRT {md.version('tensorrt') if has_trt else ''}".rstrip() + (
        "" if has_trt else ": not installed (pip install 'vcam[trt]' on an NVIDIA machine)"))
    met = {("tensorrt", "cuda"): has_trt and has_cuda,
           ("onnxruntime", "cuda"): has_cuda and "CUDAExecutionProvider" in providers,
           ("torch", "cuda"): has_cuda, ("onnxruntime", "cpu"): bool(providers), ("torch", "cpu"): has_torch}
    return lines, next((cand for cand in AUTO_ORDER if met.get(cand)), None)


def _why(skipped: dict[str, list[str]], reasons: list[str]) -> str:
    said = [f"{why}: skipped {', '.join(labels)}" for why, labels in skipped.items() if labels]
    return "; ".join(said + reasons)


def _create_named(name, model, device, precision, threads, max_size) -> Backend:
    """A backend asked for by name: it starts or ONE RuntimeError says why."""
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise RuntimeError(f"backend {name!r} cannot start: {first_line(exc)}") from exc
    prec = resolve_precision(precision, dev)
    if name == "onnxruntime" and precision is None:
        prec = "fp32"
    if needs_torch(name, dev.type) and not torch_available():
        raise RuntimeError(f"backend {name!r} cannot start on {dev.type}: torch is not installed (the lean "
                           "install runs ONNX Runtime on the CPU; pip install 'vcam[gpu]' for the others)")
    try:
        backend = _backend_class(name, dev.type)(model, dev, prec, **_options(name, threads, max_size))
    except (RuntimeError, ImportError, OSError) as exc:
        raise RuntimeError(f"backend {name!r} cannot start on {dev.type} ({prec}): {first_line(exc)}") from exc
    log.info("backend: %s (requested)", backend.description)
    return backend


__all__ = ["AUTO_ORDER", "BACKENDS", "Backend", "NAMES", "canonical_name", "create_backend", "inventory", "needs_torch"]
