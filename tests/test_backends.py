"""engine.backends: one interface, parity torch vs ONNX Runtime (vs TensorRT where it exists), the auto
choice, caching, clear errors; and the `vcam export` CLI."""

from __future__ import annotations

import importlib.util
import logging
import sys

import numpy as np
import pytest
import torch

from engine.backends import AUTO_ORDER, create_backend
from engine.backends.onnx_cache import cached_onnx, onnx_cache_path
from engine.export import example_inputs
from engine.phnet import create_model
from vcam.cli import main

PARITY_SIZES = [(64, 96), (144, 256)]


def _np(x) -> np.ndarray:
    """A backend's output as NumPy (the CPU backend returns NumPy, the torch one tensors)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _diff(a, b) -> float:
    return float(np.abs(_np(a) - _np(b)).max())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("phnet-xs").eval()


@pytest.fixture(scope="module")
def cpu_pair(model):
    backends = (create_backend("torch", model, "cpu"), create_backend("onnxruntime", model, "cpu"))
    yield backends
    for b in backends:
        b.close()


@pytest.mark.parametrize("size", PARITY_SIZES)
def test_torch_vs_onnxruntime_parity_cpu(cpu_pair, model, size):
    torch_backend, ort_backend = cpu_pair
    inputs = example_inputs(model, *size, seed=size[0])
    h_t, s_t = (t.clone() for t in torch_backend.run(*inputs))
    h_o, s_o = ort_backend.run(*(t.numpy() for t in inputs))
    assert isinstance(h_o, np.ndarray) and isinstance(s_o, np.ndarray)  # the CPU backend: NumPy in and out
    assert h_o.shape == tuple(h_t.shape) and s_o.shape == tuple(s_t.shape) == (1, model.stats_size)
    assert _diff(h_t, h_o) <= 1e-4 and _diff(s_t, s_o) <= 1e-4


def test_affine_head_parity_cpu():
    """The colour-transform head through both backends: the coefficient grid and the statistics agree."""
    torch.manual_seed(1)
    affine_model = create_model("phnet-xs", output="affine").eval()
    with torch.no_grad():
        for p in list(affine_model.head.parameters()) + list(affine_model.global_transform.fc2.parameters()):
            p.normal_(std=0.05)  # zero-initialised layers: make the outputs non-trivial
    with create_backend("torch", affine_model, "cpu") as tb, create_backend("onnxruntime", affine_model, "cpu") as ob:
        assert tb.output_names == ob.output_names == ("coefficients", "stats_out")
        inputs = example_inputs(affine_model, 64, 96, seed=3)
        c_t, s_t = (t.clone() for t in tb.run(*inputs))
        c_o, s_o = ob.run(*(t.numpy() for t in inputs))
    assert tuple(c_t.shape) == c_o.shape == (1, 12, 16, 24)
    assert _diff(c_t, c_o) <= 1e-4 and _diff(s_t, s_o) <= 1e-4


def test_stats_model_parity_and_state_feedback(tmp_path):
    """The stats model through both backends, feeding stats_out back as stats_in (aliasing guard)."""
    stats = create_model("stats").eval()
    with create_backend("torch", stats, "cpu") as tb, create_backend("ort", stats, "cpu") as ob:
        comp, mask, ref, stats_in, _ = example_inputs(stats, 64, 64)
        st_t, st_o = stats_in, stats_in.numpy()
        for momentum in (0.0, 0.9, 0.9):
            h_t, st_t = tb.run(comp, mask, ref, st_t, momentum)
            h_o, st_o = ob.run(comp.numpy(), mask.numpy(), ref.numpy(), st_o, momentum)
            st_t, st_o = tb.copy(st_t), ob.copy(st_o)
            assert _diff(h_t, h_o) <= 1e-4 and _diff(st_t, st_o) <= 1e-4


def test_onnx_export_is_cached_and_a_corrupt_file_is_replaced(model):
    path = cached_onnx(model)
    assert path == onnx_cache_path(model) and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert cached_onnx(model).stat().st_mtime_ns == mtime  # reused, not exported again
    path.write_bytes(b"truncated")
    with create_backend("onnxruntime", model, "cpu") as backend:  # notices, exports again, runs
        harmonized, _ = backend.run(*(t.numpy() for t in example_inputs(model, 32, 32)))
    assert np.isfinite(harmonized).all() and path.stat().st_size > 1000


def test_auto_on_cpu_picks_onnxruntime_and_says_why(model, caplog):
    caplog.set_level(logging.INFO, logger="engine.backends")
    with create_backend("auto", model, "auto") as backend:
        expected = "onnxruntime" if not torch.cuda.is_available() else backend.name
        assert backend.name == expected
    if not torch.cuda.is_available():
        assert "no CUDA device" in caplog.text and "onnxruntime (cpu" in caplog.text
    assert AUTO_ORDER.index(("onnxruntime", "cpu")) < AUTO_ORDER.index(("torch", "cpu"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_requested_tensorrt_without_it_is_one_runtime_error(model):
    with pytest.raises(RuntimeError, match="backend 'tensorrt' cannot start") as info:
        create_backend("tensorrt", model, "cuda" if torch.cuda.is_available() else "cpu",
                       "fp16" if torch.cuda.is_available() else "fp32")
    assert "\n" not in str(info.value)


def test_auto_goes_on_when_tensorrt_does_not_import(model, monkeypatch, caplog):
    """TensorRT made unimportable (as on any machine without it): the real TensorRTBackend constructor fails,
    `auto` takes the next candidate and says why in its one line."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    caplog.set_level(logging.INFO, logger="engine.backends")
    order = (("tensorrt", "cpu"), ("onnxruntime", "cpu"))
    with create_backend("auto", model, "cpu", order=order) as backend:
        assert backend.name == "onnxruntime" and backend.array_kind == "numpy"
    assert "chosen by auto (tensorrt (cpu): TensorRT is not installed" in caplog.text
    with pytest.raises(RuntimeError, match="no backend could start: tensorrt \\(cpu\\): TensorRT is not"):
        create_backend("auto", model, "cpu", order=order[:1])


