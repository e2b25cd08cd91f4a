"""The network alone: every backend × precision × model × net size, through `engine.backends.create_backend`.

Each configuration builds the backend once (an ONNX export or a TensorRT build happens there, untimed),
then times `backend.run` on fixed inputs of the network's shape: warm-up, synchronise, time (timing.py).
A configuration that cannot run here (fp16 on a CPU, TensorRT without a GPU) is a row with status
"skipped" and the backend's own reason. Models have seeded random weights: timing does not depend on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vcam.benchmark.timing import time_calls

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class EngineBenchSettings:
    """What to time; each tuple is one axis of the grid."""

    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = PRECISIONS
    models: tuple[str, ...] = ("phnet-xs",)
    sizes: tuple[int, ...] = (256,)
    device: str = "auto"
    runs: int = 20
    warmup: int = 3
    max_seconds: float = 5.0
    threads: int | None = None  # CPU threads for ONNX Runtime's pool and torch's


def parse_list(text: str | None, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """"a,b" -> ("a", "b"), each checked against `allowed`.

    Raises:
        ValueError: an empty list or an unknown entry.
    """
    items = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    unknown = [t for t in items if t not in allowed]
    if not items or unknown:
        raise ValueError(f"{option}: expected a comma list of {', '.join(allowed)}, got {text!r}")
    return items


def parse_sizes(text: str) -> tuple[int, ...]:
    """"256,512" -> (256, 512).

    Raises:
        ValueError: not positive multiples of 8.
    """
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s < 8 or s % 8 for s in sizes):
        raise ValueError(f"--sizes: expected positive multiples of 8, e.g. 256,512, got {text!r}")
    return sizes


def _time_one(backend, size: int, settings: EngineBenchSettings) -> dict:
    import torch

    device = torch.device(str(backend.device))  # the CPU backend's is torch-free; it reads CPU tensors as arrays
    composite = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: size, size // 4: 3 * size // 4] = 1.0  # a person-shaped block, bottom centre
    mask, reference = mask.to(device), (1 - mask).to(device)
    stats_in = torch.zeros(1, backend.stats_size, device=device)
    momentum = torch.tensor([0.8])
    outputs = []

    def call():
        outputs[:] = backend.run(composite, mask, reference, stats_in, momentum)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    timing = time_calls(call, warmup=settings.warmup, runs=settings.runs, sync=sync,
                        max_seconds=settings.max_seconds)
    finite = all(backend.all_finite(t) for t in outputs)  # NumPy (the CPU backend) or torch
    return {"status": "ok", **timing.summary(), "finite": finite}


def run_engine_bench(settings: EngineBenchSettings) -> list[dict]:
    """One row per backend × precision × model × size, timed or skipped with the reason."""
    import torch

    from engine import create_model
    from engine.backends import create_backend

    if settings.threads:
        torch.set_num_threads(settings.threads)  # this thread runs torch; ONNX Runtime gets it below
    rows = []
    for model_name in settings.models:
        torch.manual_seed(0)  # the same weights every run: the ONNX/TensorRT caches are reused
        model = create_model(model_name).eval()
        for backend_name in settings.backends:
            for precision in settings.precisions:
                key = {"backend": backend_name, "precision": precision, "model": model_name}
                try:
                    backend = create_backend(backend_name, model, settings.device, precision, settings.threads)
                except (RuntimeError, ValueError) as exc:
                    rows.append({**key, "device": settings.device, "size": None, "status": "skipped",
                                 "reason": str(exc).strip().splitlines()[0]})
                    continue
                with backend:
                    for size in settings.sizes:
                        row = {**key, "device": backend.device.type, "size": size}
                        log.info("timing %s %s %s %s at %d", backend_name, backend.device.type, precision,
                                 model_name, size)
                        rows.append({**row, **_time_one(backend, size, settings)})
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Each row's speed-up over torch fp32 for the same device, model and size (where that row ran)."""
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:
        base = next((b for b in ok if b["backend"] == "torch" and b["precision"] == "fp32" and
                     (b["device"], b["model"], b["size"]) == (row["device"], row["model"], row["size"])), None)
        row["speedup"] = base["p50_ms"] / row["p50_ms"] if base and row["p50_ms"] else None


def auto_note(rows: list[dict]) -> list[str]:
    """What `auto` would pick on each device here (its order, engine.backends.AUTO_ORDER, among the backends
    that ran) next to the fastest one measured: a hint to re-check the order, not a verdict."""
    from engine.backends import AUTO_ORDER

    notes = []
    for device in sorted({r["device"] for r in rows if r["status"] == "ok"}):
        ran = [r for r in rows if r["status"] == "ok" and r["device"] == device]
        pick = next((name for name, dev in AUTO_ORDER if dev == device and any(r["backend"] == name for r in ran)),
                    None)
        fastest = min(ran, key=lambda r: r["p50_ms"])
        notes.append(f"auto on {device} picks {pick}; fastest row here: {fastest['backend']} "
                     f"{fastest['precision']} ({fastest['model']} at {fastest['size']}, {fastest['p50_ms']:.2f} ms)")
    return notes
