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
from trainer.distribution import format_distribution, gain_distribution, gain_row
from trainer.metrics import image_metrics, summarize


def run_model(model: torch.nn.Module | None, composite: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network's output re-blended through the mask: (B, 3, H, W) in [0, 1]. ``None`` = identity.

    Training and evaluation both call the model this way: the reference is the background (1 - mask),
    the statistics state is fresh (zeros) and the momentum is 0 (stills).
    """
    if model is None:
        return composite
    from engine.phnet import harmonized_image, output_names

    b = composite.shape[0]
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    stats_in = composite.new_zeros(b, inner.stats_size)
    momentum = composite.new_zeros(1)
    output, _ = model(composite, mask, 1.0 - mask, stats_in, momentum)
    harmonized = harmonized_image(output, composite, output_names(inner)[0])
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
                # The grid shows the composite as it was, before a colour prior re-coloured it.
                shown = batch["original"][i] if "original" in batch else comp[i]
                pred, real, comp_i = to_uint8(out[i]), to_uint8(batch["real"][i]), to_uint8(shown)
                m = batch["mask"][i, 0].numpy()
                rows.append({"name": batch["name"][i], **image_metrics(pred, real, m),
                             "psnr_composite": image_metrics(comp_i, real, m)["psnr"]})
                if len(kept) < keep:
                    kept.append((comp_i, pred, real))
    finally:
        if model is not None and was_training:
            model.train()
    return summarize(rows), rows, kept


def evaluate_full_res(harmonize, dataset: IHarmonyDataset, progress: bool = False,
                      label: str = "full-res") -> tuple[dict, list[dict]]:
    """Metrics at each image's native resolution of ``harmonize(composite uint8, mask float) -> uint8``
    (``None``: identity; an ``engine.Harmonizer`` is reset before each image: every image is a new scene)."""
    rows = []
    for i in tqdm(range(len(dataset)), desc=label, unit="image", disable=not progress):
        sample = dataset.load(i)
        comp, real, mask = sample["composite"], sample["real"], sample["mask"]
        if harmonize is None:
            out = comp
        elif hasattr(harmonize, "reset"):
            harmonize.reset()
            out = harmonize.harmonize(comp, mask)
        else:
            out = harmonize(comp, mask)
        rows.append({"name": Path(dataset.names[i]).stem, **image_metrics(out, real, mask),
                     "psnr_composite": image_metrics(comp, real, mask)["psnr"]})
    return summarize(rows), rows


def evaluate_images(harmonize, dataset: IHarmonyDataset, progress: bool = False,
                    label: str = "evaluate") -> tuple[dict, list[dict]]:
    """Metrics at the dataset's size of a NumPy harmonizer ``harmonize(uint8, float mask) -> uint8``."""
    rows = []
    for i in tqdm(range(len(dataset)), desc=label, unit="image", disable=not progress):
        sample = dataset[i]
        comp, real = to_uint8(sample["composite"]), to_uint8(sample["real"])
        mask = sample["mask"][0].numpy()
        rows.append({"name": sample["name"], **image_metrics(harmonize(comp, mask), real, mask),
                     "psnr_composite": image_metrics(comp, real, mask)["psnr"]})
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


def load_subject(args):
    """(torch model or None, a NumPy harmonizer or None, label) for the arguments."""
    if args.identity:
        return None, None, "identity"
    if args.model == "linear":
        from trainer.linear import LinearBaseline

        linear = LinearBaseline.load(linear_path(args))
        return None, linear.harmonize, f"linear:{linear_path(args)}"
    from engine.weights import resolve_model

    model, _ = resolve_model(args.model, args.weights)
    return model, None, f"weights:{args.weights}" if args.weights is not None else f"model:{args.model}"


def linear_path(args) -> Path:
    """--linear, or linear.json beside the held-out set (where scripts/train_default.sh fits it)."""
    return args.linear if args.linear is not None else Path(args.data).parent / "linear.json"


def distribution_of(rows: list[dict]) -> dict:
    """trainer.distribution's tables of per-image rows that carry the composite's own PSNR."""
    return gain_distribution([gain_row(r["name"], r["psnr"], r["psnr_composite"]) for r in rows])


def format_summary(label: str, summary: dict) -> str:
    lines = [f"{label}"]
    for bucket, s in summary.items():
        if s["count"]:
            detail = f"  detail {s['detail']:.3f}" if s.get("detail") is not None else ""
            lines.append(f"  {bucket:>6} n={s['count']:4d}  PSNR {s['psnr']:6.2f}  fPSNR {s['fpsnr']:6.2f}  "
                         f"MSE {s['mse']:8.2f}  fMSE {s['fmse']:8.2f}{detail}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="iHarmony4-layout directory")
    p.add_argument("--split", default="test", choices=("train", "test"))
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--weights", type=Path, help="trained weights (.safetensors + .json)")
    who.add_argument("--model", help="a model by name (stats; a variant's shipped weights where they are that variant), "
                          "or linear (trainer.linear)")
    who.add_argument("--identity", action="store_true", help="the composite itself (no harmonization)")
    p.add_argument("--size", type=int, default=256, help="network resolution (square)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", type=Path, default=None, help="write summary + per-image rows here")
    p.add_argument("--grid", type=Path, default=None, help="write composite | harmonized | ground truth PNG")
    p.add_argument("--grid-rows", type=int, default=8)
    p.add_argument("--full-res", action="store_true", help="also at native resolution through engine.Harmonizer")
    p.add_argument("--lift", default=None, help="--full-res: the Harmonizer's lift method (default: its own)")
    p.add_argument("--linear", type=Path, default=None,
                   help="fitted linear baseline (default: linear.json beside --data's directory)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the identity / linear / stats rows evaluated next to the subject")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    return p


def evaluate_subject(args, model, numpy_fn, label: str, grid_rows: int = 0) -> dict:
    """One subject's metrics at network resolution (and at full resolution with --full-res)."""
    dataset = IHarmonyDataset(args.data, split=args.split, size=args.size)
    if model is not None:
        from engine.colour_prior import prior_for
        from trainer.datasets import PriorCorrected

        prior = prior_for(model)
        if prior is not None:  # the network sees what the Harmonizer gives it: the prior's re-colouring
            dataset = PriorCorrected(dataset, prior)
    if numpy_fn is not None:
        summary, rows = evaluate_images(numpy_fn, dataset, progress=True, label=label)
        kept = []
    else:
        summary, rows, kept = evaluate_model(model, dataset, batch_size=args.batch, progress=True, keep=grid_rows)
    print(format_summary(f"{label} @ {args.size}x{args.size} on {args.data} ({args.split})", summary))
    result = {"subject": label, "summary": summary, "per_image": rows, "kept": kept}
    if rows and "psnr_composite" in rows[0]:
        result["distribution"] = distribution_of(rows)
    if args.full_res:
        harmonizer = numpy_fn
        if model is not None:
            from engine.harmonizer import Harmonizer

            # The app's object with its default arguments (backend, lift), the network at --size.
            options = {"lift": args.lift} if args.lift else {}
            harmonizer = Harmonizer(model=model, net_size=args.size, **options)
        native = IHarmonyDataset(args.data, split=args.split, size=None)
        full, full_rows = evaluate_full_res(harmonizer, native, progress=True, label=f"{label} full-res")
        if hasattr(harmonizer, "close"):
            harmonizer.close()
        print(format_summary(f"{label} at full resolution (network at {args.size})", full))
        dist = distribution_of(full_rows)
        print(format_distribution(dist, f"{label} at full resolution: gain over the composite"))
        result["full_res"] = {"summary": full, "distribution": dist, "per_image": full_rows}
    return result


def baseline_rows(args, subject: dict) -> dict:
    """identity, linear (where its fit exists) and stats, evaluated the same way as the subject."""
    rows = {}
    for name in ("identity", "linear", "stats"):
        if subject["subject"] in (name, f"model:{name}") or subject["subject"].startswith(f"{name}:"):
            continue  # the subject itself
        if name == "linear" and not linear_path(args).is_file():
            print(f"(no linear baseline at {linear_path(args)}: fit it with python -m trainer.linear)")
            continue
        sub_args = argparse.Namespace(**{**vars(args), "identity": name == "identity",
                                         "model": None if name == "identity" else name, "weights": None})
        model, numpy_fn, label = load_subject(sub_args)
        result = evaluate_subject(sub_args, model, numpy_fn, label)
        rows[name] = {k: result[k]["summary"] if k == "full_res" else result[k] for k in ("summary", "full_res")
                      if k in result}
    return rows


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size <= 0 or args.size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, got {args.size}")
    model, numpy_fn, label = load_subject(args)
    subject = evaluate_subject(args, model, numpy_fn, label, grid_rows=args.grid_rows if args.grid else 0)
    kept = subject.pop("kept")
    result = {"data": str(args.data), "split": args.split, "size": args.size, **subject}
    if not args.no_baselines:
        result["baselines"] = baseline_rows(args, subject)
    if args.grid:
        if not kept:
            raise ValueError("--grid needs a network subject (--weights or --model NAME other than linear)")
        print(f"grid: {save_grid(kept, args.grid)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
