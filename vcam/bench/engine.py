"""The engine benchmark: the network alone, per backend × variant × precision × model × net size.

What is timed is one forward call on tensors already on the device (no upload, no resize, no lift):
the pure engine, apart from the pipeline (`vcam.bench.pipeline`). Two kinds of rows:

- backend rows (`variant="default"`): `engine.backends.create_backend(name, model, device, precision)`
  and its `run(...)`, exactly what the app's `Harmonizer` calls;
- torch fast-path rows on the raw eager model (CUDA only by default): `eager` (the baseline every row is
  compared to as "× eager fp32"), `channels_last`, `cudagraph` (channels_last + one captured CUDA graph
  replayed per call) and `compile` (channels_last + `torch.compile(mode="reduce-overhead")`, which adds
  its own CUDA graphs). They show how far the eager network is from the device's peak and which trick
  buys what, measured in the same run.

Configurations that cannot run here are rows with `status="skipped"` and a reason (fp16 on a CPU, a
backend that does not import); one that fails while running is `status="failed"` with the error's first
line, and the rest of the run goes on.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vcam.bench.flops import achieved, count_flops, gpu_peak_tflops, measure_dense_tflops
from vcam.bench.timing import time_calls, time_interleaved

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
TORCH_VARIANTS = ("eager", "channels_last", "cudagraph", "compile")
DEFAULT_MODELS = ("phnet", "phnet-s", "phnet-xs")
DEFAULT_SIZES = (256, 512, 1024)
# A 2-core CPU needs about a second per phnet frame at 256² and ~16 s at 1024²: the CPU defaults keep
# the whole default run to a couple of minutes. Asking for models/sizes explicitly overrides this.
CPU_DEFAULT_MODELS = ("phnet-s", "phnet-xs")
CPU_DEFAULT_SIZES = (256, 512)


@dataclass
class EngineBenchSettings:
    """What to measure. None means "the default for the device" (see `resolve`)."""

    backends: tuple[str, ...] | None = None  # None: every backend available on the device
    variants: tuple[str, ...] | None = None  # torch fast-path variants; None: eager+cudagraph on CUDA, none on CPU
    precisions: tuple[str, ...] = ("fp32", "fp16")
    models: tuple[str, ...] | None = None
    sizes: tuple[int, ...] | None = None
    device: str = "auto"  # "auto", "cpu" or "cuda"
    runs: int | None = None  # timed calls per configuration (CUDA 100, CPU 20)
    warmup: int | None = None  # untimed calls first (CUDA 10, CPU 2)
    max_seconds: float | None = None  # time budget of the timed calls per configuration (CUDA 5, CPU 4)
    batch: int = 1
    notes: list[str] = field(default_factory=list)


@dataclass
class Case:
    """One configuration to time, or to report as skipped (`skip` is the reason)."""

    backend: str
    variant: str
    device: str
    precision: str
    model: str
    size: int | None
    skip: str | None = None

    def label(self) -> str:
        return (f"{self.backend}/{self.variant} {self.device} {self.precision} {self.model} "
                f"{self.size if self.size else '*'}")


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def parse_sizes(value: str | None) -> tuple[int, ...] | None:
    """"256,512" -> (256, 512). Sizes must be multiples of 8 and >= 8 (the model's contract).

    Raises:
        ValueError: a size is not an integer, or not a multiple of 8 >= 8.
    """
    items = _split(value)
    if items is None:
        return None
    sizes = []
    for item in items:
        try:
            size = int(item)
        except ValueError:
            raise ValueError(f"--sizes: expected integers like 256,512, got {item!r}") from None
        if size < 8 or size % 8:
            raise ValueError(f"--sizes: expected multiples of 8 that are >= 8, got {size}")
        sizes.append(size)
    return tuple(sizes)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def backend_availability(device: str) -> dict[str, str | None]:
    """Each known backend -> None when it can run on `device` here, else the reason it cannot."""
    reasons: dict[str, str | None] = {"torch": None}
    if importlib.util.find_spec("onnxruntime") is None:
        reasons["onnxruntime"] = "onnxruntime does not import (pip install onnxruntime)"
    else:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in providers:
            reasons["onnxruntime"] = (f"no CUDAExecutionProvider in {providers}: install onnxruntime-gpu "
                                      f"(pip install 'vcam[gpu]') to run it on the GPU")
        else:
            reasons["onnxruntime"] = None
    if device != "cuda":
        reasons["tensorrt"] = "TensorRT needs a CUDA GPU"
    elif importlib.util.find_spec("tensorrt") is None:
        reasons["tensorrt"] = "tensorrt does not import (pip install 'vcam[trt]')"
    else:
        reasons["tensorrt"] = None
    return reasons


def resolve(settings: EngineBenchSettings, has_cuda: bool) -> EngineBenchSettings:
    """Fill the device-dependent defaults and validate names.

    Raises:
        ValueError: an unknown backend, variant or precision, or `device="cuda"` without CUDA.
    """
    s = copy.copy(settings)
    s.notes = list(settings.notes)
    if s.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device: expected auto, cpu or cuda, got {s.device!r}")
    if s.device == "cuda" and not has_cuda:
        raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine")
    if s.device == "auto":
        s.device = "cuda" if has_cuda else "cpu"
    for name, values, valid in (("--backends", s.backends, BACKENDS + ("auto",)),
                                ("--variants", s.variants, TORCH_VARIANTS + ("none",)),
                                ("--precisions", s.precisions, PRECISIONS)):
        for v in values or ():
            if v not in valid:
                raise ValueError(f"{name}: unknown {v!r}; expected some of {', '.join(valid)}")
    if s.backends is not None and "auto" in s.backends:
        s.backends = None
    on_cpu = s.device == "cpu"
    if s.models is None:
        s.models = CPU_DEFAULT_MODELS if on_cpu else DEFAULT_MODELS
        if on_cpu:
            s.notes.append(f"CPU: default models reduced to {', '.join(s.models)} (phnet takes ~1 s per "
                           f"256² frame on 2 cores); pass --models phnet,phnet-s,phnet-xs for all")
    if s.sizes is None:
        s.sizes = CPU_DEFAULT_SIZES if on_cpu else DEFAULT_SIZES
        if on_cpu:
            s.notes.append(f"CPU: default sizes reduced to {', '.join(map(str, s.sizes))}; "
                           f"pass --sizes 256,512,1024 for all")
    if s.variants is None:
        s.variants = () if on_cpu else ("eager", "cudagraph")
        if not on_cpu:
            s.notes.append("CUDA: torch variants eager and cudagraph by default; add compile with "
                           "--variants eager,cudagraph,compile (about a minute of compiling per configuration)")
    s.variants = tuple(v for v in s.variants if v != "none")
    if s.runs is None:
        s.runs = 20 if on_cpu else 100
    if s.warmup is None:
        s.warmup = 2 if on_cpu else 10
    if s.max_seconds is None:
        s.max_seconds = 4.0 if on_cpu else 5.0
    if s.runs < 1 or s.warmup < 0 or s.batch < 1:
        raise ValueError(f"expected --runs >= 1, --warmup >= 0, batch >= 1; "
                         f"got {s.runs}, {s.warmup}, {s.batch}")
    return s


def plan(settings: EngineBenchSettings, availability: dict[str, str | None]) -> list[Case]:
    """Every configuration of resolved `settings`, in run order; impossible ones carry a skip reason.

    A reason that applies to a whole backend or precision is one row (model "*"), not one per size.
    """
    device = settings.device
    cases: list[Case] = []
    explicit = settings.backends is not None
    backends = settings.backends if explicit else tuple(b for b in BACKENDS if availability.get(b) is None)
    if not explicit:
        for b in BACKENDS:
            if availability.get(b) is not None:
                settings.notes.append(f"backend {b} left out: {availability[b]}")
    runnable = []
    for b in backends:
        if availability.get(b) is not None:
            cases.append(Case(b, "default", device, "*", "*", None, skip=availability[b]))
        else:
            runnable.append((b, "default"))
    for v in settings.variants:
        if v == "cudagraph" and device != "cuda":
            cases.append(Case("torch", v, device, "*", "*", None, skip="CUDA graphs need a CUDA device"))
        else:
            runnable.append(("torch", v))
    for precision in settings.precisions:
        for backend, variant in runnable:
            reason = _precision_skip(backend, variant, device, precision)
            if reason:
                cases.append(Case(backend, variant, device, precision, "*", None, skip=reason))
    for model in settings.models:
        for size in settings.sizes:
            for precision in settings.precisions:
                for backend, variant in runnable:
                    if _precision_skip(backend, variant, device, precision) is None:
                        cases.append(Case(backend, variant, device, precision, model, size))
    return cases


def _precision_skip(backend: str, variant: str, device: str, precision: str) -> str | None:
    """Why `precision` cannot run for this backend/variant on `device`, or None when it can."""
    if device == "cpu" and precision == "fp16":
        return "fp16 on the CPU: neither torch nor ONNX Runtime has fast fp16 CPU kernels (slower than fp32)"
    if backend == "onnxruntime" and precision != "fp32":
        return "the onnxruntime backend runs fp32 only (engine/backends/onnxruntime_backend.py)"
    if precision == "bf16" and variant == "default":
        return "bf16 is only measured on the raw torch variants (the backends run fp32/fp16)"
    return None


def make_inputs(stats_size: int, height: int, width: int, device: str = "cpu", batch: int = 1,
                dtype=None) -> tuple:
    """Deterministic forward inputs at `height` × `width`: a frame-like composite, an elliptic person
    mask, its complement as the reference, zero statistics and momentum 0.9 (the temporal path)."""
    import torch

    dtype = dtype or torch.float32
    if device == "meta":
        empty = lambda *shape: torch.empty(*shape, device="meta", dtype=dtype)  # noqa: E731
        return (empty(batch, 3, height, width), empty(batch, 1, height, width), empty(batch, 1, height, width),
                empty(batch, stats_size), empty(1))
    generator = torch.Generator().manual_seed(0)
    composite = torch.rand(batch, 3, height, width, generator=generator)
    ys = torch.linspace(-1, 1, height).view(height, 1)
    xs = torch.linspace(-1, 1, width).view(1, width)
    mask = (((xs / 0.45) ** 2 + ((ys - 0.3) / 0.8) ** 2) <= 1).float().expand(batch, 1, height, width)
    reference = 1.0 - mask
    stats_in = torch.zeros(batch, stats_size)
    momentum = torch.tensor([0.9])
    return tuple(t.to(device=device, dtype=dtype).contiguous() for t in
                 (composite, mask, reference, stats_in, momentum))


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _torch_variant_runner(model, variant: str, device: str, precision: str, inputs: tuple):
    """(callable that runs one forward, cleanup) for a raw-model fast-path variant."""
    import torch

    dtype = getattr(torch, _DTYPES[precision])
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    args = [t.to(dtype=dtype) for t in inputs]
    if variant != "eager" and device == "cuda":
        # NHWC: cuDNN's tensor-core convolutions want it; converting once here, not per call.
        net = net.to(memory_format=torch.channels_last)
        args = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in args]
    if variant in ("eager", "channels_last"):
        def run():
            with torch.inference_mode():
                return net(*args)
        return run
    if variant == "compile":
        # reduce-overhead = inductor kernels + CUDA graphs; on a CPU it is plain inductor.
        compiled = torch.compile(net, mode="reduce-overhead" if device == "cuda" else "default", dynamic=False)

        def run():
            with torch.inference_mode():
                return compiled(*args)
        return run
    if variant == "cudagraph":
        # Capture needs static input buffers and a side-stream warm-up (cuDNN picks its algorithms there).
        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    net(*args)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = net(*args)

        def run():
            graph.replay()
            return static_out
        return run
    raise ValueError(f"unknown torch variant {variant!r}; expected one of {TORCH_VARIANTS}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _finite(outputs) -> bool | None:
    import torch

    first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    if not isinstance(first, torch.Tensor):
        return None
    return bool(torch.isfinite(first.float()).all())


def _peak(device: str, precision: str, system: dict) -> tuple[float | None, str]:
    """The data-sheet peak for the GPU (TF32 for fp32 where cuDNN uses it); the CPU's rough estimate."""
    if device == "cuda":
        gpu = system.get("gpu") or {}
        kind = precision
        if precision == "fp32" and gpu.get("cudnn_allow_tf32"):
            kind = "tf32"  # fp32 convolutions run on TF32 tensor cores under PyTorch's default
        peak, note = gpu_peak_tflops(gpu.get("name", ""), kind)
        return peak, f"{kind}: {note}"
    cpu = system["cpu"]
    if precision != "fp32":
        return None, f"no {precision} CPU peak estimate"
    return cpu.get("fp32_peak_tflops_estimate"), cpu.get("peak_note", "")


def run_engine_bench(settings: EngineBenchSettings, system: dict,
                     create_model: Callable | None = None, create_backend: Callable | None = None,
                     auto_backend: Callable | None = None,
                     progress: Callable[[str], None] | None = None) -> tuple[list[dict], list[str], dict]:
    """Time every planned configuration.

    Args:
        settings: what to measure (defaults are filled by `resolve`).
        system: `vcam.bench.sysinfo.collect()` of this machine (for the peaks).
        create_model: `(name) -> nn.Module`; default `engine.phnet.create_model`.
        create_backend: `(name, model, device, precision) -> backend`; default
            `engine.backends.create_backend`.
        auto_backend: `(model, device, precision) -> name` of the backend `auto` picks; default: create
            the `auto` backend and read its name.
        progress: called with one line per finished configuration.

    Returns:
        (rows, notes, auto): one dict per configuration; notes about defaults and left-out backends;
        a summary of what `auto` picks against the fastest measured backend.

    Raises:
        ValueError: invalid settings (see `resolve`).
    """
    import torch

    s = resolve(settings, cuda_available())
    if create_model is None:
        create_model = importlib.import_module("engine.phnet").create_model
    if create_backend is None:
        create_backend = importlib.import_module("engine.backends").create_backend
    if s.device == "cuda":
        # Let cuDNN pick the fastest algorithms for the fixed shapes: the app runs fixed shapes too.
        torch.backends.cudnn.benchmark = True
    availability = backend_availability(s.device)
    cases = plan(s, availability)
    say = progress or log.info
    rows: list[dict] = []
    dense: dict[str, tuple[float | None, str]] = {}  # precision -> measured dense-layer TFLOP/s
    models: dict[str, object] = {}
    groups: dict[tuple, list[Case]] = {}
    for case in cases:
        if case.skip:
            rows.append({**_row_head(case, s), "status": "skipped", "reason": case.skip})
            say(f"skip {case.label()}: {case.skip}")
        else:
            groups.setdefault((case.model, case.size, case.precision), []).append(case)
    for (model_name, size, precision), group in groups.items():
        if model_name not in models:
            # Random initial weights (speed does not depend on them), seeded: the same weights in every
            # run let the engine's ONNX/TensorRT caches (keyed by the weights) be reused.
            torch.manual_seed(0)
            models[model_name] = create_model(model_name).eval()
        model = models[model_name]
        stats_size = int(model.stats_size)
        try:
            flops, flops_how = count_flops(
                model, lambda h, w, d, n=stats_size: make_inputs(n, h, w, d, s.batch), size, size)
        except RuntimeError as exc:
            flops, flops_how = None, f"not counted: {exc}"
        if precision not in dense:
            try:
                dense[precision] = measure_dense_tflops(s.device, precision)
            except Exception as exc:  # e.g. bf16 kernels missing on an old CPU
                dense[precision] = (None, f"not measured: {_first_line(exc)}")
        peak, peak_note = _peak(s.device, precision, system)
        for case, result in zip(group, _time_group(group, model, stats_size, s, create_backend)):
            r = {**_row_head(case, s), **result}
            rows.append(r)
            if r["status"] != "ok":
                say(f"{r['status']} {case.label()}: {r['reason']}")
                continue
            tflops, fraction = achieved(flops, r["p50_ms"] / 1000.0, peak)
            _, dense_fraction = achieved(flops, r["p50_ms"] / 1000.0, dense[precision][0])
            r.update({"gflops": flops / 1e9 if flops else None, "flops_counted": flops_how,
                      "tflops": tflops, "peak_tflops": peak, "peak_pct": fraction * 100 if fraction else None,
                      "peak_note": peak_note, "dense_tflops": dense[precision][0],
                      "dense_pct": dense_fraction * 100 if dense_fraction else None,
                      "dense_note": dense[precision][1]})
            say(f"{case.label()}: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, {r['fps']:.1f} FPS")
    _add_speedups(rows)
    for precision, (rate, what) in dense.items():
        if rate:
            s.notes.append(f"measured dense ceiling {precision} on {s.device}: {rate:.3f} TFLOP/s ({what}); "
                           f"'% dense' columns are against it")
    if s.device == "cuda":
        s.notes.append("configurations of the same model, size and precision are timed round-robin (one "
                       "call of each per round), so load on a shared machine hits them alike")
    else:
        s.notes.append("CPU: configurations are timed one after the other (round-robin would let one "
                       "runtime's spinning thread pool slow the next); on a loaded machine compare min_ms too")
    auto = summarize_auto(rows, s, models, create_model, auto_backend or _default_auto_backend(create_backend))
    return rows, s.notes, auto


def _row_head(case: Case, s: EngineBenchSettings) -> dict:
    return {"backend": case.backend, "variant": case.variant, "device": case.device,
            "precision": case.precision, "model": case.model, "size": case.size, "batch": s.batch}


def _time_group(group: list[Case], model, stats_size: int, s: EngineBenchSettings, create_backend) -> list[dict]:
    """Build every runner of one (model, size, precision), time them (round-robin on CUDA), close them.

    A runner that cannot be built, or fails on its first call, becomes a "failed" result; if one fails
    during the interleaved timing, each survivor is timed alone instead.
    """
    import torch

    sync = torch.cuda.synchronize if s.device == "cuda" else None
    results: list[dict | None] = [None] * len(group)
    runners: dict[int, Callable] = {}
    setup: dict[int, float] = {}
    closers = []
    try:
        for i, case in enumerate(group):
            started = time.perf_counter()
            try:
                runners[i] = _build_runner(case, model, stats_size, s, create_backend, closers)
                runners[i]()  # first call outside the clock: builds, compiles, captures
                if sync:
                    sync()
                setup[i] = time.perf_counter() - started
            except Exception as exc:  # one broken configuration must not end the whole benchmark
                log.debug("configuration %s failed", case.label(), exc_info=True)
                runners.pop(i, None)
                results[i] = {"status": "failed", "reason": _first_line(exc)}
        timings: dict[int, object] = {}
        if runners and s.device != "cuda":
            # On a CPU, one after the other: the thread pools of torch (OpenMP) and ONNX Runtime keep
            # spinning for a while after a call, and round-robin would let them slow the next runner.
            for i, run in runners.items():
                try:
                    timings[i] = time_calls(run, warmup=s.warmup, runs=s.runs, sync=sync, max_seconds=s.max_seconds)
                except Exception as exc:
                    results[i] = {"status": "failed", "reason": _first_line(exc)}
        elif runners:
            try:
                timings = time_interleaved(runners, warmup=s.warmup, runs=s.runs, sync=sync,
                                           max_seconds=s.max_seconds)
            except Exception:
                log.debug("interleaved timing failed; timing one by one", exc_info=True)
                for i, run in runners.items():
                    try:
                        timings[i] = time_calls(run, warmup=s.warmup, runs=s.runs, sync=sync,
                                                max_seconds=s.max_seconds)
                    except Exception as exc:
                        results[i] = {"status": "failed", "reason": _first_line(exc)}
        for i, timing in timings.items():
            try:
                finite = _finite(runners[i]())
            except Exception as exc:
                results[i] = {"status": "failed", "reason": _first_line(exc)}
                continue
            results[i] = {"status": "ok", "setup_s": round(setup[i], 3), "finite": finite, **timing.summary()}
    finally:
        for close in closers:
            try:
                close()
            except Exception:  # closing is best effort: the numbers are already taken
                log.debug("closing a runner failed", exc_info=True)
        if s.device == "cuda":
            torch.cuda.empty_cache()
    return [r or {"status": "failed", "reason": "not timed"} for r in results]


def _build_runner(case: Case, model, stats_size: int, s: EngineBenchSettings, create_backend, closers: list):
    inputs = make_inputs(stats_size, case.size, case.size, case.device, s.batch)
    if case.variant != "default":
        return _torch_variant_runner(model, case.variant, case.device, case.precision, inputs)
    backend = create_backend(case.backend, model, case.device, case.precision)
    if hasattr(backend, "close"):
        closers.append(backend.close)

    def run():
        return backend.run(*inputs)
    return run


def _add_speedups(rows: list[dict]) -> None:
    """"× eager fp32": the eager fp32 torch row's p50 over this row's, same model/size/device; where no
    eager row was measured (CPU defaults), the torch backend's fp32 row is the baseline."""
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        key = (r["model"], r["size"], r["device"])
        base = next((b for b in ok if (b["model"], b["size"], b["device"]) == key and b["backend"] == "torch"
                     and b["variant"] == "eager" and b["precision"] == "fp32"), None)
        if base is None:
            base = next((b for b in ok if (b["model"], b["size"], b["device"]) == key and b["backend"] == "torch"
                         and b["variant"] == "default" and b["precision"] == "fp32"), None)
        r["speedup"] = base["p50_ms"] / r["p50_ms"] if base and r["p50_ms"] > 0 else None
        r["baseline"] = f"torch/{base['variant']} fp32" if base else None


def _default_auto_backend(create_backend):
    def pick(model, device, precision):
        backend = create_backend("auto", model, device, precision)
        try:
            return getattr(backend, "name", type(backend).__name__)
        finally:
            if hasattr(backend, "close"):
                backend.close()
    return pick


def summarize_auto(rows: list[dict], s: EngineBenchSettings, models: dict, create_model, auto_backend) -> dict:
    """Which backend `auto` picks on this device (fp32 and each measured precision), against the backend
    row that was fastest in this run, per model and size."""
    summary: dict = {"device": s.device, "picks": []}
    ok = [r for r in rows if r["status"] == "ok" and r["variant"] == "default"]
    for model_name in dict.fromkeys(r["model"] for r in ok):
        for precision in dict.fromkeys(r["precision"] for r in ok if r["model"] == model_name):
            try:
                model = models.get(model_name) or create_model(model_name)
                picked = auto_backend(model, s.device, precision)
            except Exception as exc:
                summary["picks"].append({"model": model_name, "precision": precision, "auto": None,
                                         "reason": _first_line(exc)})
                continue
            for size in dict.fromkeys(r["size"] for r in ok if r["model"] == model_name):
                candidates = [r for r in ok if (r["model"], r["size"], r["precision"]) ==
                              (model_name, size, precision)]
                fastest = min(candidates, key=lambda r: r["p50_ms"])
                picked_row = next((r for r in candidates if r["backend"] == picked), None)
                summary["picks"].append({
                    "model": model_name, "size": size, "precision": precision, "auto": picked,
                    "fastest": fastest["backend"], "fastest_p50_ms": fastest["p50_ms"],
                    "auto_p50_ms": picked_row["p50_ms"] if picked_row else None,
                    "auto_is_fastest": picked == fastest["backend"],
                    "auto_within_5pct": bool(picked_row) and picked_row["p50_ms"] <= 1.05 * fastest["p50_ms"],
                })
    return summary


def auto_lines(auto: dict) -> list[str]:
    """Human lines for the report: "auto picks X; fastest measured: Y (…)" per model/size/precision."""
    lines = []
    for p in auto.get("picks", []):
        if p.get("auto") is None:
            lines.append(f"auto on {auto['device']} ({p['model']} {p['precision']}): could not be determined: "
                         f"{p.get('reason')}")
            continue
        verdict = ("the faster one" if p["auto_is_fastest"] else
                   "a tie within 5 %" if p.get("auto_within_5pct") else "NOT the fastest")
        auto_ms = f"{p['auto_p50_ms']:.2f} ms" if p.get("auto_p50_ms") else "not measured"
        lines.append(f"auto on {auto['device']} picks {p['auto']} for {p['model']} {p['size']}² {p['precision']}: "
                     f"{verdict} (auto {auto_ms}, fastest {p['fastest']} {p['fastest_p50_ms']:.2f} ms)")
    return lines


# Issue 6, acceptance 1 (on an H200): phnet at 512² fp16 within 1.5 ms p50 engine latency.
GPU_TARGET = {"model": "phnet", "size": 512, "precision": "fp16", "p50_ms": 1.5}


def target_lines(rows: list[dict]) -> list[str]:
    """Whether the GPU engine target is met by the best phnet 512² fp16 row, with its ratio to eager fp32."""
    t = GPU_TARGET
    candidates = [r for r in rows if r.get("status") == "ok" and r["device"] == "cuda" and r["model"] == t["model"]
                  and r["size"] == t["size"] and r["precision"] == t["precision"]]
    if not candidates:
        return []
    best = min(candidates, key=lambda r: r["p50_ms"])
    verdict = "MET" if best["p50_ms"] <= t["p50_ms"] else "NOT MET"
    ratio = f", {best['speedup']:.1f}× eager fp32 torch" if best.get("speedup") else ""
    return [f"GPU target {t['model']} {t['size']}² {t['precision']} p50 <= {t['p50_ms']} ms: {verdict}: best "
            f"{best['backend']}/{best['variant']} {best['p50_ms']:.3f} ms{ratio}"]
