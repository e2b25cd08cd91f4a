"""Grow a trained affine-head PHNet's global head with the linear baseline's statistics, fitted in closed form.

    python -m trainer.linear_init --checkpoint runs/affine/last.pt --data .pack/train \
        --out runs/affine/linear_init.safetensors

The global transform of the "affine" head is an MLP plus a linear map of colour statistics
(engine.phnet.GlobalTransform). This command takes a checkpoint (older ones whose MLP saw only the colour
moments are widened: the new inputs get zero weights, so the model is unchanged), then fits the linear
map by ridge regression to what the model still gets wrong: for fresh training composites, the single
3x4 transform that, added to the model's own per-cell transforms, best maps the composite's person to
the ground truth. The model then starts where the linear baseline would take it, at least, and training
(`trainer.train --init`) goes on from there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trainer.cli import run_main


def widened(checkpoint: Path) -> torch.nn.Module:
    """The checkpoint's model rebuilt with the current code; tensors whose shape grew are zero-padded."""
    from engine.phnet import create_model

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = create_model(ckpt["model_name"], **ckpt["model_config"])
    own = model.state_dict()
    for key, value in ckpt["model"].items():
        if key not in own:
            raise ValueError(f"{checkpoint}: {key} is not in the current {ckpt['model_name']} model")
        if own[key].shape != value.shape:
            if value.ndim != 2 or value.shape[0] != own[key].shape[0] or value.shape[1] > own[key].shape[1]:
                raise ValueError(f"{checkpoint}: {key} has shape {tuple(value.shape)}, cannot widen to "
                                 f"{tuple(own[key].shape)}")
            padded = torch.zeros_like(own[key])
            padded[:, :value.shape[1]] = value  # new input columns start at zero: the same function
            value = padded
        own[key] = value
    model.load_state_dict(own)
    return model.eval()


def residual_transform(coefficients: torch.Tensor, composite: torch.Tensor, real: torch.Tensor,
                       mask: torch.Tensor, shrink: float = 0.1) -> np.ndarray:
    """(12,) the global 3x4 transform d (layout of engine.affine) minimising |model(x) + d.[x, 1] - real|^2
    over the person (mask >= 0.5); None when the person or the background is too small to say.

    Solved in colours centred on the person's mean (the offset is then well determined by the mean
    residual) with a ridge on the colour gains proportional to each channel's own spread: a flat-coloured
    person (and a spread floor of 0.03) cannot produce the huge, cancelling gains an unregularised fit
    would."""
    from engine import affine

    current = affine.apply(coefficients[None], composite[None], clamp=False)[0]
    person = (mask[0] >= 0.5).flatten()
    if not 0.02 * person.numel() <= int(person.sum()) <= 0.98 * person.numel():
        return None  # too little person, or too little background, to say
    x = composite.flatten(1).T[person].double()
    y = (real - current).flatten(1).T[person].double()
    mu = x.mean(0)
    xc = x - mu
    xtx = xc.T @ xc
    gains = torch.linalg.solve(xtx + shrink * torch.diag(torch.diagonal(xtx)) + 1e-3 * len(x) * torch.eye(3,
                               dtype=x.dtype), xc.T @ y)  # (3, 3): rows input channel, columns output
    offset = y.mean(0) - mu @ gains
    return torch.cat([gains, offset[None]], 0).reshape(12).numpy()  # rows r, g, b, 1 -> [c_r, c_g, c_b, bias]


@torch.no_grad()
def collect(model, data: Path, size: int, samples: int, seed: int):
    """(colour features (N, F), residual transforms (N, 12)) on fresh composites of the training photos."""
    from engine.phnet import GlobalTransform
    from trainer.datasets import SynthesisDataset

    dataset = SynthesisDataset(data, size=size, seed=seed, cache_side=2 * size)
    feats, targets = [], []
    for n in tqdm(range(samples), desc="linear init", unit="sample"):
        dataset.set_epoch(n // len(dataset))
        s = dataset[n % len(dataset)]
        comp, mask, real = s["composite"][None], s["mask"][None], s["real"][None]
        coefficients, _ = model(comp, mask, 1 - mask, torch.zeros(1, model.stats_size), torch.zeros(1))
        target = residual_transform(coefficients[0], comp[0], real[0], mask[0])
        if target is not None:
            feats.append(GlobalTransform.colour_features(comp, mask, 1 - mask)[0].double().numpy())
            targets.append(target)
    return np.array(feats), np.array(targets)


def ridge(features: np.ndarray, targets: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(weight (12, F), bias (12,)) of targets ~ features @ weight.T + bias; the bias is not shrunk."""
    mu_x, mu_y = features.mean(0), targets.mean(0)
    x, y = features - mu_x, targets - mu_y
    w = np.linalg.solve(x.T @ x + lam * len(x) * np.eye(x.shape[1]), x.T @ y)  # (F, 12)
    return w.T, mu_y - mu_x @ w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.linear_init", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a trainer checkpoint (.pt) of an affine head")
    p.add_argument("--data", type=Path, required=True, help="make_dataset directory of training photos + masks")
    p.add_argument("--out", type=Path, required=True, help="weights to start training from (.safetensors)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=123, help="composites differ from the training run's")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from engine.weights import save_weights

    model = widened(args.checkpoint)
    if getattr(model.config, "output", None) != "affine":
        raise ValueError(f"{args.checkpoint} is not an affine-head model")
    feats, targets = collect(model, args.data, args.size, args.samples, args.seed)
    split = int(0.8 * len(feats))  # fit on 80 %, report on the rest
    weight, bias = ridge(feats[:split], targets[:split], args.lam)
    before = float(np.mean(targets[split:] ** 2))
    after = float(np.mean((targets[split:] - feats[split:] @ weight.T - bias) ** 2))
    print(f"residual transform mean square on held-back composites: {before:.5f} -> {after:.5f}")
    if after >= before:
        raise RuntimeError("the linear fit does not reduce the residual; nothing written")
    with torch.no_grad():
        model.global_transform.linear.weight.add_(torch.from_numpy(weight).float())
        model.global_transform.linear.bias.add_(torch.from_numpy(bias).float())
    out = save_weights(model, args.out, extra={"linear_init": {"checkpoint": str(args.checkpoint),
                                                                "samples": args.samples, "before": before,
                                                                "after": after}})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
