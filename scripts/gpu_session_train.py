"""The GPU session's training part (scripts/gpu_session.py): the shipped recipe for the minutes left.

The first steps double as the speed measurement; the schedule is then sized to the time box, checkpointed
and evaluated on the held-out set every minute; the best weights and the shipped ones are evaluated alike
(train.tar.gz). `run_logged` runs a command with its output in the session's log (the tests part uses it).
"""

from __future__ import annotations

import csv
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from gpu_session_common import REPO, Log


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
