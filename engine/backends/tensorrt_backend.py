"""TensorRT 10 backend: named-tensor API, torch CUDA tensors in and out, engines cached on disk.

Build is separate from run, and happens when the backend is constructed, never in the frame loop: the
model's ONNX graph (the one shipped beside the weights, engine.backends.graph; an export for other models)
is parsed and built with `build_serialized_network` for one optimization profile covering every input
size up to `max_size` (the Harmonizer's net_size; TensorRT picks kernels for the 16:9 webcam shape), with
a progress line per build phase, and the serialized engine is cached under the user cache dir, keyed by
(ONNX sha256, GPU name, TensorRT version, precision, profile). A cached file that does not deserialize
(truncated write, another TensorRT build) is deleted and rebuilt once. Any failure while building raises
RuntimeError from the constructor, so `auto` goes on to its next candidate.
`build_engine` (parse + build + serialize) needs no torch. Run binds tensor addresses by name
(`set_input_shape`, `set_tensor_address`) and calls `execute_async_v3` on the current torch CUDA stream,
so it orders with the torch work around it without a sync. I/O stays float32; fp16 sets the builder's
FP16 flag (TensorRT runs layers in half where it is faster).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from engine import paths
from engine.backends.base import INPUT_NAMES, Backend, TorchArrays
from engine.backends.graph import onnx_for
from engine.backends.onnx_cache import max_cache_bytes, prune_cache
from engine.errors import first_line
from engine.weights import file_sha256

log = logging.getLogger(__name__)

_WORKSPACE_BYTES = 2 << 30
_MIN_SIDE = 8  # engine.harmonizer.net_shape never goes below 8 px a side
_PROGRESS_EVERY_S = 5.0


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("TensorRT is not installed: on an NVIDIA machine, pip install 'vcam[trt]'") from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise RuntimeError(f"TensorRT {getattr(trt, '__version__', '?')} is too old: the named-tensor API "
                           "needs TensorRT 10")
    return trt


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def profile_shapes(stats_size: int, smallest: tuple[int, int], best: tuple[int, int],
                   largest: tuple[int, int], batch: int = 1) -> Shapes:
    """name -> (min, opt, max) input dims of one optimization profile over image sizes (h, w)."""
    def image(channels, hw):
        return (batch, channels, *hw)

    sizes = (smallest, best, largest)
    return {"composite": tuple(image(3, s) for s in sizes), "mask": tuple(image(1, s) for s in sizes),
            "reference": tuple(image(1, s) for s in sizes), "stats_in": ((batch, stats_size),) * 3,
            "momentum": ((1,),) * 3}


def _progress_monitor(trt):
    """A TensorRT IProgressMonitor that logs the build's top-level phases (at most every few seconds)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.started, self.said = time.monotonic(), 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            now = time.monotonic()
            if parent_phase is None and now - self.said >= _PROGRESS_EVERY_S:
                log.info("TensorRT build: %s (%.0f s so far)", phase_name, now - self.started)
                self.said = now

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return Progress()