def test_tensorrt_construction_failure_is_one_reason_not_an_escape(model):
    """Whatever stops a candidate's constructor (here the real TensorRTBackend on a device it cannot use, or
    without TensorRT) is a reason in `auto`'s message, never an exception out of it."""
    with pytest.raises(RuntimeError) as info:
        create_backend("auto", model, "cpu", order=(("tensorrt", "cpu"),))
    assert "\n" not in str(info.value) and "tensorrt (cpu): " in str(info.value)
    if importlib.util.find_spec("tensorrt") is not None:
        assert "needs a CUDA device" in str(info.value)


@pytest.mark.tensorrt
def test_tensorrt_build_failure_falls_back_in_auto(model, caplog):
    """A graph TensorRT cannot parse fails the build in the constructor (not in the first run), and `auto`
    goes on to the next CUDA candidate."""
    path = cached_onnx(model)
    good = path.read_bytes()
    path.write_bytes(b"not an onnx graph")
    caplog.set_level(logging.INFO, logger="engine.backends")
    try:
        with create_backend("auto", model, "cuda", order=(("tensorrt", "cuda"), ("torch", "cuda"))) as backend:
            assert backend.name == "torch"
        assert "tensorrt (cuda): TensorRT" in caplog.text
    finally:
        path.write_bytes(good)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_requested_cuda_without_it_is_a_clear_error(model):
    with pytest.raises(RuntimeError, match="CUDA"):
        create_backend("torch", model, "cuda")


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("openvino", model)
    with pytest.raises(ValueError, match="fp16"):
        create_backend("torch", model, "cpu", "fp16")
    with pytest.raises(ValueError, match="precision"):
        create_backend("torch", model, "cpu", "int8")
    with pytest.raises(ValueError, match="device"):
        create_backend("torch", model, "tpu")


def test_input_validation_and_idempotent_close(model):
    backend = create_backend("torch", model, "cpu")
    comp, mask, ref, stats_in, momentum = example_inputs(model, 32, 32)
    with pytest.raises(ValueError, match="multiples of 8"):
        backend.run(comp[..., :30], mask[..., :30], ref[..., :30], stats_in, momentum)
    with pytest.raises(ValueError, match="mask must be"):
        backend.run(comp, mask[..., :16], ref, stats_in, momentum)
    with pytest.raises(ValueError, match="stats_in"):
        backend.run(comp, mask, ref, stats_in[:, :5], momentum)
    with pytest.raises(TypeError, match="torch.Tensor"):
        backend.run(comp.numpy(), mask, ref, stats_in, momentum)
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="after close"):
        backend.run(comp, mask, ref, stats_in, momentum)


