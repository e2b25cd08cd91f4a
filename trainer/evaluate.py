"""Evaluate a harmonizer on an iHarmony4-layout set: MSE, fMSE, PSNR, fPSNR, overall and by foreground ratio.

    python -m trainer.evaluate --data .pack/heldout --weights engine/weights/default.safetensors \
        --size 256 --json out/eval.json --grid out/grid.png --full-res

Exactly one of ``--weights FILE`` (a trained model), ``--model NAME`` (an untrained model from
engine.phnet, e.g. ``stats``, the statistics-only transfer) or ``--identity`` (the composite itself).
Network resolution: composite, mask and ground truth are resized to size×size, the network's output is
re-blended with the composite through the soft mask (as the Harmonizer does), rounded to uint8, and
compared with trainer.metrics (0-255, masks binarised at 0.5, MAX 255). ``--full-res`` adds the same
metrics at each photo's own resolution through ``engine.Harmonizer`` (network at --size, then its lift).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from trainer.cli import run_main
from trainer.datasets import IHarmonyDataset
from trainer.metrics import image_metrics, summarize


def run_model(model: torch.nn.Module | None, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network's output re-blended through the mask: (B, 3, H, W) in [0, 1]. ``None`` = identity.

    Training and evaluation both call the model this way: the reference is the background (1 - mask),
    the statistics state is fresh (zeros) and the momentum is 0 (stills).
    """
    if model is None:
        return composite
    b = composite.shape[0]
    stats_size = getattr(model, "module", model).stats_size  # DistributedDataParallel wraps the model
    stats_in = composite.new_zeros(b, stats_size)
    momentum = composite.new_zeros(1)
    harmonized, _ = model(composite, mask, 1.0 - mask, stats_in, momentum)
    return harmonized.float() * mask + composite * (1.0 - mask)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


@torch.no_grad()
def evaluate_model(model: torch.nn.Module | None, dataset: IHarmonyDataset, device: torch.device | str = "cpu",
                   batch_size: int = 8, progress: bool = False, keep: int = 0) -> tuple[dict, list[dict], list]:
    """Metrics of ``model`` (None: identity) on ``dataset`` at its size.

    Returns:
        (summary by bucket, per-image rows with name, the first ``keep`` (composite, output, real) uint8
        triples for a grid).
    """
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    rows, kept = [], []
    try:
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
            comp, mask = batch["composite"].to(device), batch["mask"].to(device)
            out = run_model(model, comp, mask)
            for i in range(comp.shape[0]):
                pred, real, comp_i = to_uint8(out[i]), to_uint8(batch["real"][i]), to_uint8(comp[i])
                m = batch["mask"][i, 0].numpy()
                rows.append({"name": batch["name"][i], **image_metrics(pred, real, m)})
                if len(kept) < keep:
                    kept.append((comp_i, pred, real))
    finally:
        if model is not None and was_training:
            model.train()
    return summarize(rows), rows, kept


def evaluate_full_res(harmonizer, dataset: IHarmonyDataset, progress: bool = False) -> tuple[dict, list[dict]]:
    """Metrics at each image's native resolution through ``harmonizer.harmonize`` (``None``: identity)."""
    rows = []
    for i in tqdm(range(len(dataset)), desc="full-res", unit="image", disable=not progress):
        sample = dataset.load(i)
        comp, real, mask = sample["composite"], sample["real"], sample["mask"]
        if harmonizer is not None:
            harmonizer.reset()  # every image is a new scene: no temporal state across them
            out = harmonizer.harmonize(comp, mask)
        else:
            out = comp
        rows.append({"name": Path(dataset.names[i]).stem, **image_metrics(out, real, mask)})
    return summarize(rows), rows


def save_grid(triples: list, path: Path, tile: int = 192) -> Path:
    """A picture with one row per sample: composite | harmonized | ground truth."""
    if not triples:
        raise ValueError("no samples to draw")
    rows = []
    for comp, pred, real in triples:
        rows.append(np.concatenate([cv2.resize(x, (tile, tile), interpolation=cv2.INTER_AREA)
                                    for x in (comp, pred, real)], axis=1))
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"cannot write {path}")
    return path


def load_subject(args) -> tuple[torch.nn.Module | None, str]:
    """The model named by the arguments and a label for it."""
    if args.identity:
        return None, "identity"
    if args.weights is not None:
        from engine.weights import load_weights

        return load_weights(args.weights), f"weights:{args.weights}"
    from engine.phnet import create_model

    return create_model(args.model).eval(), f"model:{args.model}"


def format_summary(label: str, summary: dict) -> str:
    lines = [f"{label}"]
    for bucket, s in summary.items():
        if s["count"]:
            lines.append(f"  {bucket:>6} n={s['count']:4d}  PSNR {s['psnr']:6.2f}  fPSNR {s['fpsnr']:6.2f}  "
                         f"MSE {s['mse']:8.2f}  fMSE {s['fmse']:8.2f}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="iHarmony4-layout directory")
    p.add_argument("--split", default="test", choices=("train", "test"))
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--weights", type=Path, help="trained weights (.safetensors + .json)")
    who.add_argument("--model", help="an untrained model by name (e.g. stats)")
    who.add_argument("--identity", action="store_true", help="the composite itself (no harmonization)")
    p.add_argument("--size", type=int, default=256, help="network resolution (square)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", type=Path, default=None, help="write summary + per-image rows here")
    p.add_argument("--grid", type=Path, default=None, help="write composite | harmonized | ground truth PNG")
    p.add_argument("--grid-rows", type=int, default=8)
    p.add_argument("--full-res", action="store_true", help="also at native resolution through engine.Harmonizer")
    p.add_argument("--lift", default=None, help="--full-res: the Harmonizer's lift method (default: its own)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size <= 0 or args.size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, got {args.size}")
    dataset = IHarmonyDataset(args.data, split=args.split, size=args.size)
    model, label = load_subject(args)
    summary, rows, kept = evaluate_model(model, dataset, batch_size=args.batch, progress=True,
                                         keep=args.grid_rows if args.grid else 0)
    print(format_summary(f"{label} @ {args.size}x{args.size} on {args.data} ({args.split})", summary))
    result = {"subject": label, "data": str(args.data), "split": args.split, "size": args.size,
              "summary": summary, "per_image": rows}
    if args.full_res:
        harmonizer = None
        if model is not None:
            from engine.harmonizer import Harmonizer

            options = {"lift": args.lift} if args.lift else {}
            harmonizer = Harmonizer(model=model, backend="torch", device="cpu", net_size=args.size, **options)
        full, full_rows = evaluate_full_res(harmonizer, IHarmonyDataset(args.data, split=args.split, size=None),
                                            progress=True)
        if harmonizer is not None:
            harmonizer.close()
        print(format_summary(f"{label} at full resolution (network at {args.size})", full))
        result["full_res"] = {"summary": full, "per_image": full_rows}
    if args.grid:
        print(f"grid: {save_grid(kept, args.grid)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
