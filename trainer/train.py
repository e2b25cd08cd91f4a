"""Train PHNet on one device or many (torchrun + DistributedDataParallel), with PHNet's staged schedule.

    python -m trainer.train --synth .pack/train --eval-data .pack/heldout --model phnet-xs \
        --stages 1:6000:3e-4,3:2000:1e-4 --batch 8 --size 256 --out runs/xs
    torchrun --nproc_per_node 4 -m trainer.train --synth .pack/train ... --amp     # 4 GPUs, bf16 autocast
    python -m trainer.train ... --resume runs/xs/last.pt                           # continue exactly

Data: ``--data DIR`` (fixed iHarmony4-layout composites, the train list) or ``--synth DIR`` (fresh FFHQH
re-colourings of the photos + masks every epoch; see trainer.datasets). ``--stages`` is a comma list of
``KIND:STEPS:LR`` run one after the other, KIND being the paper's stage: 1 = no PFE, everything trained;
2 = PFE on, encoder frozen; 3 = PFE on, everything trained (paper: 1:..:1e-4, 2:..:1e-5, 3:..:1e-7).
``--steps`` stops the run early at that global step (the schedule stays the same, so a stopped run resumes
into exactly the same schedule).

Exactness of ``--resume``: the checkpoint holds the model (name, config, tensors), the optimiser, the torch
RNG states and the step; data order and augmentations are functions of (seed, epoch, index) only, and the
sampler skips the batches of the current epoch already seen. A resumed CPU run therefore ends with the
same weights as an uninterrupted one (tests/test_trainer_train.py checks it).

Outputs in ``--out``: ``log.csv`` (every loss term per step), ``eval.csv`` (held-out metrics every
``--eval-every`` steps), ``ckpt_<step>.pt``, ``last.pt``, ``best.pt`` and ``best.safetensors`` (+ .json,
via engine.weights.save_weights) for the best held-out PSNR.

The schedule's stages are trainer.schedule's; checkpoints, the weight average and the CSV logs are
trainer.checkpoints'; this module sets up the processes and data and runs the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from engine.colour_prior import load_prior, prior_path
from trainer.checkpoints import (
    MetricLogger,
    RunState,
    WeightAverage,
    restore,
    save_best_weights,
    save_checkpoint,
)
from trainer.cli import run_main
from trainer.datasets import IHarmonyDataset, PriorCorrected, SynthesisDataset
from trainer.evaluate import evaluate_model, run_model
from trainer.losses import harmonization_loss
from trainer.schedule import Stage, apply_stage, parse_stages, stage_at


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the first ``skip`` indices of an epoch (for an exact resume)."""

    skip = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


# ---------------------------------------------------------------------------------------------- set-up


def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if device_arg == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for but torch.cuda.is_available() is False")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return rank, world, device


def build_model(args) -> torch.nn.Module:
    from engine.phnet import create_model

    if args.resume is not None:  # the checkpoint says which model and config (--init or overrides made it)
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
        return create_model(ckpt["model_name"], **ckpt["model_config"])
    if args.init is not None:  # start from trained weights (their file says which model and config)
        from engine.weights import load_weights

        model = load_weights(args.init)
        if model.name != args.model:
            raise ValueError(f"--init {args.init} holds a {model.name!r} model, not --model {args.model!r}")
        return model.train()
    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    torch.manual_seed(args.seed)  # same initial weights in every process and every rerun
    return create_model(args.model, **overrides)


