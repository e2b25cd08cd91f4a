"""The GPU session's pipeline part (scripts/gpu_session.py): the 1080p clip through engine.gpu_frame.

The clip is decoded in a thread while the GPU works; runs with and without harmonization, fp16 graph and
fp32 eager; the network alone at the network's shape; the device path's agreement with the CPU path
(vcam.composite + engine.Harmonizer on torch/CPU) on the clip's real frames (pipeline.json, pipeline.md).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
from gpu_session_common import Log, engine_runner, percentiles, time_calls, write_json


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
    from engine.harmonizer import Harmonizer
    from engine.phnet import create_model, output_names
    from engine.resampling import net_shape
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
        # The app's harmonizer and apply (the person's own colours corrected, composited again; keep_detail as
        # the weights say; no sharpness step, off in the app as in the device path).
        harmonizer = Harmonizer(model=shipped, backend="torch", device="cpu", smoothing=0.1, sharpness=False)
        path = GpuFramePath(shipped, (width, height), background=background_rgb, device=device, smoothing=0.1)
        diffs = []
        for i, (frame, mask) in enumerate(zip(in_memory[:args.agreement_frames], masks)):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            comp = composite(rgb, background_rgb, mask.astype(np.float32) / 255)
            # frames 1/fps apart, as the device path assumes (the smoothing is a time constant)
            correction = harmonizer.estimate(comp, mask, timestamp=i / path.fps)
            reference = harmonizer.apply(correction, comp, mask, foreground=rgb, background=background_rgb)
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