def build_engine(trt, logger, onnx_path: Path, precision: str, shapes: Shapes) -> bytes:
    """Parse `onnx_path` and build a serialized engine for one profile (`shapes`). No torch.

    Raises:
        RuntimeError: the ONNX parse or the build failed.
    """
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    profile = builder.create_optimization_profile()
    dynamic = {network.get_input(i).name for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)}
    for name, (low, best, high) in shapes.items():
        if name in dynamic:  # a static input (momentum) takes no profile
            profile.set_shape(name, low, best, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(memoryview(serialized))


def graph_stats_size(trt, logger, onnx_path: Path) -> int:
    """The statistics size (stats_in's second dim) the ONNX graph was exported with. No torch.

    Raises:
        RuntimeError: the graph does not parse or has no fixed stats_in size.
    """
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {parser.get_error(0)}")
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name == "stats_in" and int(tensor.shape[1]) > 0:
            return int(tensor.shape[1])
    raise RuntimeError(f"{onnx_path} has no stats_in input of a fixed size")


def engine_cache_path(onnx_path: Path, gpu_name: str, precision: str, shapes: Shapes, trt_version: str) -> Path:
    """Cache file for one (ONNX, GPU, TensorRT version, precision, profile) combination."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    dims = "-".join("x".join(str(int(d)) for d in dims[1:]) for dims in shapes["composite"])
    if len(set(shapes["composite"])) == 1:  # a fixed shape: one size
        dims = "x".join(str(int(d)) for d in (shapes["composite"][0][0], *shapes["composite"][0][2:]))
    key = f"{file_sha256(onnx_path)[:16]}-{gpu}-trt{trt_version}-{precision}-{dims}"
    return paths.user_cache_dir() / "tensorrt" / f"{key}.engine"


def _write_atomic(path: Path, data: bytes) -> None:
    paths.ensure_dir(path.parent)
    # Exclusive, unguessable temporary file (nothing planted under a predictable name is written through).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    prune_cache(path.parent, max_cache_bytes(), keep=(path,))  # bounded, like the ONNX cache


def cached_engine(trt, logger, onnx_path: Path, device, precision: str, shapes: Shapes,
                  refresh: bool = False) -> Path:
    """The engine file for (graph, GPU, precision, profile): from the cache, or built now (minutes the first
    time) with a progress line, written atomically. `device` is a torch CUDA device (its GPU's name keys
    the cache).

    Raises:
        RuntimeError: the ONNX parse or the engine build failed.
    """
    import torch

    path = engine_cache_path(onnx_path, torch.cuda.get_device_name(device), precision, shapes, trt.__version__)
    if path.is_file() and not refresh:
        log.info("TensorRT: %s engine from the cache (%s)", precision, path.name)
        return path
    log.info("TensorRT: building the %s engine for inputs up to %s from %s (minutes the first time; "
             "cached in %s)", precision, "x".join(map(str, shapes["composite"][2][2:])), onnx_path.name,
             path.parent)
    started = time.monotonic()
    with torch.cuda.device(device):
        data = build_engine(trt, logger, onnx_path, precision, shapes)
    _write_atomic(path, data)
    log.info("TensorRT: engine built in %.0f s", time.monotonic() - started)
    return path


def webcam_shape(max_size: int) -> tuple[int, int]:
    """(h, w) of a 16:9 landscape frame at `max_size` (engine.harmonizer.net_shape's rule): the shape the
    engine is tuned for."""
    return max(_MIN_SIDE, int(round(max_size * 9 / 16 / 8)) * 8), max_size


class TensorRTBackend(TorchArrays, Backend):
    """Runs a TensorRT engine built from the model's ONNX graph (CUDA only, fp32 or fp16), built or loaded
    from the cache in the constructor for every input size up to `max_size`."""

    name = "tensorrt"

    def __init__(self, model, device, precision: str = "fp16", max_size: int = 256, opset: int = 17):
        import torch

        super().__init__(torch.device(str(device)), precision)
        self._trt = import_tensorrt()
        if self.device.type != "cuda":
            raise RuntimeError("TensorRT needs a CUDA device")
        if not isinstance(max_size, int) or max_size < _MIN_SIDE or max_size % 8:
            raise ValueError(f"max_size must be a positive multiple of 8, got {max_size!r}")
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        self._buffers: dict[tuple[int, ...], tuple] = {}
        try:
            self.onnx_path = onnx_for(model, opset)
            self.stats_size = graph_stats_size(self._trt, self._logger, self.onnx_path)
            self.model_name = getattr(model, "name", self.onnx_path.stem)
            shapes = profile_shapes(self.stats_size, (_MIN_SIDE, _MIN_SIDE), webcam_shape(max_size),
                                    (max_size, max_size))
            self.engine_path = self._cached_engine(shapes)
            self._engine, self._context = self._deserialize(shapes)
        except RuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - TensorRT raises its own types: one reason for `auto`
            raise RuntimeError(f"TensorRT engine build failed: {type(exc).__name__}: {first_line(exc)}") from exc
        self.output_names = tuple(n for n in self._io_names() if n not in INPUT_NAMES)

    # -- build ---------------------------------------------------------------------------------------------

    def _cached_engine(self, shapes: Shapes, refresh: bool = False) -> Path:
        return cached_engine(self._trt, self._logger, self.onnx_path, self.device, self.precision, shapes, refresh)

    def build(self, batch: int, height: int, width: int) -> Path:
        """Build (or find) an engine for one fixed input shape and return its cache path.

        Raises:
            RuntimeError: the ONNX parse or the engine build failed.
        """
        hw = (height, width)
        return self._cached_engine(profile_shapes(self.stats_size, hw, hw, hw, batch))

    def _deserialize(self, shapes: Shapes):
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:  # truncated or from another TensorRT build: rebuild once
            log.warning("cached TensorRT engine %s is unusable; rebuilding it", self.engine_path)
            self.engine_path.unlink(missing_ok=True)
            self.engine_path = self._cached_engine(shapes, refresh=True)
            engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialize the engine it just built: {self.engine_path}")
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == self._trt.TensorIOMode.INPUT]
        if tuple(inputs) != INPUT_NAMES:
            raise RuntimeError(f"TensorRT engine has inputs {inputs}, expected {list(INPUT_NAMES)}")
        return engine, context

    def _io_names(self) -> list[str]:
        return [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]

    # -- run -----------------------------------------------------------------------------------------------

    def _outputs_for(self, shapes: dict[str, tuple[int, ...]]):
        """Set the input shapes; the output tensors for them, allocated once per shape."""
        import torch

        key = shapes["composite"]
        for name, dims in shapes.items():
            if -1 not in tuple(self._engine.get_tensor_shape(name)):
                continue  # a static input (momentum)
            if not self._context.set_input_shape(name, dims):
                raise RuntimeError(f"TensorRT engine does not take {name} of shape {dims} (built for sizes up "
                                   f"to {self.engine_path.stem.rsplit('-', 1)[-1]})")
        if key not in self._buffers:
            self._buffers[key] = tuple(
                torch.empty(tuple(self._context.get_tensor_shape(n)), dtype=torch.float32, device=self.device)
                for n in self.output_names)
        return self._buffers[key]

    def run(self, composite, mask, reference, stats_in, momentum):
        import torch

        momentum = self.check_inputs(composite, mask, reference, stats_in, momentum)
        inputs = [t.detach().to(torch.float32).contiguous() for t in (composite, mask, reference)]
        inputs.append(stats_in.detach().to(torch.float32).clone())  # may alias last call's stats_out
        inputs.append(momentum.contiguous())
        outputs = self._outputs_for({n: tuple(t.shape) for n, t in zip(INPUT_NAMES, inputs)})
        context = self._context
        for name, tensor in zip(INPUT_NAMES, inputs):
            context.set_tensor_address(name, tensor.data_ptr())
        for name, tensor in zip(self.output_names, outputs):
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        # The inputs above are temporaries: keep them alive until the stream has consumed them.
        for tensor in inputs:
            tensor.record_stream(stream)
        return outputs

    def close(self) -> None:
        if not self._closed:
            import torch

            self._buffers.clear()
            self._context = self._engine = self._runtime = None
            torch.cuda.empty_cache()
        super().close()
