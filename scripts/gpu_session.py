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
The pipeline and training parts are in gpu_session_pipeline.py and gpu_session_train.py, what they share
in gpu_session_common.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the parts beside this file
from gpu_session_common import REPO, Log, Unavailable, engine_runner, percentiles, time_calls, write_json  # noqa: E402
from gpu_session_pipeline import pipeline_part  # noqa: E402
from gpu_session_train import recipe, run_logged, scale_stages, train_part  # noqa: E402

PARTS = ("smoke", "engine", "pipeline", "train", "tests")
__all__ = ["main", "make_dry_carry", "recipe", "scale_stages"]  # what tests/test_gpu_session.py reads


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
