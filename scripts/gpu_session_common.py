"""What the GPU session's parts share (scripts/gpu_session.py): the log, JSON files, percentiles, timed
calls on a CUDA device or a CPU, and one forward of a model in a precision/graph variant."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


class Log:
    """Print and append to OUT/log.txt at once (a run cut off keeps every line written so far)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.monotonic()

    def __call__(self, message: str = "") -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "n": int(a.size)}


def time_calls(fn, device, warmup: int, box_s: float, max_iters: int) -> list[float]:
    """Milliseconds per call after `warmup` calls: CUDA events around each call on a GPU (one
    synchronisation at the end), perf_counter on a CPU; stops at max_iters or after box_s seconds."""
    import torch

    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    times, events = [], []
    t_end = time.perf_counter() + box_s
    while len(times) + len(events) < max_iters and time.perf_counter() < t_end:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
            if len(events) % 50 == 0:
                torch.cuda.synchronize()  # bounds the host's run-ahead; the GPU stays busy in between
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    if cuda:
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) for s, e in events]
    return times


class Unavailable(RuntimeError):
    """A variant this device cannot run (half precision and CUDA graphs on a CPU)."""


def engine_runner(model, device, variant: str, size: tuple[int, int]):
    """A no-argument function that runs one forward of `model` in `variant`, and its description.

    Variants: "fp32 eager", "fp16 eager", "fp16 graph", "bf16 graph", "fp16 graph cl" (channels-last).
    A graph variant records the forward once as a CUDA graph on static inputs and replays it.
    """
    import copy

    import torch

    precision, mode = variant.split()[0], variant.split()[1]
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if device.type != "cuda" and variant != "fp32 eager":
        raise Unavailable("needs CUDA")
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    h, w = size
    gen = torch.Generator().manual_seed(0)
    composite = torch.rand(1, 3, h, w, generator=gen).to(device, dtype)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    mask = ((yy / 0.8) ** 2 + (xx / 0.5) ** 2 <= 1).float()[None, None].to(device, dtype)
    reference = 1 - mask
    stats = torch.zeros(1, net.stats_size, device=device, dtype=dtype)
    momentum = torch.full((1,), 0.8, device=device, dtype=dtype)
    if variant.endswith(" cl"):
        net = net.to(memory_format=torch.channels_last)
        composite = composite.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode():
            return net(composite, mask, reference, stats, momentum)

    if mode == "eager":
        return forward
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay
