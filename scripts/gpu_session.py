"""The GPU session: one call measures the engine and the 1080p pipeline and trains the shipped recipe.

    scripts/gpu_session.sh                  # on the GPU machine: everything into $OUT (see docs/notes/gpu.md)
    scripts/gpu_session.sh --dry-run        # here, on the CPU: the same code at tiny sizes, in seconds

Parts, in order of value, each time-boxed inside --budget-s so that a run cut off early still leaves the
most valuable results in OUT (every part writes its files as soon as it ends):

1. smoke     torch/CUDA/driver versions and `nvidia-smi`, into the log at once;
2. engine    phnet, phnet-s and the shipped model at 256², 512², 1024²: fp32 eager against fp16/bf16
             eager, CUDA graphs and channels-last; p50/p95 after warm-up (engine.json, engine.md);
3. pipeline  the 1080p clip from the carry, decoded in a thread while the GPU works, composited and
             harmonized on every frame through engine.gpu_frame (fp16, one CUDA graph), next to the same
             run without harmonization and an eager fp32 run; fast-vs-CPU-path agreement on real frames
             (pipeline.json, pipeline.md);
4. train     the shipped recipe (engine/weights/default.json) on the GPU for the minutes left (at most
             --train-minutes), checkpointed and evaluated on the held-out set every minute; then the best
             weights and the shipped ones evaluated alike (train.tar.gz: run files, weights, evaluations);
5. tests     the suite's gpu- and tensorrt-marked tests, code that never ran before this machine (log only).

OUT gets at most 8 files (log.txt, summary.json, summary.md, engine.*, pipeline.*, train.tar.gz); scratch
work goes to a temporary folder. The carry (--carry, default .gpu) is made by scripts/make_gpu_pack.py;
--dry-run makes a tiny one of its own from skimage's photos, so it needs no carry and no MediaPipe.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PARTS = ("smoke", "engine", "pipeline", "train", "tests")


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


# ---------------------------------------------------------------------------------------------- 1. smoke


def smoke(args, log: Log) -> dict:
    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "cuda_available": torch.cuda.is_available(),
            "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
        x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            x @ x
        torch.cuda.synchronize()
        info["bf16_matmul_tflops"] = round(10 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12, 1)
    for key, value in info.items():
        log(f"  {key}: {value}")
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        log(smi.stdout.strip() or smi.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"  nvidia-smi: {exc}")
    if args.dry_run is False and not info["cuda_available"]:
        raise RuntimeError("no CUDA device: run with --dry-run on a CPU")
    return info


# ---------------------------------------------------------------------------------------------- timing


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


# ---------------------------------------------------------------------------------------------- 2. engine


def engine_part(args, log: Log, box_s: float) -> dict:
    import torch

    from engine.phnet import create_model
    from engine.weights import DEFAULT_WEIGHTS, load_weights

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    torch.backends.cudnn.benchmark = True
    t_end = time.monotonic() + box_s
    shipped = load_weights(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else create_model("phnet-xs")
    models = {"phnet": lambda: create_model("phnet"),
              f"shipped ({shipped.name}, {shipped.config.output})": lambda: shipped,
              "phnet-s": lambda: create_model("phnet-s")}
    variants = ["fp32 eager", "fp16 graph", "bf16 graph", "fp16 graph cl", "fp16 eager"]
    rows = []
    for name, make in models.items():  # each model built once; the sizes in order of value (512 first)
        model = make().eval()
        for size in args.sizes:
            for variant in variants:
                left = t_end - time.monotonic()
                row = {"model": name, "size": f"{size}x{size}", "variant": variant}
                if left < 1:
                    rows.append({**row, "skipped": "time box"})
                    continue
                try:
                    fn = engine_runner(model, device, variant, (size, size))
                    ms = time_calls(fn, device, warmup=args.warmup, box_s=min(args.measure_s, left),
                                    max_iters=args.iters)
                    row.update(percentiles(ms))
                    log(f"  {name:28s} {size:5d}² {variant:14s} p50 {row['p50_ms']:8.3f} ms  p95 "
                        f"{row['p95_ms']:8.3f} ms  (n={row['n']})")
                except Unavailable as exc:
                    row["skipped"] = str(exc)
                except Exception as exc:  # one variant failing must not cost the others
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    log(f"  {name:28s} {size:5d}² {variant:14s} {row['error']}")
                rows.append(row)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    best = []
    for size in args.sizes:
        for name in models:
            timed = [r for r in rows if r["model"] == name and r["size"] == f"{size}x{size}" and "p50_ms" in r]
            base = next((r for r in timed if r["variant"] == "fp32 eager"), None)
            if timed and base:
                fast = min(timed, key=lambda r: r["p50_ms"])
                best.append({"model": name, "size": f"{size}x{size}", "fastest": fast["variant"],
                             "p50_ms": fast["p50_ms"], "p95_ms": fast["p95_ms"], "fp32_eager_p50_ms": base["p50_ms"],
                             "speedup": base["p50_ms"] / fast["p50_ms"]})
    result = {"device": str(device), "batch": 1, "rows": rows, "best": best,
              "notes": "one forward (composite, mask, reference, stats, momentum 0.8); CUDA events per call; "
                       "cudnn.benchmark on; TF32 left at torch's defaults"}
    write_json(args.out / "engine.json", result)
    lines = ["# Engine latency", "", f"Device: {device}. Batch 1, p50/p95 after {args.warmup} warm-up calls.", "",
             "| model | size | fastest | p50 ms | p95 ms | fp32 eager p50 ms | speed-up |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {b['model']} | {b['size']} | {b['fastest']} | {b['p50_ms']:.3f} | {b['p95_ms']:.3f} | "
              f"{b['fp32_eager_p50_ms']:.3f} | {b['speedup']:.1f}x |" for b in best]
    lines += ["", "| model | size | variant | p50 ms | p95 ms | n |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['size']} | {r['variant']} | " + (
        f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['n']} |" if "p50_ms" in r else
        f"{r.get('error', r.get('skipped'))} | | |") for r in rows]
    (args.out / "engine.md").write_text("\n".join(lines) + "\n")
    return {"best": best}


# ---------------------------------------------------------------------------------------------- 3. pipeline


class ClipReader:
    """Decodes the clip in a thread (as a camera thread would deliver frames), looping at its end; the
    frame loop takes (frame, index) from a small queue, so decoding overlaps the GPU's work."""

    def __init__(self, path: Path, frames: int):
        self.path, self.frames = path, frames
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.decode_ms: list[float] = []
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            cap = cv2.VideoCapture(str(self.path))
            index = 0
            while index < self.frames and not self._stop.is_set():
                t = time.perf_counter()
                ok, frame = cap.read()
                if not ok:
                    if index == 0:
                        raise RuntimeError(f"cannot decode {self.path}")
                    cap.release()
                    cap = cv2.VideoCapture(str(self.path))
                    continue
                self.decode_ms.append((time.perf_counter() - t) * 1000)
                self.queue.put((frame, index))
                index += 1
            cap.release()
        except BaseException as exc:  # reported by the loop, never a silent hang
            self.error = exc
        finally:
            self.queue.put(None)

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                time.sleep(0.001)


