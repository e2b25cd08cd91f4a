"""TensorRT 10 backend: named-tensor API, torch CUDA tensors in and out, engines cached on disk.

Build (once per input shape) is separate from run: the cached ONNX export (onnx_cache) is parsed, built
with `build_serialized_network` for one fixed shape (a fixed profile lets TensorRT pick the fastest
kernels for the camera's one resolution), and the serialized engine is cached under the user cache dir,
keyed by (ONNX sha256, GPU name, TensorRT version, precision, shape). A cached file that does not
deserialize (truncated write, another TensorRT build) is deleted and rebuilt.
Run binds tensor addresses by name (`set_input_shape`, `set_tensor_address`) and calls `execute_async_v3`
on the current torch CUDA stream, so it orders with the torch work around it without a sync.
I/O stays float32; fp16 sets the builder's FP16 flag (TensorRT runs layers in half where it is faster).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch

from engine import paths
from engine.backends.base import INPUT_NAMES, Backend
from engine.backends.onnx_cache import cached_onnx, max_cache_bytes, prune_cache
from engine.weights import file_sha256

log = logging.getLogger(__name__)

_WORKSPACE_BYTES = 2 << 30


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("TensorRT is not installed: on an NVIDIA machine, pip install 'vcam[trt]'") from exc
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise RuntimeError(f"TensorRT {trt.__version__} is too old: the named-tensor API needs TensorRT 10")
    return trt


def engine_cache_path(onnx_path: Path, device: torch.device, precision: str, shape: tuple[int, ...],
                      trt_version: str) -> Path:
    """Cache file for one (ONNX, GPU, TensorRT version, precision, shape) combination."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-")
    dims = "x".join(str(int(d)) for d in shape)
    key = f"{file_sha256(onnx_path)[:16]}-{gpu}-trt{trt_version}-{precision}-{dims}"
    return paths.user_cache_dir() / "tensorrt" / f"{key}.engine"


class _Engine:
    """One deserialized engine and its execution context for one fixed input shape."""

    def __init__(self, trt, engine, shape):
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if tuple(inputs) != INPUT_NAMES:
            raise RuntimeError(f"TensorRT engine has inputs {inputs}, expected {list(INPUT_NAMES)}")
        self.shape = shape
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None


class TensorRTBackend(Backend):
    """Runs a TensorRT engine built from the model's ONNX export (CUDA only, fp32 or fp16)."""

    name = "tensorrt"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp16", opset: int = 17):
        super().__init__(model, device, precision)
        if device.type != "cuda":
            raise RuntimeError("TensorRT needs a CUDA device")
        self._trt = _import_tensorrt()
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        self._model = model
        self._opset = opset
        self.onnx_path = cached_onnx(model, opset)
        self._engines: dict[tuple[int, ...], _Engine] = {}

    # -- build ---------------------------------------------------------------------------------------------

    def build(self, batch: int, height: int, width: int) -> Path:
        """Build (or find) the engine for one input shape and return its cache path.

        Raises:
            RuntimeError: the ONNX parse or the engine build failed.
        """
        trt = self._trt
        shape = (batch, height, width)
        path = engine_cache_path(self.onnx_path, self.device, self.precision, shape, trt.__version__)
        if path.is_file():
            return path
        log.info("building TensorRT %s engine for %dx%dx%d (minutes the first time): %s",
                 self.precision, batch, height, width, path)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {self.onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, dims in self._input_shapes(batch, height, width).items():
            profile.set_shape(name, dims, dims, dims)
        config.add_optimization_profile(profile)
        with torch.cuda.device(self.device):
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
        paths.ensure_dir(path.parent)
        # Exclusive, unguessable temporary file (nothing planted under a predictable name is written through).
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(serialized))
        os.replace(tmp, path)
        prune_cache(path.parent, max_cache_bytes(), keep=(path,))  # bounded, like the ONNX cache
        return path

    def _input_shapes(self, batch: int, height: int, width: int) -> dict[str, tuple[int, ...]]:
        return {"composite": (batch, 3, height, width), "mask": (batch, 1, height, width),
                "reference": (batch, 1, height, width), "stats_in": (batch, self.stats_size), "momentum": (1,)}

    def _load(self, batch: int, height: int, width: int) -> _Engine:
        shape = (batch, height, width)
        path = self.build(*shape)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:  # truncated or from another TensorRT build: rebuild once
            log.warning("cached TensorRT engine %s is unusable; rebuilding it", path)
            path.unlink(missing_ok=True)
            path = self.build(*shape)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialize the engine it just built: {path}")
        loaded = _Engine(self._trt, engine, shape)
        for name, dims in self._input_shapes(*shape).items():
            loaded.context.set_input_shape(name, dims)
        loaded.outputs = (torch.empty(self._output_shape(batch, height, width), dtype=torch.float32,
                                      device=self.device),
                          torch.empty((batch, self.stats_size), dtype=torch.float32, device=self.device))
        return loaded

    # -- run -----------------------------------------------------------------------------------------------

    def run(self, composite, mask, reference, stats_in, momentum):
        momentum = self.check_inputs(composite, mask, reference, stats_in, momentum)
        b, _, h, w = composite.shape
        key = (int(b), int(h), int(w))
        if key not in self._engines:
            self._engines[key] = self._load(*key)
        loaded = self._engines[key]
        inputs = [t.detach().to(torch.float32).contiguous() for t in (composite, mask, reference)]
        inputs.append(stats_in.detach().to(torch.float32).clone())  # may alias last call's stats_out
        inputs.append(momentum.contiguous())
        context = loaded.context
        for name, tensor in zip(INPUT_NAMES, inputs):
            context.set_tensor_address(name, tensor.data_ptr())
        for name, tensor in zip(self.output_names, loaded.outputs):
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        # The inputs above are temporaries: keep them alive until the stream has consumed them.
        for tensor in inputs:
            tensor.record_stream(stream)
        return loaded.outputs

    def close(self) -> None:
        if not self._closed:
            self._engines.clear()
            self._runtime = None
            self._model = None
            torch.cuda.empty_cache()
        super().close()
