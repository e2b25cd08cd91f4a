"""What machine a benchmark ran on: CPU, cores, GPU, library versions, load.

Every report carries this block so that figures are never read without their machine. Optional
libraries (onnxruntime, tensorrt, mediapipe) are reported as None when they do not import, never
required.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from vcam.bench.flops import cpu_peak_tflops, gpu_peak_tflops, read_cpuinfo


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # not installed, or a broken install: both mean "not usable here"
        return None
    return str(getattr(module, "__version__", "unknown"))


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo or the platform), "unknown" where hidden."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def gpu_info() -> dict | None:
    """Name, memory, capability and CUDA/cuDNN versions of GPU 0; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "peak_tflops": {p: gpu_peak_tflops(props.name, p)[0] for p in ("fp16", "bf16", "tf32", "fp32")},
    }


def collect() -> dict:
    """A JSON-ready description of this machine and the software stack."""
    import torch

    cpuinfo = read_cpuinfo()
    mhz = cpuinfo["mhz"]
    cores = usable_cores()
    peak, peak_note = cpu_peak_tflops(cores, mhz, cpuinfo["flags"], cpuinfo["vendor"], cpuinfo["family"])
    ort = None
    try:
        import onnxruntime

        ort = {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    except Exception:
        ort = None
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": {
            "model": cpu_model(),
            "cores": cores,
            "logical_cpus": os.cpu_count(),
            "mhz": mhz,
            "isa": torch.backends.cpu.get_cpu_capability(),
            "fp32_peak_tflops_estimate": round(peak, 3) if peak else None,
            "peak_note": peak_note,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "gpu": gpu_info(),
        "versions": {
            "vcam": _version("vcam"),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime": ort,
            "tensorrt": _version("tensorrt"),
            "opencv": _version("cv2"),
            "mediapipe": _version("mediapipe"),
            "numpy": _version("numpy"),
        },
        "git_commit": _git_commit(),
    }


def describe(info: dict) -> str:
    """One line for logs and Markdown: CPU, cores, GPU, torch and ONNX Runtime versions."""
    cpu = info["cpu"]
    gpu = info["gpu"]["name"] if info.get("gpu") else "no GPU"
    ort = info["versions"]["onnxruntime"]
    return (f"{cpu['model']} ({cpu['cores']} cores, {cpu['isa']}), {gpu}; torch {info['versions']['torch']}, "
            f"onnxruntime {ort['version'] if ort else 'absent'}, tensorrt {info['versions']['tensorrt'] or 'absent'}; "
            f"load average {', '.join(f'{x:.2f}' for x in cpu['load_average'] or [])}")
