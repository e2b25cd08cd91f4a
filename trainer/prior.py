"""Train the colour prior (engine.colour_prior): colour statistics -> one global 3x4 transform, by an MLP.

    python -m trainer.prior --data .pack/train --out engine/weights/colour_prior.safetensors \
        --eval-data .pack/heldout                               # about 10 minutes on 2 cores

Samples: every training photo re-coloured ``--per-image`` times with the FFHQH recipe (trainer.recolor) at
its cached size (longest side 512), half of the draws on a random crop of the photo (other proportions of
person and background), then shrunk to the network's 256 px, where engine.Harmonizer computes the
features at run time. Each sample keeps its features and ``--pixels`` random pixels of the person, as
composite and truth. The loss is what the transform does to those pixels: the mean squared error of
``clip([r, g, b, 1] @ M)`` against the truth.

The statistics of one photo barely change between its re-colourings, so the MLP overfits the photos
quickly: dropout and weight decay keep it general (held-out PSNR peaks then falls without them).
"""

from __future__ import annotations

import argparse
import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.colour_prior import FEATURES, IDENTITY, ColourPrior, colour_features, recolour
from trainer.cli import run_main
from trainer.make_dataset import resize_max_side
from trainer.mlp import make_mlp, mlp_tensors, standardised

SIDE = 256  # where engine.Harmonizer computes the features (the network's longer side)
CROP_RANGE = (0.6, 1.0)  # a crop keeps this share of each side
_photos: list | None = None


