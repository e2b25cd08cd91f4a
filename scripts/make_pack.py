"""Make the training pack and the held-out set for the shipped weights from ../shared/data.

    .venv/bin/python scripts/make_pack.py --out .pack --seed 0

Keeps only the permissively licensed groups (SOURCES.md) of ``portraits/`` (deepface, u2net, liveportrait,
photomaker, pulid, facenet, volcomix, hallo, skimage, hagrid) and of ``portraits_more/`` (pixabay, ccp),
splits them BY PHOTO (seeded, stratified by group) into train and held-out, and runs trainer.make_dataset
on each half:

    OUT/train     photos (longest side 512) + MediaPipe person masks, 1 composite each (training re-colours
                  them live; see trainer.datasets.SynthesisDataset)
    OUT/heldout   photos at their own resolution, --heldout-per-image composites each, all in the test list
    OUT/split.json  which photo went where

``--research`` adds the research-only groups (celebfaces, facemask, humanseg, SEAN, GPEN, ...) to the
TRAINING half only, for the model card's "does more data help" experiment; weights trained that way are
never shipped. The held-out half is the same either way.

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
              "skimage", "hagrid", "pixabay", "ccp")
RESEARCH_ONLY = ("celebahq", "ffhq", "selfie", "bgmatting", "faceparsing", "celebfaces", "facemask", "humanseg")


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


def split_heldout(files: list[Path], fraction: float, seed: int) -> list[Path]:
    """A seeded share of every group's photos (every kind of photo lands in both halves)."""
    rng = np.random.default_rng(seed)
    heldout = []
    for group in sorted({group_of(f.name) for f in files}):
        members = sorted(f for f in files if group_of(f.name) == group)
        n = int(round(fraction * len(members)))
        heldout += [members[i] for i in rng.permutation(len(members))[:n]]
    return sorted(heldout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="holds portraits/, portraits_more/")
    p.add_argument("--out", type=Path, default=Path(".pack"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-fraction", type=float, default=0.15)
    p.add_argument("--heldout-per-image", type=int, default=2)
    p.add_argument("--train-max-side", type=int, default=512)
    p.add_argument("--research", action="store_true", help="add the research-only groups to the training half")
    args = p.parse_args(argv)

    dirs = [d for d in (args.data / "portraits", args.data / "portraits_more") if d.is_dir()]
    if not dirs:
        print(f"error: no portraits/ or portraits_more/ in {args.data}", file=sys.stderr)
        return 2
    every = [f for d in dirs for f in list_images(d)]
    files = [f for f in every if group_of(f.name) in PERMISSIVE]
    heldout = split_heldout(files, args.heldout_fraction, args.seed)
    train = sorted(set(files) - set(heldout))
    if args.research:
        train = sorted(set(train) | {f for f in every if group_of(f.name) in RESEARCH_ONLY})
    src = args.out / "src"
    make_dataset(link_dir(src / "train", train), args.out / "train", per_image=1, seed=args.seed,
                 max_side=args.train_max_side)
    if not (args.out / "heldout" / "meta.json").is_file():
        make_dataset(link_dir(src / "heldout", heldout), args.out / "heldout",
                     per_image=args.heldout_per_image, seed=args.seed + 1, test_fraction=1.0)
    split = {"train": [f.name for f in train], "heldout": [f.name for f in heldout], "seed": args.seed,
             "groups": list(PERMISSIVE) + (list(RESEARCH_ONLY) if args.research else [])}
    (args.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    print(f"train photos: {len(train)}, held-out photos: {len(heldout)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