def build_train_data(args, rank: int, world: int):
    if args.synth is not None:
        recolor_side = max(args.size, int(round(args.size * args.recolor_scale)))
        dataset = SynthesisDataset(args.synth, size=args.size, seed=args.seed, cache_side=args.cache_side,
                                   recolor_side=recolor_side)
    else:
        dataset = IHarmonyDataset(args.data, split="train", size=args.size, train=True, seed=args.seed)
    if args.prior is not None:
        dataset = PriorCorrected(dataset, load_prior(str(args.prior)))
    if len(dataset) < args.batch * world:
        raise ValueError(f"training set has {len(dataset)} samples, fewer than one global batch "
                         f"({args.batch} x {world} processes)")
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                               drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=torch.cuda.is_available())
    steps_per_epoch = (len(dataset) // world) // args.batch
    return dataset, sampler, loader, steps_per_epoch


def broadcast_buffers(model: torch.nn.Module, world: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats drift apart between DDP's broadcasts)."""
    if world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


# ---------------------------------------------------------------------------------------------- loops


def train_one_step(model, optimizer, batch, device, args, ema: WeightAverage | None = None) -> dict[str, float]:
    composite = batch["composite"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    real = batch["real"].to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda"):
        harmonized = run_model(model, composite, mask)
    losses = harmonization_loss(harmonized.float(), real, mask, lm_weight=args.lm_weight)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if args.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return {k: v.detach() for k, v in losses.items()}


def reduce_mean(values: dict[str, torch.Tensor], world: int) -> dict[str, float]:
    """Average the loss terms over processes (for logging only)."""
    keys = sorted(values)
    flat = torch.stack([values[k].float().cpu() for k in keys])
    if world > 1:
        dist.all_reduce(flat)
        flat /= world
    return {k: float(v) for k, v in zip(keys, flat)}


def evaluate(model, eval_set, device) -> dict:
    summary, _, _ = evaluate_model(model, eval_set, device=device)
    return summary["all"]


def check_ranks_agree(model: torch.nn.Module, world: int, out: Path, is_main: bool) -> list[str]:
    """Gather every rank's weights digest; rank 0 writes them to ranks.json. Raises if they differ.

    A cheap end-of-run guard: DDP keeps replicas equal only if every rank ran the same optimiser steps.

    Raises:
        RuntimeError: if the ranks ended with different weights.
    """
    from engine.weights import model_fingerprint

    digests = [model_fingerprint(model)]
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, model_fingerprint(model))
    if is_main:
        (out / "ranks.json").write_text(json.dumps({"world_size": world, "digests": digests}, indent=2) + "\n")
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    return digests


def main(args) -> int:
    train(args)
    return 0


def after_step(args, model, optimizer, state: RunState, last: bool, eval_set, logger, device, world) -> None:
    """Held-out evaluation (best weights kept) and checkpoints, on their schedules and at the end."""
    out = Path(args.out)
    if eval_set is not None and (state.step % args.eval_every == 0 or last):
        # With --ema the average is what is evaluated and shipped; the checkpoint keeps both.
        with state.ema.applied(model) if state.ema is not None else contextlib.nullcontext(model):
            metrics = evaluate(model, eval_set, device)
            logger.evaluation(state.step, metrics)
            tqdm.write(f"step {state.step}: held-out PSNR {metrics['psnr']:.2f} dB, fMSE {metrics['fmse']:.1f}")
            improved = metrics["psnr"] > state.best
            if improved:
                state.best = metrics["psnr"]
                save_best_weights(model, out / "best.safetensors", state.step, state.best, args)
        if improved:
            save_checkpoint(out / "best.pt", model, optimizer, state.step, state.stage_index, state.best, args,
                            device, state.ema)
    if state.step % args.ckpt_every == 0 or last:
        broadcast_buffers(model, world)
        if logger is not None:
            for path in (out / f"ckpt_{state.step:07d}.pt", out / "last.pt"):
                save_checkpoint(path, model, optimizer, state.step, state.stage_index, state.best, args, device,
                                state.ema)


def time_up(deadline: float, world: int, device: torch.device) -> bool:
    """Whether --time-limit has passed, decided by all processes together (a rank stopping alone would
    leave the others waiting in DDP's all-reduce)."""
    if deadline == math.inf:
        return False
    up = torch.tensor([float(time.monotonic() > deadline)], device=device)
    if world > 1:
        dist.all_reduce(up, op=dist.ReduceOp.MAX)
    return bool(up.item())


def check_args(args) -> tuple[list[Stage], int]:
    """(stages, the step to stop at) after checking the arguments that need more than argparse."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size <= 0 or args.size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, got {args.size}")
    if (args.data is None) == (args.synth is None):
        raise ValueError("give exactly one of --data DIR (fixed composites) or --synth DIR (on-the-fly synthesis)")
    stages = parse_stages(args.stages)
    total_steps = sum(s.steps for s in stages)
    return stages, min(total_steps, args.steps) if args.steps else total_steps


def adopt_prior(args, model: torch.nn.Module) -> None:
    """--prior, or the one --init's or --resume's weights were trained behind: recorded in the model's
    config (so its weights file names it) and in args (the data is re-coloured by it)."""
    if args.prior is None:
        args.prior = prior_path(model)  # None where the weights name none
    if args.prior is not None:
        if getattr(model.config, "output", None) != "affine":
            raise ValueError("--prior needs an affine-head model (--model-overrides '{\"output\": \"affine\"}')")
        model.config.colour_prior = str(Path(args.prior).resolve())


def build_eval_set(args):
    """The held-out set at --eval-size (else --size); behind the prior where the network is trained behind one,
    so that it is judged on what the Harmonizer gives it."""
    eval_set = IHarmonyDataset(args.eval_data, "test", size=args.eval_size or args.size)
    return PriorCorrected(eval_set, load_prior(str(args.prior))) if args.prior is not None else eval_set


def train(args) -> torch.nn.Module:
    """Run the whole training described by ``args`` (get_args_parser) and return the trained model."""
    stages, end_step = check_args(args)
    rank, world, device = setup_distributed(args.device)
    is_main = rank == 0
    out = Path(args.out)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2) + "\n")
    model = build_model(args).to(device)
    adopt_prior(args, model)
    dataset, sampler, loader, steps_per_epoch = build_train_data(args, rank, world)
    eval_set = build_eval_set(args) if (args.eval_data and is_main) else None
    state, wrapped, optimizer = restore(args, model, stages, device, world)
    logger = MetricLogger(out, bool(args.resume), args.lm_weight > 0, args.log_every) if is_main else None
    bar = tqdm(total=end_step, initial=state.step, desc="train", unit="step",
               disable=not is_main or args.no_progress)
    model.train()
    deadline = time.monotonic() + 60 * args.time_limit if args.time_limit is not None else math.inf
    try:
        last = state.step >= end_step
        while not last:
            epoch, offset = divmod(state.step, steps_per_epoch)
            sampler.set_epoch(epoch)
            sampler.skip = offset * args.batch
            dataset.set_epoch(epoch)
            t_last = time.perf_counter()
            for batch in loader:
                index = stage_at(stages, state.step)
                if index != state.stage_index:
                    state.stage_index = index
                    wrapped, optimizer = apply_stage(model, stages[index], device, world)
                losses = reduce_mean(train_one_step(wrapped, optimizer, batch, device, args, state.ema), world)
                state.step += 1
                stage = stages[state.stage_index]
                if is_main:
                    logger.step({"step": state.step, "epoch": epoch, "stage": stage.kind, "lr": stage.lr,
                                 **{k: f"{v:.6g}" for k, v in losses.items()},
                                 "sec_per_step": f"{time.perf_counter() - t_last:.4f}"})
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['total']:.4f}", stage=stage.kind)
                # --time-limit ends the run like its last step (evaluated, checkpointed, resumable).
                last = state.step >= end_step or time_up(deadline, world, device)
                after_step(args, model, optimizer, state, last, eval_set, logger, device, world)
                t_last = time.perf_counter()  # evaluation and checkpoints are not counted as step time
                if last:
                    break
        broadcast_buffers(model, world)
        check_ranks_agree(model, world, out, is_main)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
        if world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    if is_main:
        print(f"done: step {state.step}, best held-out PSNR {state.best:.2f} dB, outputs in {out}")
    return model


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("data")
    src.add_argument("--data", type=Path, default=None, help="iHarmony4-layout set (its *_train.txt list)")
    src.add_argument("--synth", type=Path, default=None, help="make_dataset output: photos+masks, re-coloured live")
    src.add_argument("--eval-data", type=Path, default=None, help="held-out iHarmony4-layout set (its *_test.txt)")
    src.add_argument("--size", type=int, default=256, help="training/evaluation resolution (multiple of 8)")
    src.add_argument("--eval-size", type=int, default=None, help="held-out evaluation resolution (default --size)")
    src.add_argument("--cache-side", type=int, default=512, help="--synth: photos kept in memory at this side")
    src.add_argument("--recolor-scale", type=float, default=2.0,
                     help="--synth: re-colour crops at this multiple of --size, then shrink them (the recipe's "
                          "sharpening then looks as it does in a shrunk photo or camera frame; default 2)")
    src.add_argument("--prior", type=Path, default=None,
                     help="colour prior (trainer.prior): re-colour every composite by it first, as engine.Harmonizer "
                          "does at run time; the network learns what is left (default: the one --init's or "
                          "--resume's weights were trained behind, if any)")
    src.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    m = p.add_argument_group("model and schedule")
    m.add_argument("--model", default="phnet-xs", help="engine.phnet model name")
    m.add_argument("--model-overrides", default=None, help="JSON dict of config overrides")
    m.add_argument("--init", type=Path, default=None,
                   help="start from these weights (.safetensors) instead of a fresh initialisation")
    m.add_argument("--stages", default="1:1000:1e-4", help="KIND:STEPS:LR,... (see the module docstring)")
    m.add_argument("--steps", type=int, default=None, help="stop at this global step (default: end of --stages)")
    m.add_argument("--batch", type=int, default=16, help="batch size per process")
    m.add_argument("--lm-weight", type=float, default=0.0, help="weight of the luminance-matching loss (0: off)")
    m.add_argument("--ema", type=float, default=0.0,
                   help="evaluate and ship an exponential moving average of the weights with this decay "
                        "(e.g. 0.999; 0: off)")
    m.add_argument("--clip-grad", type=float, default=0.0, help="clip the gradient norm (0: off)")
    m.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="run directory")
    r.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    r.add_argument("--time-limit", type=float, default=None,
                   help="stop after this many minutes as if at the last step (evaluated, checkpointed)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on CPU)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    r.add_argument("--log-every", type=int, default=10, help="flush log.csv every N steps")
    r.add_argument("--eval-every", type=int, default=500)
    r.add_argument("--ckpt-every", type=int, default=500)
    r.add_argument("--no-progress", action="store_true")
    return p


def cli(argv: list[str] | None = None) -> int:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_main(cli))
