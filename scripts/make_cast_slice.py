"""The held-out slice of people under a strong colour cast: the held-out photos, each person re-lit.

    .venv/bin/python scripts/make_cast_slice.py --heldout .pack/heldout --out .pack/casts

A person filmed under a warm lamp (or cool daylight) and pasted into a scene under other light has a cast
the FFHQH recipe barely makes (its hue and saturation changes are mild; docs/model_card.md). This writes an
iHarmony4-layout set from make_pack's held-out photos and masks (never trained on): each photo once, its
person under a cast (trainer.camera.person_cast: red against blue by 0.25-0.6 in log gain, green and
exposure too, in linear light), the photo as the ground truth. Seeded per photo, so the slice is the
same on every machine. ``python -m trainer.evaluate --data .pack/casts --full-res`` reports it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.camera import CAST_GREEN, CAST_RB, CAST_STOPS, person_cast  # noqa: E402
from trainer.make_dataset import photo_rng, read_rgb, write_rgb  # noqa: E402


def make_slice(heldout: Path, out: Path, seed: int = 0) -> int:
    """Writes the slice; returns the number of photos."""
    for sub in ("composite_images", "masks", "real_images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for mask_path in sorted((heldout / "masks").glob("*_1.png")):
        name = mask_path.stem[:-2]
        real_path = heldout / "real_images" / f"{name}.jpg"
        if not real_path.is_file():
            continue
        real = read_rgb(real_path)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        comp = person_cast(real, mask, photo_rng(seed, name))
        shutil.copyfile(real_path, out / "real_images" / f"{name}.jpg")  # the truth as the composite saw it
        cv2.imwrite(str(out / "masks" / f"{name}_1.png"), np.round(mask * 255).astype(np.uint8))
        write_rgb(out / "composite_images" / f"{name}_1_1.jpg", comp)
        names.append(f"{name}_1_1.jpg")
    (out / f"{out.name}_test.txt").write_text("".join(n + "\n" for n in names))
    (out / f"{out.name}_train.txt").write_text("")
    meta = {"images": str(heldout / "real_images"), "seed": seed, "photos": len(names),
            "cast": {"log_red_vs_blue": CAST_RB, "log_green": CAST_GREEN, "stops": CAST_STOPS}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return len(names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heldout", type=Path, default=Path(".pack/heldout"), help="make_pack's held-out set")
    p.add_argument("--out", type=Path, default=Path(".pack/casts"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.heldout / "masks").is_dir():
        print(f"no held-out set at {args.heldout} (run scripts/make_pack.py first)", file=sys.stderr)
        return 1
    count = make_slice(args.heldout, args.out, args.seed)
    print(f"casts slice: {count} held-out photos, each person under a cast -> {args.out}")
    return 0 if count else 1


if __name__ == "__main__":
    raise SystemExit(main())
