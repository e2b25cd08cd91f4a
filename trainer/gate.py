"""Fit the harmony gate (engine.gate): how much of the Harmonizer's correction to keep, per picture.

    python -m trainer.gate --data .pack/train --out engine/weights/default.gate.safetensors \
        --per-image 8                                   # about 15 minutes on 2 cores

Samples: every training photo (longest side 512), ``--per-image`` times, drawn from trainer.mixture
(every strength of re-colouring including none, crops, camera-like frames). Each runs through the real `engine.Harmonizer` (the weights the gate is for, no gate): its gate features
are recorded, and its output at the photo's size gives three sums over the picture, r.r, r.d and d.d with
r = truth - composite and d = output - composite. The output blended by an amount a is
composite + a * d (to first order: the gate scales the correction's parameters), whose squared error is
r.r - 2a r.d + a^2 d.d: every candidate amount's PSNR gain is known exactly without running anything
again. The MLP maximises the mean gain, with each dB lost counted HARM_WEIGHT times over.

The photos' statistics barely change between draws, so dropout and weight decay keep the MLP general
(as for the colour prior); a share of the photos is held out for the report.
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.gate import FEATURES, Gate
from trainer.cli import run_main
from trainer.mixture import draw_composite
from trainer.mlp import make_mlp, mlp_tensors, standardised

HARM_WEIGHT = 1.5  # a dB lost counts this many times a dB gained
#: Squared error (0..255) below which a picture counts as perfect: about 45 dB, where no difference shows.
#: Without a floor an unchanged photo (error 0) makes any change an infinite loss, and those draws drown
#: the rest (the gate then shrinks every correction).
MSE_FLOOR = 2.0
# The loss weights of the unchanged photos and of the part-way re-colourings against the full ones: the
# gate learns how far a person is from fitting from all three, but the full re-colourings (what the
# held-out evaluation and a real mismatch look like) set the balance; at weight 1 the two others made it
# shrink every correction (docs/model_card.md, "Do no harm").
EASY_WEIGHT = 0.3
PARTIAL_WEIGHT = 0.3
_photos: list | None = None
_harmonizer = None


class Recorder:
    """A gate that keeps the features it is shown and applies every correction whole."""

    def __init__(self):
        self.seen = None

    def __call__(self, features: np.ndarray) -> float:
        self.seen = np.asarray(features, np.float32)
        return 1.0


def _init(data: str, weights: str | None) -> None:
    global _photos, _harmonizer
    from engine.harmonizer import Harmonizer
    from trainer.datasets import SynthesisDataset

    _photos = SynthesisDataset(Path(data), size=256, seed=0, cache_side=512).items
    recorder = Recorder()
    _harmonizer = (Harmonizer(model=weights, backend="onnxruntime", threads=1, gate=recorder), recorder)


def draw_sample(photo: tuple, seed: int, index: int, draw: int):
    """(gate features (FEATURES,), [r.r, r.d, d.d] per pixel value, strength t) of one draw, or None when
    the Harmonizer left the picture alone (no person)."""
    harmonizer, recorder = _harmonizer
    rng = np.random.default_rng((seed, index, draw))
    comp, real, mask, t = draw_composite(photo[1], photo[2], rng)
    harmonizer.reset()
    recorder.seen = None
    out = harmonizer.apply(harmonizer.estimate(comp, mask), comp, mask)
    if recorder.seen is None:
        return None
    r = real.astype(np.float64) - comp
    d = out.astype(np.float64) - comp
    n = r.size
    sums = np.array([(r * r).sum() / n, (r * d).sum() / n, (d * d).sum() / n], np.float64)
    return recorder.seen, sums, t


def _work(job):
    index, draw, seed = job
    return index, draw_sample(_photos[index], seed, index, draw)


def draw_samples(data: Path, per_image: int, seed: int = 0, weights: str | None = None,
                 workers: int | None = None, progress: bool = True):
    """(features (N, FEATURES), sums (N, 3), strengths (N,), photo index (N,)) for photos x per_image draws."""
    _init(str(data), weights)
    jobs = [(i, k, seed) for k in range(per_image) for i in range(len(_photos))]
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    bar = dict(total=len(jobs), desc="gate samples", unit="composite", disable=not progress)
    if workers <= 1:
        results = [_work(j) for j in tqdm(jobs, **bar)]
    else:
        # forkserver: this process has threads (torch, ONNX Runtime); each worker builds its own Harmonizer.
        with get_context("forkserver").Pool(workers, initializer=_init, initargs=(str(data), weights)) as pool:
            results = list(tqdm(pool.imap(_work, jobs, chunksize=8), **bar))
    kept = [(i, r) for i, r in results if r is not None]
    features = np.stack([r[0] for _, r in kept])
    sums = np.stack([r[1] for _, r in kept])
    strengths = np.array([r[2] for _, r in kept], np.float32)
    photos = np.array([i for i, _ in kept])
    return features, sums, strengths, photos


def gains(sums: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """PSNR gain (dB) over the composite of composite + amount * d, from the sums [r.r, r.d, d.d]."""
    rr, rd, dd = (sums[:, k] for k in range(3))
    after = rr - 2 * amount * rd + amount ** 2 * dd
    return 10 * np.log10(np.maximum(rr, MSE_FLOOR) / np.maximum(after, MSE_FLOOR))


def _torch_gains(sums: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    rr, rd, dd = sums.unbind(1)
    after = rr - 2 * amount * rd + amount ** 2 * dd
    return 10 * torch.log10(rr.clamp_min(MSE_FLOOR) / after.clamp_min(MSE_FLOOR))


def fit(features: np.ndarray, sums: np.ndarray, hidden: int = 128, epochs: int = 60, dropout: float = 0.1,
        weight_decay: float = 0.01, batch: int = 256, lr: float = 2e-3, max_amount: float = 1.0,
        harm_weight: float = HARM_WEIGHT, seed: int = 0, progress: bool = True,
        weights: np.ndarray | None = None) -> Gate:
    """Train the MLP on drawn samples (see the module docstring); returns the gate.

    weights: (N,) each sample's weight in the loss (default: all 1)."""
    if features.shape[1] != FEATURES:
        raise ValueError(f"features have {features.shape[1]} columns, expected {FEATURES}")
    torch.manual_seed(seed)
    mean, scale, f = standardised(features)
    s = torch.from_numpy(sums.astype(np.float64))
    w = torch.from_numpy(np.ones(len(f)) if weights is None else np.asarray(weights, np.float64))
    net = make_mlp(FEATURES, hidden, 1, dropout)
    # Starts at most of the correction (sigmoid(1) = 0.73 of max_amount), not saturated: the gradient
    # through the sigmoid is still large.
    torch.nn.init.constant_(net[-1].bias, 1.0)
    optimizer = torch.optim.AdamW(net.parameters(), lr / 2, weight_decay=weight_decay)
    batch = min(batch, len(f))
    if batch < 1 or epochs < 1:
        raise ValueError(f"nothing to fit: {len(f)} samples, {epochs} epochs")
    steps = epochs * (len(f) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="gate fit", unit="epoch", disable=not progress):
        net.train()
        order = torch.randperm(len(f), generator=generator)
        for b in range(len(f) // batch):
            idx = order[b * batch:(b + 1) * batch]
            amount = max_amount * torch.sigmoid(net(f[idx])[:, 0]).double()
            g = _torch_gains(s[idx], amount)
            loss = ((-g + harm_weight * torch.relu(-g)) * w[idx]).sum() / w[idx].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    return Gate(mlp_tensors(net, mean, scale), max_amount)


def report(label: str, sums: np.ndarray, strengths: np.ndarray, amount) -> str:
    """One line: mean gain, share made worse, worst, and the mean gain of the easy draws (t = 0)."""
    amount = np.broadcast_to(np.asarray(amount, np.float64), (len(sums),))
    g = gains(sums, amount)
    easy = strengths == 0
    return (f"{label}: mean gain {g.mean():+.2f} dB, worse {100 * (g < 0).mean():.1f} %, by > 1 dB "
            f"{100 * (g < -1).mean():.1f} %, worst {g.min():+.2f} dB; unchanged photos {g[easy].mean():+.2f} dB "
            f"(mean amount {amount[easy].mean():.2f}); full re-colourings {g[strengths == 1].mean():+.2f} dB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="make_dataset directory of training photos + masks")
    p.add_argument("--out", type=Path, required=True, help="where to write the gate (.safetensors)")
    p.add_argument("--weights", default=None, help="the weights the gate is for (default: the shipped ones)")
    p.add_argument("--per-image", type=int, default=8, help="composites drawn per photo")
    p.add_argument("--samples", type=Path, default=None, help="cache of drawn samples (.npz): read if it "
                   "exists, else written")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--easy-weight", type=float, default=EASY_WEIGHT, help="the unchanged photos' weight in the loss")
    p.add_argument("--partial-weight", type=float, default=PARTIAL_WEIGHT,
                   help="the part-way re-colourings' weight in the loss")
    p.add_argument("--max-amount", type=float, default=1.0, help="the largest share of a correction applied")
    p.add_argument("--harm-weight", type=float, default=HARM_WEIGHT)
    p.add_argument("--holdout", type=float, default=0.1, help="share of photos kept out of the fit, for the report")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.per_image < 1:
        raise ValueError(f"--per-image must be >= 1, got {args.per_image}")
    if args.samples is not None and args.samples.is_file():
        cached = np.load(args.samples)
        features, sums, strengths, photos = (cached[k] for k in ("features", "sums", "strengths", "photos"))
    else:
        features, sums, strengths, photos = draw_samples(args.data, args.per_image, args.seed, args.weights,
                                                         args.workers)
        if args.samples is not None:
            args.samples.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.samples, features=features, sums=sums, strengths=strengths, photos=photos)
    rng = np.random.default_rng(args.seed)
    held = np.isin(photos, rng.permutation(photos.max() + 1)[:int(round(args.holdout * (photos.max() + 1)))])
    train = ~held
    weights = np.where(strengths == 0, args.easy_weight, np.where(strengths < 1, args.partial_weight, 1.0))
    gate = fit(features[train], sums[train], args.hidden, args.epochs, args.dropout, args.weight_decay,
               max_amount=args.max_amount, harm_weight=args.harm_weight, seed=args.seed, weights=weights[train])
    lines = []
    for label, part in (("fit photos", train), ("held-out photos", held)):
        if part.any():
            lines.append(report(f"{label}, whole correction", sums[part], strengths[part], 1.0))
            lines.append(report(f"{label}, gated", sums[part], strengths[part], gate(features[part])))
    print("\n".join(lines))
    if held.any():  # the shipped gate is refitted on every photo, with the same settings
        gate = fit(features, sums, args.hidden, args.epochs, args.dropout, args.weight_decay,
                   max_amount=args.max_amount, harm_weight=args.harm_weight, seed=args.seed, progress=False,
                   weights=weights)
    metadata = {"samples": str(len(features)), "per_image": str(args.per_image), "data": str(args.data),
                "hidden": str(args.hidden), "epochs": str(args.epochs), "seed": str(args.seed),
                "harm_weight": str(args.harm_weight), "easy_weight": str(args.easy_weight),
                "partial_weight": str(args.partial_weight),
                "mse_floor": str(MSE_FLOOR), "report": " | ".join(lines)}
    path = gate.save(args.out, metadata)
    print(f"harmony gate: {len(features)} composites, hidden {args.hidden} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