def run_clip(path_obj, clip: Path, masks: np.ndarray, frames: int, box_s: float, in_memory: list | None) -> dict:
    """Frames through `path_obj` with one frame in flight while the next is decoded and submitted.
    Returns FPS and per-stage times (host: wait for a decoded frame, submit = copy into pinned memory +
    enqueue, wait for the result; GPU: upload, device step, download from CUDA events)."""
    reader = None if in_memory is not None else ClipReader(clip, frames)
    stages = {k: [] for k in ("wait_decode_ms", "submit_ms", "wait_result_ms", "upload_ms", "gpu_ms", "download_ms")}
    pending, done = None, 0
    t_start = time.perf_counter()
    t_end = t_start + box_s
    try:
        for i in range(frames):
            t0 = time.perf_counter()
            if reader is not None:
                item = reader.queue.get()
                if item is None:
                    if reader.error is not None:
                        raise reader.error
                    break
                frame, index = item
            else:
                frame, index = in_memory[i % len(in_memory)], i
            t1 = time.perf_counter()
            submitted = path_obj.submit(frame, masks[index % len(masks)], timing=True)
            t2 = time.perf_counter()
            stages["wait_decode_ms"].append((t1 - t0) * 1000)
            stages["submit_ms"].append((t2 - t1) * 1000)
            if pending is not None:
                _finish(pending, stages)
                done += 1
            pending = submitted
            if time.perf_counter() > t_end:
                break
        if pending is not None:
            _finish(pending, stages)
            done += 1
    finally:
        if reader is not None:
            reader.close()
    wall = time.perf_counter() - t_start
    result = {"frames": done, "seconds": wall, "fps": done / wall,
              "stages": {k: percentiles(v) for k, v in stages.items() if v}}
    if reader is not None and reader.decode_ms:
        result["stages"]["decode_ms (reader thread)"] = percentiles(reader.decode_ms)
    return result