def shrink(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Longest side at most `side`, area interpolation (as engine.Harmonizer shrinks to the network)."""
    return resize_max_side(image, side)


def _load_photos(data: str) -> None:
    global _photos
    from trainer.datasets import SynthesisDataset

    _photos = SynthesisDataset(Path(data), size=SIDE, seed=0, cache_side=512).items


def crop(real: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random crop (CROP_RANGE of each side); the whole photo where the crop loses the person or the
    background (under 3 % of it)."""
    h, w = real.shape[:2]
    ch, cw = int(h * rng.uniform(*CROP_RANGE)), int(w * rng.uniform(*CROP_RANGE))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    r, m = real[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]
    share = float((m >= 0.5).mean()) if m.size else 0.0
    return (r, m) if 0.03 <= share <= 0.97 else (real, mask)


def draw_sample(photo: tuple, seed: int, index: int, draw: int, pixels: int, mixture: bool = False,
                casts: float = 0.0):
    """(features, composite pixels, true pixels) of one fresh composite of `photo` = (stem, real, mask):
    the FFHQH recipe at full strength, on a crop every other draw (the shipped prior's samples), or with
    `mixture` from trainer.mixture (every strength including none, crops, camera-like frames; measured
    worse on the held-out photos, docs/model_card.md "Do no harm"). With `casts` > 0, that share of the
    FFHQH draws puts the person under a strong colour cast instead (trainer.camera.person_cast)."""
    from trainer.camera import person_cast
    from trainer.mixture import draw_composite
    from trainer.recolor import composite as make_composite

    _, real, mask = photo
    rng = np.random.default_rng((seed, index, draw))
    if mixture:
        comp, real, mask, _ = draw_composite(real, mask, rng)
    else:
        if draw % 2 == 1:
            real, mask = crop(real, mask, rng)
        # The extra draw only where casts are asked for: casts=0 keeps the shipped prior's samples exactly.
        cast = casts > 0 and rng.random() < casts
        comp = person_cast(real, mask, rng) if cast else make_composite(real, mask, rng)
    comp, real, mask = shrink(comp), shrink(real), shrink(mask.astype(np.float32))
    features = colour_features(comp, mask)
    person = np.flatnonzero(mask.reshape(-1) >= 0.5)
    if len(person) < 16:
        person = np.arange(mask.size)
    pick = rng.choice(person, pixels, replace=len(person) < pixels)
    return features.astype(np.float32), comp.reshape(-1, 3)[pick], real.reshape(-1, 3)[pick]


def _work(job):
    index, draw, seed, pixels, mixture, casts = job
    return draw_sample(_photos[index], seed, index, draw, pixels, mixture, casts)


def draw_samples(data: Path, per_image: int, seed: int = 0, pixels: int = 2048, workers: int | None = None,
                 progress: bool = True, mixture: bool = False, casts: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, FEATURES), composite pixels (N, P, 3) uint8, true pixels (N, P, 3) uint8) for
    N = photos x per_image fresh composites; the same for any number of workers."""
    _load_photos(str(data))
    jobs = [(i, k, seed, pixels, mixture, casts) for k in range(per_image) for i in range(len(_photos))]
    if not jobs:
        raise ValueError(f"no photos in {data}")
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    bar = dict(total=len(jobs), desc="prior samples", unit="composite", disable=not progress)
    if workers <= 1:
        results = [_work(j) for j in tqdm(jobs, **bar)]
    else:
        # forkserver, not fork: this process has threads (torch), and a forked copy of a held lock
        # deadlocks; each worker decodes the photos once.
        with get_context("forkserver").Pool(workers, initializer=_load_photos, initargs=(str(data),)) as pool:
            results = list(tqdm(pool.imap(_work, jobs, chunksize=32), **bar))
    return tuple(np.stack([r[k] for r in results]) for k in range(3))


def fit(features: np.ndarray, comp: np.ndarray, real: np.ndarray, hidden: int = 384, epochs: int = 20,
        dropout: float = 0.4, weight_decay: float = 0.05, batch: int = 256, lr: float = 2e-3, seed: int = 0,
        progress: bool = True, on_epoch=None) -> ColourPrior:
    """Train the MLP on drawn samples (see the module docstring); returns the prior (eval mode).

    on_epoch(epoch, prior): called after each epoch (held-out checks)."""
    if features.shape[1] != FEATURES:
        raise ValueError(f"features have {features.shape[1]} columns, expected {FEATURES}")
    torch.manual_seed(seed)
    mean, scale, f = standardised(features)
    x = torch.from_numpy(comp).float().div_(255.0)
    y = torch.from_numpy(real).float().div_(255.0)
    net = make_mlp(FEATURES, hidden, 12, dropout)
    torch.nn.init.zeros_(net[-1].bias)  # with the zero weight: starts as the identity transform
    identity = torch.from_numpy(IDENTITY).float()
    optimizer = torch.optim.AdamW(net.parameters(), lr / 2, weight_decay=weight_decay)
    batch = min(batch, len(f))  # a tiny set (tests, smoke runs) trains in one batch
    if batch < 1 or epochs < 1:
        raise ValueError(f"nothing to fit: {len(f)} samples, {epochs} epochs")
    steps = epochs * (len(f) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)

    def prior() -> ColourPrior:
        return ColourPrior(mlp_tensors(net, mean, scale))

    for epoch in tqdm(range(epochs), desc="prior fit", unit="epoch", disable=not progress):
        net.train()
        order = torch.randperm(len(f), generator=generator)
        for b in range(len(f) // batch):
            idx = order[b * batch:(b + 1) * batch]
            m = identity + net(f[idx]).view(-1, 4, 3)
            out = torch.clamp(x[idx] @ m[:, :3] + m[:, 3:], 0.0, 1.0)
            loss = ((out - y[idx]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        if on_epoch is not None:
            on_epoch(epoch, prior())
    return prior()


def heldout_psnr(prior: ColourPrior | None, heldout: list) -> float:
    """Mean PSNR at SIDE of the prior's transform alone (None: the untouched composite) on
    (composite uint8, real uint8, mask) triples."""
    from trainer.metrics import mse, psnr_from_mse

    values = []
    for comp, real, mask in heldout:
        out = comp
        if prior is not None:
            corrected = recolour(comp.astype(np.float32) / 255.0, mask, prior.matrix(comp, mask))
            out = np.clip(np.round(corrected * 255.0), 0, 255).astype(np.uint8)
        values.append(psnr_from_mse(mse(out, real)))
    return float(np.mean(values))


def load_heldout(data: Path) -> list:
    from trainer.datasets import IHarmonyDataset

    dataset = IHarmonyDataset(data, split="test", size=None)
    out = []
    for i in range(len(dataset)):
        s = dataset.load(i)
        out.append((shrink(s["composite"]), shrink(s["real"]), shrink(s["mask"].astype(np.float32))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="make_dataset directory of training photos + masks")
    p.add_argument("--out", type=Path, required=True, help="where to write the prior (.safetensors)")
    p.add_argument("--eval-data", type=Path, default=None, help="held-out iHarmony4-layout set: PSNR per epoch")
    p.add_argument("--per-image", type=int, default=24, help="composites drawn per photo")
    p.add_argument("--pixels", type=int, default=2048, help="person pixels kept per composite for the loss")
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=None, help="processes drawing samples (default: all cores)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixture", action="store_true", help="draw from trainer.mixture (every strength, "
                   "unchanged photos, camera-like frames) instead of the FFHQH recipe at full strength; tried "
                   "for the do-no-harm work and not kept (docs/model_card.md)")
    p.add_argument("--casts", type=float, default=0.0, help="share of the draws whose person is under a strong "
                   "colour cast (trainer.camera.person_cast) instead of the FFHQH recipe")
    p.add_argument("--samples", type=Path, default=None, help="cache of drawn samples (.npz): read if it "
                   "exists, else written")
    args = p.parse_args(argv)
    if not 0.0 <= args.casts <= 1.0:
        raise ValueError(f"--casts must be a share in [0, 1], got {args.casts}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.per_image < 1:
        raise ValueError(f"--per-image must be >= 1, got {args.per_image}")
    heldout = load_heldout(args.eval_data) if args.eval_data is not None else None
    if args.samples is not None and args.samples.is_file():
        cached = np.load(args.samples)
        features, comp, real = cached["features"], cached["comp"], cached["real"]
    else:
        features, comp, real = draw_samples(args.data, args.per_image, args.seed, args.pixels, args.workers,
                                            mixture=args.mixture, casts=args.casts)
        if args.samples is not None:
            args.samples.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.samples, features=features, comp=comp, real=real)

    def report(epoch: int, prior: ColourPrior) -> None:
        if heldout is not None:
            tqdm.write(f"epoch {epoch + 1}: held-out PSNR at {SIDE} px {heldout_psnr(prior, heldout):.3f} dB")

    prior = fit(features, comp, real, args.hidden, args.epochs, args.dropout, args.weight_decay, seed=args.seed,
                on_epoch=report)
    metadata = {"samples": str(len(features)), "per_image": str(args.per_image), "data": str(args.data),
                "hidden": str(args.hidden), "epochs": str(args.epochs), "seed": str(args.seed),
                "mixture": str(args.mixture), "casts": str(args.casts)}
    if heldout is not None:
        metadata["heldout_psnr"] = f"{heldout_psnr(prior, heldout):.3f}"
        metadata["heldout_identity_psnr"] = f"{heldout_psnr(None, heldout):.3f}"
    path = prior.save(args.out, metadata)
    print(f"colour prior: {len(features)} composites, hidden {args.hidden} -> {path}"
          + (f"; held-out {metadata['heldout_psnr']} dB (untouched {metadata['heldout_identity_psnr']})"
             if heldout is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
