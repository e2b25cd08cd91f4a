"""ONNX Runtime backends: on the CPU with NumPy arrays (no torch: the lean runtime), on CUDA with torch
tensors bound by pointer.

The graph is the one shipped beside the weights (engine.backends.graph) or, for a model without a current
shipped graph, an export cached in the user cache dir (needs torch). The session is created once.
The CPU backend feeds NumPy arrays and gets NumPy arrays back (the outputs are small: a coefficient grid
and the statistics). The CUDA backend binds the caller's torch tensors as inputs and writes straight into
torch tensors allocated once per input shape: no copies in either direction.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from engine.backends.base import INPUT_NAMES, Backend, HostArrays, TorchArrays
from engine.backends.graph import onnx_for, session_metadata, stale_reason
from engine.errors import first_line

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Intra-op threads: the physical cores ORT would pick, capped at 8 and leaving one for the camera,
    the segmenter and the UI, which run beside the network in the app."""
    count = os.cpu_count() or 1
    return max(1, min(8, count - 1 if count > 2 else count))


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeError("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu "
                           "for CUDA)") from exc
    return ort


def _options(ort, threads: int | None):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1  # one sequential graph: a second pool only adds contention
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    return options


def open_session(model, providers: list, threads: int | None, opset: int = 17):
    """(InferenceSession, the ONNX path) for `model` (engine.weights.ModelInfo or nn.Module).

    A shipped graph is opened once and its recorded weights hash checked on the open session; a cached
    export that does not load (truncated) is exported again once.

    Raises:
        RuntimeError: onnxruntime is missing, no graph can be had (engine.backends.graph.onnx_for), or the
            file does not load.
    """
    from engine.weights import ModelInfo

    ort = _import_ort()
    options = _options(ort, threads)
    if isinstance(model, ModelInfo) and model.graph_path.is_file():
        try:
            session = ort.InferenceSession(str(model.graph_path), options, providers=providers)
            reason = stale_reason(session_metadata(session), model)
        except Exception as exc:  # ORT's own error types for a bad file
            session, reason = None, f"{model.graph_path.name} does not load: {first_line(exc)}"
        if reason is None:
            return session, model.graph_path
    path = onnx_for(model, opset)  # a stale or missing shipped graph: says why, exports with torch
    try:
        return ort.InferenceSession(str(path), options, providers=providers), path
    except Exception as exc:
        if isinstance(model, ModelInfo) and path == model.graph_path:
            raise RuntimeError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from exc
        from engine.backends.onnx_cache import cached_onnx  # a truncated cached export: export again once

        log.warning("cached ONNX %s did not load (%s); exporting again", path, first_line(exc))
        module = model.module() if isinstance(model, ModelInfo) else model
        path = cached_onnx(module, opset, refresh=True)
        return ort.InferenceSession(str(path), options, providers=providers), path


class _Session:
    """What both ONNX Runtime backends read from their session: names, stats size, threads."""

    def _adopt(self, session, path: Path, threads: int) -> None:
        self._session = session
        self.onnx_path = Path(path)
        names = [i.name for i in session.get_inputs()]
        if tuple(names) != INPUT_NAMES:
            raise RuntimeError(f"ONNX graph {path.name} has inputs {names}, expected {list(INPUT_NAMES)}")
        self.output_names = tuple(o.name for o in session.get_outputs())
        stats = session.get_inputs()[INPUT_NAMES.index("stats_in")].shape[1]
        if not isinstance(stats, int):
            raise RuntimeError(f"ONNX graph {path.name} has no fixed statistics size (stats_in {stats})")
        self.stats_size = stats
        self.model_name = session_metadata(session).get("vcam.model", path.stem)
        self._threads = threads

    @property
    def description(self) -> str:
        extra = f", {self._threads} threads" if self.device.type == "cpu" else ""
        return f"{self.name} ({self.device.type}, {self.precision}{extra})"


