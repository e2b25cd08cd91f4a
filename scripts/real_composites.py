"""Real composites before and after: the published harmonization samples through engine.Harmonizer.

    .venv/bin/python scripts/real_composites.py --data ../shared/data --out docs/img/real_composites.jpg \
        --gate out/gate/gate.safetensors

Every composite/mask pair of the permissively licensed groups in ``<data>/harmonization`` (INR, iHarmony4,
DCCF; the Harmonizer group is CC BY-NC-SA and is left out) is harmonized at its own size (longest side at
most --max-side) twice: with every correction applied whole (``gate=False``) and with a harmony gate
(``--gate FILE``, a trainer.gate file; default: the one shipped beside the weights, if any). One labelled
row each: composite | whole correction | gated (with the gate's amount) | ground truth where one exists,
and the PSNR against it. Writes the picture and a JSON of the amounts and PSNRs beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

GROUPS = ("inr", "iharmony4", "dccf")
TILE = 256


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _tile(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = TILE / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    canvas = np.full((TILE, TILE, 3), 40, np.uint8)
    y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
    return canvas


def _read(path: Path, flags=cv2.IMREAD_COLOR) -> np.ndarray | None:
    image = cv2.imread(str(path), flags)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("docs/img/real_composites.jpg"))
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--gate", type=Path, default=None, help="a trainer.gate file (default: the shipped gate)")
    args = p.parse_args(argv)
    from engine.harmonizer import Harmonizer
    from trainer.make_dataset import resize_max_side
    from trainer.metrics import mse, psnr_from_mse

    root = args.data / "harmonization"
    names = sorted(f.stem for f in (root / "composite").glob("*.jpg") if f.stem.split("_", 1)[0] in GROUPS)
    if not names:
        print(f"no composites of {', '.join(GROUPS)} in {root / 'composite'}")
        return 1
    rows, results = [], {}
    from engine.gate import Gate

    with Harmonizer(gate=False) as whole, Harmonizer(gate=Gate.load(args.gate) if args.gate else True) as gated:
        for name in names:
            comp = resize_max_side(_read(root / "composite" / f"{name}.jpg"), args.max_side)
            mask = _read(root / "mask" / f"{name}.png", cv2.IMREAD_GRAYSCALE)
            mask = cv2.resize(mask, comp.shape[1::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
            gt = root / "gt" / f"{name}.jpg"
            real = _read(gt) if gt.is_file() else None
            before = whole.harmonize(comp, mask)
            correction = gated.estimate(comp, mask)
            after = gated.apply(correction, comp, mask)
            gated.reset()
            whole.reset()
            entry = {"amount": correction.amount}
            tiles = [_label(_tile(comp), name), _label(_tile(before), "whole correction"),
                     _label(_tile(after), f"gated ({correction.amount:.2f})")]
            if real is not None:
                real = cv2.resize(real, comp.shape[1::-1], interpolation=cv2.INTER_AREA)
                scores = {k: psnr_from_mse(mse(v, real)) for k, v in
                          (("composite", comp), ("whole", before), ("gated", after))}
                entry["psnr"] = scores
                tiles[0] = _label(_tile(comp), f"{name} {scores['composite']:.1f} dB")
                tiles[1] = _label(_tile(before), f"whole correction {scores['whole']:.1f} dB")
                tiles[2] = _label(_tile(after), f"gated ({correction.amount:.2f}) {scores['gated']:.1f} dB")
                tiles.append(_label(_tile(real), "ground truth"))
            else:
                tiles.append(_label(np.full((TILE, TILE, 3), 40, np.uint8), "(no ground truth)"))
            rows.append(np.concatenate(tiles, 1))
            results[name] = entry
            print(name, json.dumps(entry))
    picture = np.concatenate(rows, 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} ({len(rows)} composites) and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
