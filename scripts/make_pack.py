"""Make the training pack and the held-out set for the shipped weights from ../shared/data/portraits.

    .venv/bin/python scripts/make_pack.py --portraits ../shared/data/portraits --out .pack --seed 0

Keeps only the permissively licensed groups (SOURCES.md: deepface, u2net, liveportrait, photomaker, pulid,
facenet, volcomix, hallo, skimage, hagrid), splits them BY PHOTO (seeded) into train and held-out, and runs
trainer.make_dataset on each half:

    OUT/train     photos (longest side 512) + MediaPipe person masks, 1 composite each (training re-colours
                  them live; see trainer.datasets.SynthesisDataset)
    OUT/heldout   photos at their own resolution, --heldout-per-image composites each, all in the test list
    OUT/split.json  which photo went where

OUT must be git-ignored (.pack/ is): the photos are not the project's to commit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from trainer.make_dataset import list_images, make_dataset

PERMISSIVE = ("deepface", "u2net", "liveportrait", "photomaker", "pulid", "facenet", "volcomix", "hallo",
              "skimage", "hagrid")


def group_of(name: str) -> str:
    return name.split("_", 1)[0]


def link_dir(directory: Path, files: list[Path]) -> Path:
    """A directory of symlinks to ``files`` (make_dataset reads a directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for f in files:
        (directory / f.name).symlink_to(f.resolve())
    return directory


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--portraits", type=Path, default=Path("../shared/data/portraits"))
    p.add_argument("--out", type=Path, default=Path(".pack"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=0.15)
    p.add_argument("--heldout-per-image", type=int, default=4)
    p.add_argument("--train-max-side", type=int, default=512)
    args = p.parse_args(argv)

    files = [f for f in list_images(args.portraits) if group_of(f.name) in PERMISSIVE]
    if not files:
        print(f"error: no permissive portraits in {args.portraits}", file=sys.stderr)
        return 2
    # Stratified by group so that every kind of photo (press, webcam tiles, aligned faces) is in both halves.
    rng = np.random.default_rng(args.seed)
    heldout = []
    for group in PERMISSIVE:
        members = sorted(f for f in files if group_of(f.name) == group)
        n = int(round(args.heldout_fraction * len(members)))
        heldout += [members[i] for i in rng.permutation(len(members))[:n]]
    train = sorted(set(files) - set(heldout))
    heldout = sorted(heldout)
    src = args.out / "src"
    make_dataset(link_dir(src / "train", train), args.out / "train", per_image=1, seed=args.seed,
                 max_side=args.train_max_side)
    make_dataset(link_dir(src / "heldout", heldout), args.out / "heldout", per_image=args.heldout_per_image,
                 seed=args.seed + 1, test_fraction=1.0)
    split = {"train": [f.name for f in train], "heldout": [f.name for f in heldout], "seed": args.seed,
             "groups": list(PERMISSIVE)}
    (args.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    print(f"train photos: {len(train)}, held-out photos: {len(heldout)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
