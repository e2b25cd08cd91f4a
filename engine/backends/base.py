"""The one small interface every backend implements, and the input checks they share. Imports no torch.

A backend runs the model's forward contract (engine/phnet.py) on arrays of its own kind:

    run(composite (B,3,H,W), mask (B,1,H,W), reference (B,1,H,W), stats_in (B,S), momentum)
        -> (output, stats_out (B,S) float32)

The CPU backend (ONNX Runtime on the CPU) takes and returns NumPy arrays; the torch and CUDA backends take
and return torch tensors on their device (`array_kind` says which). `from_host`, `zero_stats`, `copy` and
`all_finite` let a caller (engine.Harmonizer) hold the temporal state in the backend's kind without
knowing it. `output` is the model's first output (`backend.output_names[0]`): the harmonized image
(B,3,H,W) or, for the "affine" head, the colour-transform grid (B,12,H/f,W/f).

It loads or builds what it needs once (model on the device, an ONNX Runtime session, a TensorRT engine)
in `__init__`, allocates per input shape once, and frees everything in `close()` (idempotent).
Returned arrays may be buffers that the next `run` overwrites: copy them to keep them.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import sys
from dataclasses import dataclass

import numpy as np

INPUT_NAMES = ("composite", "mask", "reference", "stats_in", "momentum")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class Device:
    """Where a backend runs, without torch: type "cpu" or "cuda", and the CUDA index (None on the CPU).
    The torch backends turn it into a torch.device (`torch.device(str(device))`)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def torch_available() -> bool:
    """Whether torch can be imported here (the lean install has none; the torch and CUDA backends need it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a blocked or half-removed torch (sys.modules["torch"] = None)
        return False


def nvidia_driver_present(platform: str | None = None) -> bool:
    """Whether this machine shows an NVIDIA driver, asked without importing torch (which costs a second and
    a hundred MB on a CPU-only machine that happens to have it): its /proc entry or device nodes on Linux
    (/dev/dxg: WSL2), its driver library on Windows; never on macOS."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"))
    if platform.startswith("win"):
        import ctypes.util

        return ctypes.util.find_library("nvcuda") is not None
    return platform != "darwin"


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (False without torch: vcam's CUDA paths need it).
    torch is imported only where an NVIDIA driver shows."""
    if not torch_available() or not nvidia_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device) -> Device:
    """"auto" -> CUDA where torch sees a GPU, else CPU; "cpu", "cuda", "cuda:N" or a torch.device.

    Raises:
        ValueError: not a device string of that form.
        RuntimeError: a CUDA device was asked for and torch is missing or has no CUDA.
    """
    if device in (None, "auto"):
        device = "cuda" if cuda_available() else "cpu"
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if kind == "cpu":
        return Device("cpu")
    if not torch_available():
        raise RuntimeError("CUDA was requested but torch is not installed (vcam's CUDA backends need it: "
                           "pip install 'vcam[gpu]')")
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False (CPU-only torch "
                           "build or no NVIDIA driver)")
    return Device("cuda", int(index) if index else torch.cuda.current_device())


def resolve_precision(precision: str | None, device) -> str:
    """None -> fp16 on CUDA, fp32 on CPU; fp16 on a CPU is refused (slow or unsupported there).

    Raises:
        ValueError: unknown precision, or fp16 on a CPU.
    """
    if precision is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'fp32' on a CPU")
    return precision


def host_hwc(output) -> np.ndarray:
    """The first image of a (B, C, H, W) output, NumPy or torch, as a float32 (H, W, C) host copy."""
    if isinstance(output, np.ndarray):
        return np.ascontiguousarray(np.transpose(output[0], (1, 2, 0)), dtype=np.float32)
    return output[0].permute(1, 2, 0).float().cpu().numpy().copy()


def module_description(model) -> tuple[str, int, tuple[str, str], object]:
    """(name, stats_size, output names, output-shape function) of an nn.Module (torch-built backends)."""
    from engine.phnet import output_names, output_shape

    return (getattr(model, "name", type(model).__name__), int(model.stats_size), output_names(model),
            lambda b, h, w: output_shape(model, b, h, w))


class Backend(abc.ABC):
    """Runs one model on one device. Subclasses: TorchBackend, OnnxRuntimeBackend (CPU, NumPy),
    OnnxRuntimeCudaBackend, TensorRTBackend.

    Subclasses set `model_name`, `stats_size`, `output_names` (from the nn.Module or the ONNX graph) and
    mix in HostArrays or TorchArrays.
    """

    #: Short name: "torch", "onnxruntime" or "tensorrt".
    name: str = "base"
    #: "numpy" (the CPU backend) or "torch" (tensors on `device`).
    array_kind: str = "numpy"

    def __init__(self, device, precision: str):
        self.device = device
        self.precision = precision
        self.model_name = "model"
        self.stats_size = 0
        self.output_names: tuple[str, str] = ("harmonized", "stats_out")
        self._closed = False

    @property
    def description(self) -> str:
        """e.g. "onnxruntime (cpu, fp32)": what the logs and `Harmonizer.backend_name` show."""
        return f"{self.name} ({self.device.type}, {self.precision})"

    def _check_shapes(self, composite, mask, reference, stats_in) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name} backend used after close()")
        if composite.ndim != 4 or composite.shape[1] != 3:
            raise ValueError(f"composite must be (B,3,H,W), got {tuple(composite.shape)}")
        b, _, h, w = composite.shape
        if h % 8 or w % 8:
            raise ValueError(f"H and W must be multiples of 8, got {h}x{w}")
        for n, t in (("mask", mask), ("reference", reference)):
            if tuple(t.shape) != (b, 1, h, w):
                raise ValueError(f"{n} must be {(b, 1, h, w)}, got {tuple(t.shape)}")
        if tuple(stats_in.shape) != (b, self.stats_size):
            raise ValueError(f"stats_in must be {(b, self.stats_size)}, got {tuple(stats_in.shape)}")

    @abc.abstractmethod
    def run(self, composite, mask, reference, stats_in, momentum):
        """One forward pass (see the module docstring for shapes and array kinds).

        Raises:
            RuntimeError: the backend was closed or the device failed.
            TypeError, ValueError: inputs that do not match the forward contract.
        """

    def close(self) -> None:
        """Free the device resources. Safe to call more than once."""
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description} model={self.model_name}>"


class HostArrays:
    """NumPy arrays in and out (the CPU backend)."""

    array_kind = "numpy"

    def check_inputs(self, composite, mask, reference, stats_in, momentum) -> list[np.ndarray]:
        """Validate and return the five inputs as contiguous float32 NumPy arrays (momentum (1,)).

        Raises:
            RuntimeError: the backend was closed.
            TypeError: an input is not an array.
            ValueError: a shape that does not match the forward contract.
        """
        arrays = []
        for n, t in zip(INPUT_NAMES[:4], (composite, mask, reference, stats_in)):
            if not hasattr(t, "shape"):
                raise TypeError(f"{n} must be a NumPy array, got {type(t).__name__}")
            arrays.append(np.ascontiguousarray(t, dtype=np.float32))
        self._check_shapes(*arrays)
        arrays.append(np.asarray(momentum, dtype=np.float32).reshape(1))
        return arrays

    @staticmethod
    def from_host(array: np.ndarray) -> np.ndarray:
        """(H, W, C) or (H, W) float32 -> (1, C, H, W)."""
        a = array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1))
        return np.ascontiguousarray(a[None], dtype=np.float32)

    def zero_stats(self, batch: int = 1) -> np.ndarray:
        return np.zeros((batch, self.stats_size), np.float32)

    @staticmethod
    def copy(array: np.ndarray) -> np.ndarray:
        return np.array(array, dtype=np.float32, copy=True)

    @staticmethod
    def all_finite(array: np.ndarray) -> bool:
        return bool(np.isfinite(array).all())


class TorchArrays:
    """torch tensors on `self.device` (a torch.device) in and out (the torch and CUDA backends)."""

    array_kind = "torch"

    def check_inputs(self, composite, mask, reference, stats_in, momentum):
        """Validate shapes/devices (cheap) and return momentum as a (1,) float32 tensor on the device.

        Raises:
            RuntimeError: the backend was closed.
            TypeError: an input is not a torch tensor.
            ValueError: a shape or device does not match the forward contract.
        """
        import torch

        for n, t in zip(INPUT_NAMES[:4], (composite, mask, reference, stats_in)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
            if t.device.type != self.device.type:
                raise ValueError(f"{n} is on {t.device}, expected the backend's device {self.device}")
        self._check_shapes(composite, mask, reference, stats_in)
        if not isinstance(momentum, torch.Tensor):
            momentum = torch.tensor([float(momentum)], dtype=torch.float32)
        return momentum.reshape(1).to(device=self.device, dtype=torch.float32)

    def from_host(self, array: np.ndarray):
        """(H, W, C) or (H, W) float32 -> (1, C, H, W) on the device."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(array))
        t = t.permute(2, 0, 1) if t.ndim == 3 else t[None]
        return t[None].contiguous().to(self.device, non_blocking=True)

    def zero_stats(self, batch: int = 1):
        import torch

        return torch.zeros(batch, self.stats_size, device=self.device)

    @staticmethod
    def copy(tensor):
        return tensor.detach().clone()

    @staticmethod
    def all_finite(tensor) -> bool:
        import torch

        return bool(torch.isfinite(tensor).all())
