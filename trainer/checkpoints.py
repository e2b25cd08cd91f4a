"""What a training run keeps on disk and brings back: checkpoints for an exact ``--resume`` (model, optimiser,
RNG states, step, stage, best PSNR, the weight average), the best weights as a shippable file, and the run's
two CSV logs."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.schedule import apply_stage, stage_at


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(path: Path, model, optimizer, step: int, stage_index: int, best: float, args, device,
                    ema: WeightAverage | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model_name": model.name, "model_config": dataclasses.asdict(model.config),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "stage_index": stage_index, "best_psnr": best, "rng": rng_state(device),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **({"ema": ema.shadow} if ema is not None else {}),
    }, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind a crash


def save_best_weights(model, path: Path, step: int, best: float, args) -> None:
    """The best model as a shippable weights file (engine.weights), with the recipe in its metadata."""
    from engine.weights import save_weights

    recipe = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save_weights(model, path, extra={"trainer": {"step": step, "heldout_psnr": best, "args": recipe}})


class WeightAverage:
    """An exponential moving average of the model's floating-point tensors (weights and BatchNorm
    statistics), evaluated and shipped in place of the last step's weights.

    Why: on a CPU budget the runs are short and the held-out PSNR of single checkpoints swings by
    +-0.3 dB from one evaluation to the next; the average over the last ~1/(1-decay) steps is steadier,
    so the held-out set picks less by chance (docs/model_card.md has the figures).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        model = getattr(model, "module", model)  # DistributedDataParallel's wrapper names tensors module.*
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Inside, the model holds the averaged tensors; afterwards its own again."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(own, strict=False)


@dataclass
class RunState:
    """What a checkpoint restores: the global step, the best held-out PSNR, the current stage and the
    weight average (if --ema)."""

    step: int = 0
    best: float = -math.inf
    stage_index: int = 0
    ema: WeightAverage | None = None


def restore(args, model, stages, device, world):
    """(RunState, wrapped model, optimiser), from --resume's checkpoint or fresh."""
    state = RunState(stage_index=stage_at(stages, 0))
    ckpt = None
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
        if ckpt["model_name"] != model.name:
            raise ValueError(f"--resume {args.resume} holds a {ckpt['model_name']!r} model, not {model.name!r}")
        model.load_state_dict(ckpt["model"])
        state = RunState(int(ckpt["step"]), float(ckpt["best_psnr"]), int(ckpt["stage_index"]))
    if args.ema:
        state.ema = WeightAverage(model, args.ema)  # from the weights it starts from, or the checkpoint's average
        if ckpt is not None and "ema" in ckpt:
            state.ema.shadow = {k: v.to(device) for k, v in ckpt["ema"].items()}
    wrapped, optimizer = apply_stage(model, stages[state.stage_index], device, world)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
    return state, wrapped, optimizer


class MetricLogger:
    """The run's two CSV files (torchvision's MetricLogger, reduced): every step's loss terms in log.csv,
    held-out metrics in eval.csv. A resumed run appends; a new run starts them afresh. Rank 0 only."""

    EVAL_FIELDS = ("step", "psnr", "fpsnr", "mse", "fmse", "count")

    def __init__(self, out: Path, resume: bool, lm: bool, log_every: int):
        fields = ["step", "epoch", "stage", "lr", "total", "psnr", "fn_mse", "grad"] + (["lm"] if lm else [])
        self._files, self._writers = [], []
        for name, columns in (("log.csv", fields + ["sec_per_step"]), ("eval.csv", self.EVAL_FIELDS)):
            new = not resume or not (out / name).exists()
            f = open(out / name, "w" if new else "a", newline="")
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            f.flush()  # headers on disk now: a run killed before its first flush must still resume cleanly
            self._files.append(f)
            self._writers.append(writer)
        self.log_every = log_every

    def step(self, row: dict) -> None:
        self._writers[0].writerow(row)
        if row["step"] % self.log_every == 0:
            self._files[0].flush()

    def evaluation(self, step: int, metrics: dict) -> None:
        self._writers[1].writerow({"step": step, **{k: metrics[k] for k in self.EVAL_FIELDS[1:]}})
        self._files[1].flush()

    def close(self) -> None:
        for f in self._files:
            f.close()
