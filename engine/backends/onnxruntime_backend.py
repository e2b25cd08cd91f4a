"""ONNX Runtime backend (CPU or CUDA execution provider), fed and read through I/O binding.

The model is exported once to ONNX (dynamic height/width) into the user cache dir (onnx_cache) and the
session is created once. Inputs are bound by pointer from the caller's torch tensors and outputs are
written straight into torch tensors allocated once per input shape: no copies in either direction.
"""

from __future__ import annotations

import logging
import os

import torch

from engine.backends.base import INPUT_NAMES, Backend
from engine.backends.onnx_cache import cached_onnx
from engine.errors import first_line

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Intra-op threads: the physical cores ORT would pick, capped at 8 and leaving one for the camera,
    the segmenter and the UI, which run beside the network in the app."""
    count = os.cpu_count() or 1
    return max(1, min(8, count - 1 if count > 2 else count))


class OnnxRuntimeBackend(Backend):
    """Runs the exported graph in an ONNX Runtime InferenceSession (fp32)."""

    name = "onnxruntime"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 threads: int | None = None, opset: int = 17):
        super().__init__(model, device, precision)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeError("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu "
                               "for CUDA)") from exc
        if precision != "fp32":
            raise RuntimeError("the onnxruntime backend runs fp32 only (use tensorrt or torch for fp16)")
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu: "
                                   "pip install 'vcam[gpu]')")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1  # one sequential graph: a second pool only adds contention
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise to a user

        onnx_path = cached_onnx(model, opset)
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # a truncated/corrupt cached file: export again once
            log.warning("cached ONNX %s did not load (%s); exporting again", onnx_path, exc)
            onnx_path = cached_onnx(model, opset, refresh=True)
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.onnx_path = onnx_path
        if device.type == "cuda" and self._session.get_providers()[0] != "CUDAExecutionProvider":
            # ORT silently falls back to the CPU when the CUDA provider fails to load (missing cuDNN).
            raise RuntimeError(f"onnxruntime could not start its CUDA provider (got {self._session.get_providers()})")
        names = [i.name for i in self._session.get_inputs()]
        if tuple(names) != INPUT_NAMES:
            raise RuntimeError(f"exported graph has inputs {names}, expected {list(INPUT_NAMES)}")
        self._binding = self._session.io_binding()
        self._outputs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._threads = options.intra_op_num_threads

    @property
    def description(self) -> str:
        extra = f", {self._threads} threads" if self.device.type == "cpu" else ""
        return f"{self.name} ({self.device.type}, {self.precision}{extra})"

    def _bind(self, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        import numpy as np

        kind = "cuda" if tensor.device.type == "cuda" else "cpu"
        index = tensor.device.index or 0
        bind = self._binding.bind_output if output else self._binding.bind_input
        bind(name, kind, index, np.float32, list(tensor.shape), tensor.data_ptr())

    def run(self, composite, mask, reference, stats_in, momentum):
        momentum = self.check_inputs(composite, mask, reference, stats_in, momentum)
        inputs = [t.detach().to(torch.float32).contiguous() for t in (composite, mask, reference)]
        # A copy: a caller feeding last call's stats_out back in would otherwise alias an output buffer.
        inputs.append(stats_in.detach().to(torch.float32).clone())
        inputs.append(momentum.contiguous())
        key = tuple(composite.shape)
        if key not in self._outputs:  # allocate once per input shape
            self._outputs[key] = (torch.empty(self._output_shape(*key[:1], *key[2:]), dtype=torch.float32,
                                              device=self.device),
                                  torch.empty(tuple(stats_in.shape), dtype=torch.float32, device=self.device))
        output, stats_out = self._outputs[key]
        for name, tensor in zip(INPUT_NAMES, inputs):
            self._bind(name, tensor)
        self._bind(self.output_names[0], output, output=True)
        self._bind(self.output_names[1], stats_out, output=True)
        if self.device.type == "cuda":
            # ORT runs on its own stream: the inputs torch produced on the current stream must be ready.
            torch.cuda.current_stream(self.device).synchronize()
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise RuntimeError(f"onnxruntime run failed: {first_line(exc)}") from exc
        finally:
            self._binding.clear_binding_inputs()
        return output, stats_out

    def close(self) -> None:
        if not self._closed:
            self._binding = None
            self._session = None
            self._outputs.clear()
        super().close()