@pytest.mark.gpu
@pytest.mark.parametrize("size", PARITY_SIZES)
def test_cuda_backends_match_cpu_torch(model, size):
    import onnxruntime as ort

    inputs = example_inputs(model, *size)
    with create_backend("torch", model, "cpu") as ref:
        h_ref, s_ref = (t.clone() for t in ref.run(*inputs))
    cuda_inputs = [t.cuda() for t in inputs]
    names = ["torch"] + (["onnxruntime"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    for name in names:  # ONNX Runtime's CUDA provider binds the same torch CUDA tensors
        with create_backend(name, model, "cuda", "fp32") as b:
            assert b.array_kind == "torch"
            for _ in range(2):  # the second run writes into the buffers the first allocated
                h, s = b.run(*cuda_inputs)
                assert (h.cpu() - h_ref).abs().max() <= 1e-3 and (s.cpu() - s_ref).abs().max() <= 1e-3


def test_onnxruntime_on_cuda_is_its_own_class_and_says_what_is_missing(model):
    """The CUDA flavour binds torch tensors (OnnxRuntimeCudaBackend); without the CUDA provider (the CPU
    onnxruntime wheel) it refuses in one line, before any session starts."""
    import onnxruntime as ort

    from engine.backends import _backend_class
    from engine.backends.base import Device
    from engine.backends.onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeCudaBackend

    assert _backend_class("onnxruntime", "cuda") is OnnxRuntimeCudaBackend
    assert _backend_class("onnxruntime", "cpu") is OnnxRuntimeBackend
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="no CUDAExecutionProvider .*pip install 'vcam\\[gpu\\]'"):
            OnnxRuntimeCudaBackend(model, Device("cuda", 0), "fp32")
    with pytest.raises(RuntimeError, match="runs on the CPU"):
        OnnxRuntimeBackend(model, Device("cuda", 0), "fp32")


@pytest.mark.tensorrt
@pytest.mark.parametrize("size", PARITY_SIZES)
def test_tensorrt_parity_and_engine_cache(model, size):
    """TensorRT fp32 vs torch CUDA fp32 (<= 1e-3: TF32 tactics); the engine is cached and reused."""
    inputs = [t.cuda() for t in example_inputs(model, *size)]
    with create_backend("torch", model, "cuda", "fp32") as tb:
        h_t, s_t = (t.clone() for t in tb.run(*inputs))
    with create_backend("tensorrt", model, "cuda", "fp32", max_size=256) as trt_backend:
        path = trt_backend.engine_path  # built in the constructor, before any run
        assert path.is_file()
        h, s = trt_backend.run(*inputs)
        torch.cuda.synchronize()
        assert (h - h_t).abs().max().item() <= 1e-3 and (s - s_t).abs().max().item() <= 1e-3
        assert trt_backend.build(1, *size).is_file()  # a fixed-shape engine (vcam export tensorrt)
    path.write_bytes(b"corrupt")  # a corrupt cached engine is rebuilt, not fatal
    with create_backend("tensorrt", model, "cuda", "fp32") as trt_backend:
        h, _ = trt_backend.run(*inputs)
        torch.cuda.synchronize()
        assert (h - h_t).abs().max().item() <= 1e-3


# -- vcam export --------------------------------------------------------------------------------------------


def test_cli_export_onnx_fixed_size_prints_parity(tmp_path, capsys):
    out = tmp_path / "stats.onnx"
    assert main(["export", "onnx", "--model", "stats", "--out", str(out), "--height", "64", "--width", "96"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "onnx.checker passed" in printed and "max abs diff" in printed
    import onnx

    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 64, 96]


def test_cli_export_onnx_dynamic_from_weights(tmp_path, capsys):
    from engine.weights import save_weights

    weights = save_weights(create_model("phnet-xs", widths=(4, 4, 8, 8, 8, 8)), tmp_path / "tiny.safetensors")
    out = tmp_path / "tiny.onnx"
    assert main(["export", "onnx", "--weights", str(weights), "--out", str(out), "--dynamic"]) == 0
    printed = capsys.readouterr().out
    assert "dynamic size" in printed and printed.count("max abs diff") == 2


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "onnx", "--model", "stats", "--height", "64"]) == 1
    assert "give both --height and --width" in capsys.readouterr().err
    assert main(["export", "onnx", "--model", "nope", "--out", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "unknown model" in err and err.count("\n") == 1
    assert main(["export", "onnx", "--weights", str(tmp_path / "missing.safetensors")]) == 1


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_cli_export_tensorrt_without_tensorrt_says_how_to_get_it(capsys):
    assert main(["export", "tensorrt", "--model", "stats", "--height", "64", "--width", "64"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "pip install 'vcam[trt]'" in err


def test_user_dirs_per_platform(monkeypatch, tmp_path):
    from engine import paths

    monkeypatch.delenv("VCAM_CACHE_DIR", raising=False)
    monkeypatch.delenv("VCAM_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.user_cache_dir("linux") == tmp_path / "xdg" / "vcam"
    assert paths.user_cache_dir("darwin").parts[-3:] == ("Library", "Caches", "vcam")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert paths.user_cache_dir("win32") == tmp_path / "local" / "vcam" / "Cache"
    monkeypatch.setenv("VCAM_CACHE_DIR", str(tmp_path / "override"))
    assert paths.user_cache_dir("linux") == tmp_path / "override"
    assert paths.cache_subdir("onnx").is_dir()
