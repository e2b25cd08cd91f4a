"""The held-out slice of pictures that are already right: each held-out photo as its own composite.

    .venv/bin/python scripts/make_unchanged_slice.py --heldout .pack/heldout --out .pack/unchanged

A person photographed in a room already fits that room: the right answer is to change nothing. This
makes an iHarmony4-layout set whose composites ARE the real photos (trainer.make_dataset with every
re-colouring at strength 0) from the held-out photos of scripts/make_pack.py (never trained on), so
``python -m trainer.evaluate --data .pack/unchanged --full-res`` reports how far the Harmonizer moves a
picture that needed nothing (the output's PSNR against the photo; 100 dB = untouched).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.make_dataset import make_dataset
from trainer.recolor import RecolorRecipe

NOTHING = RecolorRecipe(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, posterize_p=0.0,
                        sharpness_p=0.0, autocontrast_p=0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heldout", type=Path, default=Path(".pack/heldout"), help="make_pack's held-out set")
    p.add_argument("--out", type=Path, default=Path(".pack/unchanged"))
    args = p.parse_args(argv)
    src = args.heldout / "real_images"
    if not src.is_dir():
        print(f"no held-out photos at {src} (run scripts/make_pack.py first)")
        return 1
    meta = make_dataset(src, args.out, per_image=1, seed=0, test_fraction=1.0, recipe=NOTHING)
    print(f"unchanged slice: {meta['photos']} held-out photos as their own composites -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