class OnnxRuntimeBackend(_Session, HostArrays, Backend):
    """Runs the graph in an ONNX Runtime InferenceSession on the CPU (fp32), NumPy in and out; no torch."""

    name = "onnxruntime"

    def __init__(self, model, device, precision: str = "fp32", threads: int | None = None, opset: int = 17):
        super().__init__(device, precision)
        if precision != "fp32":
            raise RuntimeError("the onnxruntime backend runs fp32 only (use tensorrt or torch for fp16)")
        if device.type != "cpu":
            raise RuntimeError("OnnxRuntimeBackend runs on the CPU; CUDA is OnnxRuntimeCudaBackend's")
        threads = threads or default_threads()
        session, path = open_session(model, ["CPUExecutionProvider"], threads, opset)
        self._adopt(session, path, threads)

    def run(self, composite, mask, reference, stats_in, momentum):
        inputs = self.check_inputs(composite, mask, reference, stats_in, momentum)
        try:
            output, stats_out = self._session.run(list(self.output_names), dict(zip(INPUT_NAMES, inputs)))
        except Exception as exc:
            raise RuntimeError(f"onnxruntime run failed: {first_line(exc)}") from exc
        return output, stats_out

    def close(self) -> None:
        self._session = None
        super().close()


class OnnxRuntimeCudaBackend(_Session, TorchArrays, Backend):
    """Runs the graph with ONNX Runtime's CUDA provider (fp32), torch CUDA tensors bound by pointer."""

    name = "onnxruntime"

    def __init__(self, model, device, precision: str = "fp32", threads: int | None = None, opset: int = 17):
        import torch

        super().__init__(torch.device(str(device)), precision)
        ort = _import_ort()
        if precision != "fp32":
            raise RuntimeError("the onnxruntime backend runs fp32 only (use tensorrt or torch for fp16)")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu: "
                               "pip install 'vcam[gpu]')")
        providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        session, path = open_session(model, providers, threads, opset)
        if session.get_providers()[0] != "CUDAExecutionProvider":
            # ORT silently falls back to the CPU when the CUDA provider fails to load (missing cuDNN).
            raise RuntimeError(f"onnxruntime could not start its CUDA provider (got {session.get_providers()})")
        self._adopt(session, path, threads or default_threads())
        self._binding = session.io_binding()
        self._outputs: dict[tuple, tuple] = {}

    def _bind(self, name: str, tensor, output: bool = False) -> None:
        bind = self._binding.bind_output if output else self._binding.bind_input
        bind(name, "cuda", tensor.device.index or 0, np.float32, list(tensor.shape), tensor.data_ptr())

    def run(self, composite, mask, reference, stats_in, momentum):
        momentum = self.check_inputs(composite, mask, reference, stats_in, momentum)
        import torch

        inputs = [t.detach().to(torch.float32).contiguous() for t in (composite, mask, reference)]
        # A copy: a caller feeding last call's stats_out back in would otherwise alias an output buffer.
        inputs.append(stats_in.detach().to(torch.float32).clone())
        inputs.append(momentum.contiguous())
        key = tuple(composite.shape)
        if key not in self._outputs:  # allocate once per input shape: the shapes from one CPU-side probe
            self._outputs[key] = self._allocate(inputs)
        output, stats_out = self._outputs[key]
        for name, tensor in zip(INPUT_NAMES, inputs):
            self._bind(name, tensor)
        self._bind(self.output_names[0], output, output=True)
        self._bind(self.output_names[1], stats_out, output=True)
        # ORT runs on its own stream: the inputs torch produced on the current stream must be ready.
        torch.cuda.current_stream(self.device).synchronize()
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise RuntimeError(f"onnxruntime run failed: {first_line(exc)}") from exc
        finally:
            self._binding.clear_binding_inputs()
        return output, stats_out

    def _allocate(self, inputs):
        """The two output tensors for these inputs' shape: ORT allocates them once on the device, and their
        shapes size torch buffers that every later run writes into."""
        import torch

        for name, tensor in zip(INPUT_NAMES, inputs):
            self._bind(name, tensor)
        for name in self.output_names:
            self._binding.bind_output(name, "cuda", self.device.index or 0)
        torch.cuda.current_stream(self.device).synchronize()
        self._session.run_with_iobinding(self._binding)
        shapes = [o.shape() for o in self._binding.get_outputs()]
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        return tuple(torch.empty(tuple(s), dtype=torch.float32, device=self.device) for s in shapes)

    def close(self) -> None:
        if not self._closed:
            self._binding = None
            self._session = None
            self._outputs.clear()
        super().close()