def _finish(pending, stages) -> None:
    t = time.perf_counter()
    pending.result()
    stages["wait_result_ms"].append((time.perf_counter() - t) * 1000)
    for k in ("upload_ms", "gpu_ms", "download_ms"):
        if k in pending.timings:
            stages[k].append(pending.timings[k])


def pipeline_part(args, log: Log, box_s: float, carry: Path) -> dict:
    import torch

    from engine.gpu_frame import GpuFramePath
    from engine.harmonizer import Harmonizer, net_shape
    from engine.phnet import create_model, output_names
    from engine.weights import DEFAULT_WEIGHTS, load_weights
    from vcam.composite import composite

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    t_end = time.monotonic() + box_s
    clip = carry / "clip" / "clip.mp4"
    if not clip.is_file():
        raise FileNotFoundError(f"no clip at {clip}: make the carry with scripts/make_gpu_pack.py")
    masks = np.load(carry / "clip" / "masks.npz")["masks"]
    background_rgb = cv2.cvtColor(cv2.imread(str(carry / "clip" / "background.jpg")), cv2.COLOR_BGR2RGB)
    cap = cv2.VideoCapture(str(clip))
    in_memory = []
    while len(in_memory) < len(masks):
        ok, frame = cap.read()
        if not ok:
            break
        in_memory.append(frame)
    cap.release()
    height, width = in_memory[0].shape[:2]
    log(f"  clip {clip.name}: {len(in_memory)} frames {width}x{height}, masks {masks.shape}")
    shipped = load_weights(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else None
    note = None
    if shipped is None or output_names(shipped)[0] != "coefficients":
        # The fast path applies an affine head's transforms; until such weights ship, time the shipped
        # variant's affine build (identity at initialisation: the same work per frame).
        note = "the shipped weights have an image head: timed phnet-xs with output='affine' (untrained)"
        log(f"  note: {note}")
        torch.manual_seed(0)
        shipped = create_model("phnet-xs", output="affine").eval()
    # (what, model, fast: the fast path's precision and graph, else fp32 eager, harmonize, sources)
    runs = [("composite only (no harmonization)", shipped, True, False, ("file", "memory")),
            ("harmonize every frame", shipped, True, True, ("file", "memory")),
            ("harmonize every frame", shipped, False, True, ("memory",)),
            ("harmonize every frame, phnet-s affine", "phnet-s", True, True, ("memory",)),
            ("harmonize every frame, phnet affine", "phnet", True, True, ("memory",))]
    if args.dry_run:
        runs = runs[:3]  # the bigger models run the same code
    background = cv2.cvtColor(background_rgb, cv2.COLOR_RGB2BGR)
    results = []
    for what, model, fast, harmonize, sources in runs:
        for source in sources:
            left = t_end - time.monotonic()
            row = {"run": what, "frames_from": source}
            if left < 2:
                results.append({**row, "skipped": "time box"})
                continue
            try:
                if isinstance(model, str):
                    model = create_model(model, output="affine").eval()
                options = {} if fast else {"precision": "fp32", "cuda_graph": False}
                path = GpuFramePath(model, (width, height), background=background, device=device, channels="bgr",
                                    smoothing=0.1, **options)
                path.harmonizing = harmonize
                row["run"] = f"{what}, {path.precision} {'graph' if path.cuda_graph else 'eager'}"
                label = row["run"]
                run_clip(path, clip, masks, args.warmup_frames, left, in_memory)  # warm-up
                path.reset()
                row.update(run_clip(path, clip, masks, args.frames, min(args.pipeline_run_s, left),
                                    None if source == "file" else in_memory))
                path.close()
                log(f"  {label:55s} from {source:6s}: {row['fps']:8.1f} FPS ({row['frames']} frames)")
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log(f"  {row['run']}: {row['error']}")
                log(traceback.format_exc())
            results.append(row)
    # The network alone at the frame's network shape (1080p -> 256x144), the share of the GPU time that
    # is not compositing, resizing and applying.
    network = {}
    try:
        variant = "fp16 graph" if device == "cuda" else "fp32 eager"
        shape = net_shape(height, width, 256)
        fn = engine_runner(shipped, torch.device(device), variant, shape)
        network = {"variant": variant, "shape": list(shape),
                   **percentiles(time_calls(fn, torch.device(device), args.warmup, args.measure_s, args.iters))}
        log(f"  network alone at {shape[1]}x{shape[0]} ({variant}): p50 {network['p50_ms']:.3f} ms")
    except Exception as exc:
        network = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  network alone: {network['error']}")
    # Agreement of the device path with the CPU path (vcam.composite + Harmonizer on torch/CPU, fp32) on
    # the clip's real frames and masks.
    agreement = {}
    try:
        # The device path does not apply keep_detail yet (engine/device_harmonizer.py), nor the stills-only sharpness
        # step (off in the app, as here): compare like with like.
        reference_model = copy.deepcopy(shipped)
        if hasattr(reference_model.config, "keep_detail"):
            reference_model.config.keep_detail = 0.0
        harmonizer = Harmonizer(model=reference_model, backend="torch", device="cpu", smoothing=0.1,
                                sharpness=False)
        path = GpuFramePath(shipped, (width, height), background=background_rgb, device=device, smoothing=0.1)
        diffs = []
        for i, (frame, mask) in enumerate(zip(in_memory[:args.agreement_frames], masks)):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            comp = composite(rgb, background_rgb, mask.astype(np.float32) / 255)
            # frames 1/fps apart, as the device path assumes (the smoothing is a time constant)
            reference = harmonizer.apply(harmonizer.estimate(comp, mask, timestamp=i / path.fps), comp, mask)
            diffs.append(np.abs(path.process(rgb, mask).astype(np.int16) - reference))
        d = np.stack(diffs)
        agreement = {"frames": len(diffs), "max_levels": int(d.max()), "mean_levels": float(d.mean()),
                     "share_different": float((d > 0).mean()), "device_precision": path.precision}
        log(f"  device path vs CPU path: {agreement}")
    except Exception as exc:
        agreement = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  agreement: {agreement['error']}")
    result = {"device": device, "size": [width, height], "note": note, "runs": results, "network": network,
              "agreement": agreement}
    write_json(args.out / "pipeline.json", result)
    lines = ["# 1080p pipeline through engine.gpu_frame", "", f"Device: {device}; clip {width}x{height}; "
             "masks precomputed with MediaPipe (scripts/make_gpu_pack.py); smoothing 0.1 s; BGR in and out.", ""]
    if note:
        lines += [f"Note: {note}.", ""]
    lines += ["| run | frames from | FPS | gpu ms p50 | upload ms | download ms | submit ms | wait ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "fps" in r:
            s = r["stages"]

            def p50(key, stages=s):
                return f"{stages[key]['p50_ms']:.2f}" if key in stages else "-"
            lines.append(f"| {r['run']} | {r['frames_from']} | {r['fps']:.1f} | {p50('gpu_ms')} | {p50('upload_ms')} | "
                         f"{p50('download_ms')} | {p50('submit_ms')} | {p50('wait_result_ms')} |")
        else:
            lines.append(f"| {r['run']} | {r['frames_from']} | {r.get('error', r.get('skipped'))} | | | | | |")
    lines += ["", f"The network alone at the network shape: {network}", "",
              f"Agreement with the CPU path: {agreement}"]
    (args.out / "pipeline.md").write_text("\n".join(lines) + "\n")
    return {"runs": [{k: r.get(k) for k in ("run", "frames_from", "fps")} for r in results],
            "network_p50_ms": network.get("p50_ms"), "agreement": agreement}


# ---------------------------------------------------------------------------------------------- 5. tests


def tests_part(args, log: Log, box_s: float) -> dict:
    """The suite's `gpu`- and `tensorrt`-marked tests (CUDA backends' parity, the frame path's fp16 CUDA
    graph against the CPU path): code that never ran before this machine. Collection errors in one file
    (a module the machine lacks) do not stop the others."""
    tail: list[str] = []
    files = [f for f in ("tests/test_backends.py", "tests/test_gpu_frame.py", "tests/test_bench.py")
             if (REPO / f).is_file()]
    rc = run_logged([sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
                     "--continue-on-collection-errors", *files], log, box_s, REPO, tail)
    if rc not in (0, 5):  # 5: nothing selected (a CPU)
        raise RuntimeError(f"pytest exit {rc}: {tail[-1] if tail else 'no output'}")
    return {"pytest": tail[-1] if tail else ""}


# ---------------------------------------------------------------------------------------------- 4. train


def recipe(args) -> dict:
    """The shipped weights' training arguments (engine/weights/default.json), with this session's overrides."""
    from engine.weights import DEFAULT_WEIGHTS, read_metadata

    weights = Path(args.recipe_weights) if args.recipe_weights else DEFAULT_WEIGHTS
    shipped, head = {}, "image"
    if weights.is_file():
        meta = read_metadata(weights)
        shipped = meta.get("extra", {}).get("trainer", {}).get("args", {})
        head = meta.get("config", {}).get("output", "image")
    overrides = shipped.get("model_overrides") or {}
    overrides = json.loads(overrides) if isinstance(overrides, str) else dict(overrides)
    if head != "image":  # the head the shipped weights have, whether or not the recipe spelled it out
        overrides.setdefault("output", head)
    out = {"model": shipped.get("model", "phnet-xs"), "model_overrides": overrides or None,
           "stages": shipped.get("stages", "1:3000:3e-4,3:2500:1e-4,3:1000:3e-5"),
           "size": int(shipped.get("size", 256)), "lm_weight": float(shipped.get("lm_weight", 0.0) or 0.0),
           "clip_grad": float(shipped.get("clip_grad", 0.0) or 0.0), "seed": int(shipped.get("seed", 0) or 0)}
    if args.model_overrides is not None:
        out["model_overrides"] = args.model_overrides
    if isinstance(out["model_overrides"], dict):
        out["model_overrides"] = json.dumps(out["model_overrides"])
    return out


def scale_stages(stages: str, steps: int) -> str:
    """The recipe's stages with their step counts scaled to `steps` in all (each at least 1)."""
    parts = [p.split(":") for p in stages.split(",") if p.strip()]
    total = sum(int(p[1]) for p in parts)
    return ",".join(f"{p[0]}:{max(1, round(int(p[1]) * steps / total))}:{p[2]}" for p in parts)


def sec_per_step(log_csv: Path, skip: int) -> float:
    with open(log_csv) as f:
        rows = [float(r["sec_per_step"]) for r in csv.DictReader(f)]
    rows = rows[skip:] or rows
    return float(np.median(rows))


def run_logged(cmd: list[str], log: Log, timeout: float, cwd: Path, tail: list | None = None) -> int:
    """Run a command, its output into the log line by line (the last lines also into `tail`); stopped at
    `timeout` seconds (returns 124)."""
    log("  $ " + " ".join(str(c) for c in cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    t_end = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, min(1.0, t_end - time.monotonic())))
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line.strip() and "%|" not in line:  # progress bars stay out of the log
            log("    " + line.rstrip())
            if tail is not None:
                tail[:] = (tail + [line.strip()])[-5:]
        if time.monotonic() > t_end and proc.poll() is None:
            log(f"  time box reached: stopping {Path(str(cmd[2])).name if len(cmd) > 2 else cmd[0]}")
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            return 124
    return proc.wait()


def train_part(args, log: Log, box_s: float, carry: Path, work: Path) -> dict:
    import torch

    t_end = time.monotonic() + box_s
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    r = recipe(args)
    run = work / "run"
    pack = carry / "pack"
    if not (pack / "train").is_dir():
        raise FileNotFoundError(f"no training pack at {pack / 'train'}: make the carry with scripts/make_gpu_pack.py")
    workers = 0 if args.dry_run else max(0, min(12, (os.cpu_count() or 2) - 2))
    base = [sys.executable, "-m", "trainer.train", "--synth", pack / "train", "--eval-data", pack / "heldout",
            "--model", r["model"], "--size", args.train_size or r["size"], "--batch", args.batch,
            "--seed", r["seed"], "--lm-weight", r["lm_weight"], "--clip-grad", r["clip_grad"],
            "--device", device, "--workers", workers, "--out", run, "--no-progress", "--log-every", 10]
    if args.from_scratch:
        if r["model_overrides"]:
            base += ["--model-overrides", r["model_overrides"]]
    else:  # go on from the shipped weights (a CPU session's work), averaged as the CPU runs are
        from engine.weights import DEFAULT_WEIGHTS

        base += ["--init", DEFAULT_WEIGHTS, "--ema", args.ema]
        r["stages"] = f"3:1000:{args.finetune_lr}"
    if device == "cuda":
        base.append("--amp")
    # 1. The first steps of the run double as the speed measurement: --steps stops there with a
    #    checkpoint, and --resume continues with the schedule sized from the measured rate.
    calib_steps = args.calibration_steps
    guess = scale_stages(r["stages"], 100 * calib_steps)  # stage 1 comfortably longer than the calibration
    calibrate = ["--stages", guess, "--steps", calib_steps, "--eval-every", 10**9, "--ckpt-every", 10**9]
    t0 = time.monotonic()
    rc = run_logged(base + calibrate, log, min(args.calibration_s, t_end - time.monotonic()), REPO)
    if rc != 0 and "--amp" in base:  # bf16 autocast has never run on this model: fall back to fp32 (TF32)
        log(f"  calibration failed with --amp (exit {rc}); once more without it")
        base.remove("--amp")
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.monotonic()
        rc = run_logged(base + calibrate, log, min(args.calibration_s, t_end - time.monotonic()), REPO)
    if rc != 0 or not (run / "last.pt").is_file():
        raise RuntimeError(f"calibration run failed (exit {rc})")
    rate = sec_per_step(run / "log.csv", skip=min(5, calib_steps // 2))
    start_s = time.monotonic() - t0 - rate * calib_steps  # process start, data loading, first-step compile
    reserve = args.eval_reserve_s
    train_s = min(args.train_minutes * 60, t_end - time.monotonic() - reserve)
    per_minute = max(1, int(60 / rate))
    evals = max(1, math.ceil(train_s / 60))
    steps = max(calib_steps + 1, int((train_s - start_s - evals * args.eval_s) / rate))
    if args.max_steps:
        steps = min(steps, args.max_steps)
    stages = scale_stages(r["stages"], steps)
    log(f"  {rate * 1000:.1f} ms/step, start-up {start_s:.1f} s: {steps} steps in {train_s:.0f} s, "
        f"checkpoint and held-out evaluation every {per_minute} steps; stages {stages}")
    rc = run_logged(base + ["--stages", stages, "--resume", run / "last.pt", "--eval-every", per_minute,
                            "--ckpt-every", per_minute], log, train_s + 15, REPO)
    finished = rc == 0
    # 2. The best weights (held-out PSNR at the training size) and the shipped ones, evaluated alike.
    evaluations = {}
    weights = run / "best.safetensors"
    subjects = [("trained", ["--weights", weights])] if weights.is_file() else []
    from engine.weights import DEFAULT_WEIGHTS

    if DEFAULT_WEIGHTS.is_file() and not args.dry_run:  # the dry run has checked this loop already
        subjects.append(("shipped", ["--weights", DEFAULT_WEIGHTS]))
    for name, who in subjects:
        left = t_end - time.monotonic()
        if left < 5:
            log(f"  no time left to evaluate {name}")
            continue
        target = work / f"eval_{name}.json"
        rc_eval = run_logged([sys.executable, "-m", "trainer.evaluate", "--data", pack / "heldout", *who,
                              "--size", args.train_size or r["size"], "--full-res", "--no-baselines",
                              "--json", target], log, left, REPO)
        if rc_eval == 0 and target.is_file():
            data = json.loads(target.read_text())
            evaluations[name] = {"network": data["summary"]["all"],
                                 "full_res": data.get("full_res", {}).get("summary", {}).get("all")}
    with tarfile.open(args.out / "train.tar.gz", "w:gz") as tar:
        for f in sorted(run.iterdir()):
            if f.suffix in (".csv", ".json", ".safetensors"):  # not the .pt files: optimiser state
                tar.add(f, arcname=f"run/{f.name}")
        for f in sorted(work.glob("eval_*.json")):
            tar.add(f, arcname=f.name)
    log_rows = list(csv.DictReader(open(run / "log.csv")))
    return {"recipe": r, "batch": args.batch, "amp": "--amp" in base, "stages": stages, "sec_per_step": rate,
            "planned_steps": steps,
            "steps_done": int(log_rows[-1]["step"]) if log_rows else 0, "finished": finished,
            "evaluations": evaluations}


# ---------------------------------------------------------------------------------------------- dry run


def make_dry_carry(root: Path) -> Path:
    """A tiny carry from skimage's real photos (no MediaPipe): 6 training photos, 2 held-out
    composites, an 8-frame 96x64 clip, elliptical masks. Exercises every part's code in seconds."""
    from skimage import data

    from trainer.recolor import DEFAULT_RECIPE
    from trainer.recolor import composite as recolour

    photos = {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
              "rocket": data.rocket(), "cat": data.cat(), "immunohistochemistry": data.immunohistochemistry()}

    def ellipse(h, w):
        yy, xx = np.mgrid[0:h, 0:w]
        m = (((yy - 0.6 * h) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1).astype(np.float32)
        return cv2.GaussianBlur(m, (0, 0), max(h, w) / 60)

    train, held = root / "pack" / "train", root / "pack" / "heldout"
    for d in (train / "real_images", train / "masks", held / "composite_images", held / "masks", held / "real_images"):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (name, rgb) in enumerate(photos.items()):
        rgb = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA)
        mask = ellipse(48, 64)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(train / "real_images" / f"{name}.jpg"), bgr)
        cv2.imwrite(str(train / "masks" / f"{name}_1.png"), np.round(mask * 255).astype(np.uint8))
        if i < 2:
            comp = recolour(rgb, mask, rng, DEFAULT_RECIPE)
            cv2.imwrite(str(held / "real_images" / f"{name}.jpg"), bgr)
            cv2.imwrite(str(held / "masks" / f"{name}_1.png"), np.round(mask * 255).astype(np.uint8))
            cv2.imwrite(str(held / "composite_images" / f"{name}_1_1.jpg"), cv2.cvtColor(comp, cv2.COLOR_RGB2BGR))
            names.append(f"{name}_1_1.jpg")
    (held / "heldout_test.txt").write_text("\n".join(names) + "\n")
    clip = root / "clip"
    clip.mkdir(parents=True)
    size = (96, 64)
    person = cv2.cvtColor(cv2.resize(photos["astronaut"], size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(clip / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    masks = []
    for k in range(8):
        writer.write(np.roll(person, k, axis=1))
        masks.append(np.round(np.roll(ellipse(64, 96), k, axis=1) * 255).astype(np.uint8))
    writer.release()
    np.savez_compressed(clip / "masks.npz", masks=np.stack(masks))
    cv2.imwrite(str(clip / "background.jpg"), cv2.resize(cv2.cvtColor(photos["rocket"], cv2.COLOR_RGB2BGR), size))
    return root


# ---------------------------------------------------------------------------------------------- main


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results folder ($OUT on the device)")
    p.add_argument("--carry", type=Path, default=REPO / ".gpu", help="scripts/make_gpu_pack.py's output")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, a carry made on the spot: seconds")
    p.add_argument("--budget-s", type=float, default=500.0, help="the whole session ends within this")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--tests-s", type=float, default=40.0, help="time box of the gpu-marked tests")
    p.add_argument("--engine-s", type=float, default=90.0, help="time box of the engine part")
    p.add_argument("--pipeline-s", type=float, default=60.0, help="time box of the pipeline part")
    p.add_argument("--train-minutes", type=float, default=6.0, help="at most this long on training")
    p.add_argument("--batch", type=int, default=16, help="training batch (scripts/train_default.sh --gpu's)")
    p.add_argument("--train-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--from-scratch", action="store_true",
                   help="train the recipe from scratch (default: go on from the shipped weights, stage 3)")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="learning rate when going on from the shipped weights")
    p.add_argument("--ema", type=float, default=0.999, help="weight average's decay when going on from the shipped weights")
    p.add_argument("--model-overrides", default=None, help="JSON; default: the recipe's")
    p.add_argument("--recipe-weights", default=None,
                   help="weights whose recipe (JSON metadata) is trained; default: the shipped weights")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 256, 1024])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--measure-s", type=float, default=0.75, help="at most this long per engine measurement")
    p.add_argument("--pipeline-run-s", type=float, default=3.0, help="at most this long per pipeline run")
    p.add_argument("--frames", type=int, default=600, help="pipeline frames per run")
    p.add_argument("--warmup-frames", type=int, default=20)
    p.add_argument("--agreement-frames", type=int, default=5)
    p.add_argument("--calibration-s", type=float, default=120.0, help="time box of the first steps")
    p.add_argument("--max-steps", type=int, default=None, help="cap the planned steps (the dry run's 3)")
    p.add_argument("--calibration-steps", type=int, default=80, help="more than an epoch (DataLoader restarts)")
    p.add_argument("--eval-s", type=float, default=6.0, help="expected cost of one held-out evaluation")
    p.add_argument("--eval-reserve-s", type=float, default=60.0, help="kept after training for the evaluations")
    return p


# --dry-run's settings (where the command line leaves the defaults): every code path, tiny and short.
DRY_RUN = {"sizes": [32], "iters": 3, "warmup": 1, "measure_s": 0.5, "pipeline_run_s": 1.0, "frames": 4,
           "warmup_frames": 1, "agreement_frames": 1, "calibration_steps": 2, "max_steps": 3, "batch": 2,
           "train_size": 32, "train_minutes": 1.0, "eval_s": 0.0, "eval_reserve_s": 0.0, "budget_s": 300.0}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.dry_run:
        for key, value in DRY_RUN.items():
            if getattr(args, key) == get_args_parser().get_default(key):
                setattr(args, key, value)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "log.txt")
    t_end = time.monotonic() + args.budget_s
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        log(f"error: unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu_session_"))
    carry = make_dry_carry(work / "carry") if args.dry_run else args.carry
    summary = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "dry_run": args.dry_run,
               "budget_s": args.budget_s, "parts": {}}
    log(f"gpu session: parts {parts}, budget {args.budget_s:.0f} s, carry {carry}, out {args.out}")
    for name in parts:
        left = t_end - time.monotonic()
        after = parts[parts.index(name) + 1:]
        boxes = {"smoke": 60.0, "engine": args.engine_s, "pipeline": args.pipeline_s, "tests": args.tests_s,
                 "train": left - (args.tests_s if "tests" in after else 0.0)}  # the tests come last
        box = min(boxes[name], left)
        log(f"== {name} (time box {box:.0f} s)")
        started = time.monotonic()
        try:
            if box <= 1:
                raise TimeoutError("no time left")
            if name == "smoke":
                result = smoke(args, log)
            elif name == "engine":
                result = engine_part(args, log, box)
            elif name == "pipeline":
                result = pipeline_part(args, log, box, carry)
            elif name == "tests":
                result = tests_part(args, log, box)
            else:
                result = train_part(args, log, box, carry, work)
            summary["parts"][name] = {"ok": True, "seconds": time.monotonic() - started, **result}
        except Exception as exc:  # a failed part is reported, and the next one still runs
            log(f"  {name} failed: {type(exc).__name__}: {exc}")
            log(traceback.format_exc())
            summary["parts"][name] = {"ok": False, "seconds": time.monotonic() - started,
                                      "error": f"{type(exc).__name__}: {exc}"}
        write_json(args.out / "summary.json", summary)
    summary["seconds"] = args.budget_s - (t_end - time.monotonic())
    write_json(args.out / "summary.json", summary)
    (args.out / "summary.md").write_text(summary_markdown(summary))
    shutil.rmtree(work, ignore_errors=True)
    failed = [n for n, p in summary["parts"].items() if not p["ok"]]
    log(f"done in {summary['seconds']:.0f} s" + (f"; failed parts: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def summary_markdown(summary: dict) -> str:
    lines = ["# GPU session", "", f"Started {summary['started']}, {summary['seconds']:.0f} s"
             + (" (dry run)" if summary["dry_run"] else ""), ""]
    for name, part in summary["parts"].items():
        lines.append(f"## {name}: {'ok' if part['ok'] else 'FAILED: ' + part['error']} ({part['seconds']:.0f} s)")
        if name == "engine" and part["ok"]:
            lines += [f"- {b['model']} {b['size']}: {b['fastest']} p50 {b['p50_ms']:.3f} ms, fp32 eager "
                      f"{b['fp32_eager_p50_ms']:.3f} ms ({b['speedup']:.1f}x)" for b in part["best"]]
        if name == "pipeline" and part["ok"]:
            lines += [f"- {r['run']} (frames from {r['frames_from']}): {r['fps']:.1f} FPS" if r["fps"] else
                      f"- {r['run']} (frames from {r['frames_from']}): not measured" for r in part["runs"]]
            lines.append(f"- agreement with the CPU path: {part['agreement']}")
        if name == "tests" and part["ok"]:
            lines.append(f"- {part['pytest']}")
        if name == "train" and part["ok"]:
            lines.append(f"- {part['steps_done']} of {part['planned_steps']} steps, {part['sec_per_step'] * 1000:.1f} "
                         f"ms/step, batch {part['batch']}, stages {part['stages']}")
            for who, e in part["evaluations"].items():
                full = e.get("full_res") or {}
                lines.append(f"- {who}: PSNR {e['network']['psnr']:.2f} dB at the network size"
                             + (f", {full['psnr']:.2f} dB at full resolution" if full else ""))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
