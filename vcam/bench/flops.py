"""FLOPs per frame and the device's peak, for "achieved TFLOP/s" and "fraction of peak".

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the *eager* model (one multiply-add
= 2 FLOPs, convolutions and matrix products only: normalisation and activations are memory-bound and
left out, as is usual). The count runs on the `meta` device, so a 1024² frame of the 40 M-parameter
model costs no compute; a model that cannot run on `meta` is counted on the CPU at a small size and
scaled by the pixel count (exact for a fully convolutional network whose cost is per pixel).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable

log = logging.getLogger(__name__)

# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets, by a substring of
# `torch.cuda.get_device_name()`. More specific names first. "tf32" is what fp32 convolutions run at when
# cuDNN's TF32 is on (PyTorch's default for convolutions); "fp32" is the plain CUDA-core rate.
GPU_PEAKS_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("H100 PCIe", {"fp16": 756.0, "bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("GH200", {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    ("A100", {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"fp16": 362.0, "bf16": 362.0, "tf32": 183.0, "fp32": 91.6}),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("A10", {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    ("RTX 4090", {"fp16": 165.0, "bf16": 165.0, "tf32": 82.6, "fp32": 82.6}),
    ("RTX 3090", {"fp16": 71.0, "bf16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)

# What the spec sheet promises is not what a dense GEMM reaches: measured figures where known.
GPU_MEASURED_NOTES = {
    "H200": "spec 989 TFLOP/s dense fp16/bf16; large dense GEMMs measure about 790 TFLOP/s",
}


def gpu_peak_tflops(device_name: str, precision: str) -> tuple[float | None, str]:
    """The data-sheet peak for a GPU and a precision.

    Args:
        device_name: e.g. "NVIDIA H200".
        precision: "fp16", "bf16", "tf32" or "fp32".

    Returns:
        (peak TFLOP/s or None when unknown, a short note saying where the figure comes from).
    """
    for key, peaks in GPU_PEAKS_TFLOPS:
        if key.lower() in device_name.lower():
            if precision in peaks:
                note = GPU_MEASURED_NOTES.get(key, f"{key} data sheet, dense")
                return peaks[precision], note
            return None, f"no {precision} peak known for {key}"
    return None, f"unknown GPU {device_name!r}: add it to vcam.bench.flops.GPU_PEAKS_TFLOPS"


def cpu_peak_tflops(cores: int, mhz: float | None, flags: set[str], vendor: str = "",
                    family: int | None = None) -> tuple[float | None, str]:
    """A rough fp32 peak for a CPU: cores × clock × FLOPs per cycle.

    FLOPs per cycle assumes two FMA pipes of the widest vector unit the flags advertise (AVX-512: 2×16
    lanes×2 = 64; AVX2+FMA: 32; SSE: 8), except AMD before Zen 5 (family < 26), whose AVX-512 runs on
    256-bit pipes (32). A hypervisor's reported clock is usually the base clock, so turbo can beat this.

    Args:
        cores: usable cores.
        mhz: clock in MHz, None when unknown.
        flags: CPU feature flags (as in /proc/cpuinfo).
        vendor: "AuthenticAMD", "GenuineIntel", ... ("" when unknown).
        family: the CPU family number, None when unknown.

    Returns:
        (estimated peak in TFLOP/s or None, the assumption written out).
    """
    if not mhz or cores < 1:
        return None, "unknown: the CPU clock is not reported"
    if "avx512f" in flags and vendor == "AuthenticAMD" and family is not None and family < 26:
        per_cycle, unit = 32, "AMD Zen 4: AVX-512 on 2 × 256-bit FMA pipes"
    elif "avx512f" in flags:
        per_cycle, unit = 64, "AVX-512, 2 FMA pipes (upper bound: some cores split AVX-512 in two)"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, unit = 32, "AVX2, 2 FMA pipes"
    else:
        per_cycle, unit = 8, "SSE, no FMA"
    peak = cores * mhz * 1e6 * per_cycle / 1e12
    return peak, f"estimate: {cores} cores × {mhz:.0f} MHz × {per_cycle} FLOP/cycle ({unit})"


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict:
    """{"mhz", "flags", "vendor", "family"} of the first CPU in /proc/cpuinfo (empty values where absent)."""
    if not os.path.exists(path):
        return {"mhz": None, "flags": set(), "vendor": "", "family": None}
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()

    def field(name: str) -> str | None:
        match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.M)
        return match.group(1).strip() if match else None

    mhz, flags, family = field("cpu MHz"), field("flags"), field("cpu family")
    return {"mhz": float(mhz) if mhz else None, "flags": set(flags.split()) if flags else set(),
            "vendor": field("vendor_id") or "", "family": int(family) if family and family.isdigit() else None}


def count_flops(model, make_inputs: Callable[[int, int, str], tuple], height: int, width: int,
                fallback_size: int = 64) -> tuple[int, str]:
    """FLOPs of one forward call of `model` at `height` × `width`.

    Args:
        model: an eager `torch.nn.Module` (left untouched: a deep copy is moved to `meta`).
        make_inputs: `(height, width, device) -> tuple of tensors` for the forward call.
        height, width: the frame size the network sees.
        fallback_size: the side of the CPU run when `meta` is not supported by the model.

    Returns:
        (FLOPs, how they were counted: "meta" or "cpu@64x64 scaled by pixels").

    Raises:
        RuntimeError: neither way of counting works for this model.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        meta_model = copy.deepcopy(model).to("meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            meta_model(*make_inputs(height, width, "meta"))
        return int(counter.get_total_flops()), "meta"
    except Exception as exc:  # data-dependent ops (e.g. .item()) cannot run on meta tensors
        log.debug("FLOP count on meta failed (%s); counting on the CPU and scaling", exc)
    try:
        cpu_model = copy.deepcopy(model).to("cpu").float()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            cpu_model(*make_inputs(fallback_size, fallback_size, "cpu"))
    except Exception as exc:
        raise RuntimeError(f"cannot count FLOPs of {type(model).__name__}: {exc}") from exc
    scale = (height * width) / float(fallback_size * fallback_size)
    return int(counter.get_total_flops() * scale), f"cpu@{fallback_size}x{fallback_size} scaled by pixels"


def achieved(flops: int | None, seconds: float, peak_tflops: float | None) -> tuple[float | None, float | None]:
    """(achieved TFLOP/s, fraction of the peak) for `flops` done in `seconds`; None where unknown."""
    if not flops or seconds <= 0:
        return None, None
    tflops = flops / seconds / 1e12
    return tflops, (tflops / peak_tflops if peak_tflops else None)


def measure_dense_tflops(device: str = "cpu", precision: str = "fp32", runs: int | None = None) -> tuple[float, str]:
    """The rate a large dense layer reaches here: the practical ceiling for this network's convolutions.

    Spec sheets overstate what any kernel reaches (an H200 measures ~790 of its 989 fp16 TFLOP/s) and a
    virtual CPU's clock is unknown, so "fraction of peak" is also given against this measured figure.
    On CUDA it is an 8192² matrix product (cuBLAS); on the CPU a 3×3 convolution, 256 -> 256 channels on
    a 64×64 map (oneDNN, the library the model's convolutions run on; MKL's sgemm takes a slow path on
    some AMD CPUs and would understate the ceiling).

    Args:
        device: "cpu" or "cuda".
        precision: "fp32", "fp16" or "bf16".
        runs: timed calls (default 5 on the CPU, 20 on CUDA).

    Returns:
        (TFLOP/s of the median call, what was measured).

    Raises:
        ValueError: unknown precision.
    """
    import torch
    import torch.nn.functional as F

    from vcam.bench.timing import time_calls

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"precision: expected one of {', '.join(dtypes)}, got {precision!r}")
    dtype = dtypes[precision]
    if device == "cuda":
        n = 8192
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        # fp32 convolutions run on TF32 tensor cores by default (cuDNN), fp32 matmuls do not: measure the
        # product the way the network's convolutions run, or fp32 rows would exceed 100 % of "dense".
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = bool(torch.backends.cudnn.allow_tf32)
        try:
            timing = time_calls(lambda: torch.mm(a, b), warmup=3, runs=runs or 20, sync=torch.cuda.synchronize)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        kind = "tf32" if precision == "fp32" and torch.backends.cudnn.allow_tf32 else precision
        return 2.0 * n**3 / (timing.p50_ms / 1000.0) / 1e12, f"torch.mm {n}² {kind} (cuBLAS)"
    channels, side = 256, 64
    x = torch.randn(1, channels, side, side, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype)
    with torch.inference_mode():
        timing = time_calls(lambda: F.conv2d(x, w, padding=1), warmup=2, runs=runs or 5)
    flops = 2.0 * channels * channels * 9 * side * side
    return flops / (timing.p50_ms / 1000.0) / 1e12, f"conv2d 3×3 {channels}->{channels} @ {side}² {precision} (oneDNN)"
