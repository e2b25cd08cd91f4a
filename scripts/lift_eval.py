"""Which full-resolution lift is best? Oracle test on real portraits, plus the Harmonizer's whole path.

    .venv/bin/python scripts/lift_eval.py --data ../shared/data --per-group 10 --net-size 256 \
        --json docs/notes/lift_eval.json

For each real photo (permissive groups of ../shared/data/portraits): a person mask from MediaPipe selfie
segmentation; the person is re-coloured (brightness/contrast/saturation/hue jitter, FFHQH-like) and
pasted back over the original, which is the ground truth. The "network output" is the ORACLE: the ground
truth downsampled to the network size exactly as the Harmonizer does. Each lift method (engine.lifts)
carries it to full resolution; we report full-resolution PSNR and foreground PSNR (MAX 255, mask > 0.5)
against the original photo. Rows:
  composite        nothing done (the re-coloured photo)
  upsample         the oracle image resized bilinearly to full size and blended (what blurring gives)
  <method>         engine.lifts methods fitted on (composite_low -> oracle_low)
  harmonizer/<m>   the whole Harmonizer path (model --model, default "stats") with lift <m>
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

GROUPS = ("u2net", "liveportrait", "hagrid", "pulid", "photomaker", "deepface")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--groups", default=",".join(GROUPS), help="comma-separated file-name prefixes")
    p.add_argument("--per-group", type=int, default=10, help="photos per group (sorted by name)")
    p.add_argument("--net-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="stats", help="model for the harmonizer rows ('none' to skip)")
    p.add_argument("--sweep", action="store_true", help="also affine-grid with other grid sizes / ridges")
    p.add_argument("--json", type=Path, default=None, help="write per-image and mean results here")
    return p


def list_photos(data: Path, groups: list[str], per_group: int) -> list[Path]:
    photos = []
    for group in groups:
        photos += sorted((data / "portraits").glob(f"{group}_*.jpg"))[:per_group]
    if not photos:
        raise FileNotFoundError(f"no photos of groups {groups} under {data / 'portraits'}")
    return photos


def recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter of a uint8 RGB image (float32 [0,1] out)."""
    x = image.astype(np.float32) / 255
    x = x * rng.uniform(0.6, 1.4)  # brightness
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey.mean()) * rng.uniform(0.6, 1.4) + grey.mean()  # contrast
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)  # saturation
    hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360 * rng.uniform(-0.05, 0.05)) % 360  # hue (OpenCV float: degrees)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float32) - b.astype(np.float32)) ** 2
    mse = float(diff[where].mean()) if where is not None else float(diff.mean())
    return 99.0 if mse <= 1e-10 else 10 * math.log10(255.0**2 / mse)


def blend(composite: np.ndarray, corrected: np.ndarray, mask: np.ndarray) -> np.ndarray:
    comp = composite.astype(np.float32) / 255
    out = comp + mask[..., None] * (corrected - comp)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def main(args) -> dict:
    from engine import corrections, lifts
    from engine.harmonizer import Harmonizer, net_shape
    from vcam.segment import open_selfie_model

    rng = np.random.default_rng(args.seed)
    photos = list_photos(args.data, args.groups.split(","), args.per_group)
    methods = {m: {} for m in corrections.METHODS}
    if args.sweep:
        for grid in (4, 16):
            methods[f"affine-grid/g{grid}"] = {"method": "affine-grid", "grid": grid}
        for lam in (0.005, 0.5):
            methods[f"affine-grid/lam{lam}"] = {"method": "affine-grid", "lam": lam}
        methods["poly/deg3"] = {"method": "poly", "degree": 3}
    harmonizers = {}
    if args.model != "none":
        for m in corrections.METHODS:
            harmonizers[f"harmonizer/{m}"] = Harmonizer(model=args.model, backend="auto", device="cpu",
                                                        net_size=args.net_size, lift=m)
    rows: dict[str, list[tuple[float, float]]] = {}
    times: dict[str, list[float]] = {}
    per_image = []
    with contextlib.closing(open_selfie_model(0)) as segmenter:
        for path in photos:
            original = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            mask = segmenter(original)
            if (mask > 0.5).mean() < 0.02:
                continue  # no person found: nothing to measure
            fg = mask > 0.5
            recoloured = recolour(original, rng)
            comp_f = recoloured * mask[..., None] + (original.astype(np.float32) / 255) * (1 - mask[..., None])
            composite = np.clip(comp_f * 255 + 0.5, 0, 255).astype(np.uint8)
            h, w = net_shape(*original.shape[:2], args.net_size)
            comp_low = cv2.resize(composite, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            oracle_low = cv2.resize(original, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            mask_low = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
            result = {"file": path.name, "size": list(original.shape[:2]), "fg": float(fg.mean())}
            outputs = {"composite": composite}
            up = cv2.resize(oracle_low, (original.shape[1], original.shape[0]), interpolation=cv2.INTER_LINEAR)
            outputs["upsample"] = blend(composite, up, mask)
            for label, spec in methods.items():
                spec = dict(spec)
                method = spec.pop("method", label)
                t0 = time.perf_counter()
                params = lifts.fit_lift(method, comp_low, oracle_low, mask_low, **spec)
                corrected = corrections.apply_lift(params, composite)
                times.setdefault(label, []).append(time.perf_counter() - t0)
                outputs[label] = blend(composite, corrected, mask)
            for label, harmonizer in harmonizers.items():
                harmonizer.reset()
                outputs[label] = harmonizer.harmonize(composite, mask)
            for label, out in outputs.items():
                scores = (psnr(out, original), psnr(out, original, fg))
                rows.setdefault(label, []).append(scores)
                result[label] = {"psnr": round(scores[0], 3), "fpsnr": round(scores[1], 3)}
            per_image.append(result)
    for harmonizer in harmonizers.values():
        harmonizer.close()

    summary = {label: {"psnr": float(np.mean([s[0] for s in v])), "fpsnr": float(np.mean([s[1] for s in v])),
                       "fpsnr_median": float(np.median([s[1] for s in v]))} for label, v in rows.items()}
    for label, t in times.items():
        summary[label]["fit_apply_ms_median"] = 1e3 * float(np.median(t))
    print(f"{len(per_image)} photos ({', '.join(args.groups.split(','))}), net size {args.net_size}, "
          f"oracle low-res output; PSNR in dB, MAX 255; fPSNR inside mask > 0.5")
    print(f"| {'row':24s} | PSNR  | fPSNR | fPSNR median | fit+apply ms |")
    print(f"|{'-' * 26}|-------|-------|--------------|--------------|")
    for label, s in summary.items():
        ms = f"{s['fit_apply_ms_median']:.0f}" if "fit_apply_ms_median" in s else ""
        print(f"| {label:24s} | {s['psnr']:.2f} | {s['fpsnr']:.2f} | {s['fpsnr_median']:12.2f} | {ms:>12s} |")
    report = {"command": "scripts/lift_eval.py", "args": {k: str(v) for k, v in vars(args).items()},
              "photos": len(per_image), "summary": summary, "per_image": per_image}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
