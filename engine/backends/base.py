"""The one small interface every backend implements, and the input checks they share.

A backend runs the model's forward contract (engine/phnet.py) on torch tensors that already live on the
backend's device:

    run(composite (B,3,H,W), mask (B,1,H,W), reference (B,1,H,W), stats_in (B,S), momentum)
        -> (output, stats_out (B,S) float32)

where output is the model's first output (`backend.output_names[0]`): the harmonized image (B,3,H,W) or,
for the "affine" head, the colour-transform grid (B,12,H/f,W/f); engine.phnet.harmonized_image turns
either into the image.

It loads or builds what it needs once (model on the device, an ONNX Runtime session, a TensorRT engine)
in `__init__`, allocates per input shape once, and frees everything in `close()` (idempotent).
Returned tensors may be buffers that the next `run` overwrites: copy them to keep them.
"""

from __future__ import annotations

import abc

import torch

INPUT_NAMES = ("composite", "mask", "reference", "stats_in", "momentum")
PRECISIONS = ("fp32", "fp16")


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA where torch sees a GPU, else CPU; anything else is parsed by torch.

    Raises:
        ValueError: not a device string torch understands.
        RuntimeError: a CUDA device was asked for and torch has no CUDA.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device in (None, "auto"):
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False (CPU-only torch "
                               "build or no NVIDIA driver)")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def resolve_precision(precision: str | None, device: torch.device) -> str:
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


class Backend(abc.ABC):
    """Runs one model on one device. Subclasses: TorchBackend, OnnxRuntimeBackend, TensorRTBackend."""

    #: Short name: "torch", "onnxruntime" or "tensorrt".
    name: str = "base"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str):
        from engine.phnet import output_names, output_shape

        self.model_name = getattr(model, "name", type(model).__name__)
        self.stats_size = int(model.stats_size)
        self.output_names: tuple[str, str] = output_names(model)
        self._output_shape = lambda b, h, w: output_shape(model, b, h, w)
        self.device = device
        self.precision = precision
        self._closed = False

    @property
    def description(self) -> str:
        """e.g. "onnxruntime (cpu, fp32)": what the logs and `Harmonizer.backend_name` show."""
        return f"{self.name} ({self.device.type}, {self.precision})"

    def check_inputs(self, composite, mask, reference, stats_in, momentum) -> torch.Tensor:
        """Validate shapes/devices (cheap) and return momentum as a (1,) float32 tensor on the device.

        Raises:
            RuntimeError: the backend was closed.
            TypeError: an input is not a torch tensor.
            ValueError: a shape or device does not match the forward contract.
        """
        if self._closed:
            raise RuntimeError(f"{self.name} backend used after close()")
        for n, t in zip(INPUT_NAMES[:4], (composite, mask, reference, stats_in)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
            if t.device.type != self.device.type:
                raise ValueError(f"{n} is on {t.device}, expected the backend's device {self.device}")
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
        if not isinstance(momentum, torch.Tensor):
            momentum = torch.tensor([float(momentum)], dtype=torch.float32)
        momentum = momentum.reshape(1).to(device=self.device, dtype=torch.float32)
        return momentum

    @abc.abstractmethod
    def run(self, composite: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor,
            stats_in: torch.Tensor, momentum: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass (see the module docstring for shapes).

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
