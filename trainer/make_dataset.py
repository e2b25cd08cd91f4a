"""Make an iHarmony4-layout harmonization set from photos of people (the FFHQH recipe).

    python -m trainer.make_dataset --images ../shared/data/portraits --out .pack/heldout \
        --per-image 4 --seed 0 --test-fraction 1.0

For each photo: a person mask (MediaPipe selfie segmentation, or ``--masks DIR/<stem>.png``), then
``--per-image`` composites, each the photo with its person re-coloured (trainer.recolor) and pasted back
on its own background. Photos where no person is found are skipped and listed. Output layout (the one the
public iHarmony4 and FFHQH sets use, so trainer.datasets reads either):

    OUT/composite_images/NAME_1_j.jpg   composite j of mask 1
    OUT/masks/NAME_1.png                the person (8-bit, soft; metrics binarise at 0.5)
    OUT/real_images/NAME.jpg            the photo: ground truth
    OUT/<OUT name>_train.txt, OUT/<OUT name>_test.txt   composite file names, split BY PHOTO
    OUT/meta.json                        arguments, counts, skipped photos

Every random choice for a photo comes from (seed, photo name), so a photo's composites do not change when
other photos are added or skipped.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from trainer.cli import run_main
from trainer.recolor import DEFAULT_RECIPE, RecolorRecipe, composite

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_PERSON_FRACTION = 0.01  # below 1 % of the frame the "person" is segmentation noise, not a subject


def list_images(images_dir: Path) -> list[Path]:
    """Image files directly in ``images_dir``, sorted by name.

    Raises:
        FileNotFoundError: if the directory is missing.
        ValueError: if it holds no image.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images directory not found: {images_dir}")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--images directory has no images ({', '.join(IMAGE_SUFFIXES)}): {images_dir}")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file.

    Raises:
        ValueError: if the file cannot be decoded.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_rgb(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Write uint8 RGB as JPEG/PNG by suffix."""
    ok = cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot write {path}")


def resize_max_side(image: np.ndarray, max_side: int | None, interpolation=cv2.INTER_AREA) -> np.ndarray:
    """Shrink so that the longest side is at most ``max_side`` (never enlarges)."""
    if not max_side or max(image.shape[:2]) <= max_side:
        return image
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interpolation)


class PersonSegmenter:
    """MediaPipe selfie segmentation on stills: soft person mask (H, W) float32 in [0, 1].

    vcam's shipped selfie model through the Tasks API (`vcam.segment.open_selfie_model`): the network's own
    mask at the photo's size, without the app's temporal smoothing or edge refinement.
    """

    def __init__(self, model_selection: int = 0):
        from vcam.segment import open_selfie_model  # heavy (MediaPipe); only needed when no masks are given

        self._seg = open_selfie_model(model_selection)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.clip(self._seg(np.ascontiguousarray(image)), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def read_given_mask(masks_dir: Path, stem: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask ``masks_dir/<stem>.png`` (any image suffix) as float32 in [0, 1], resized to ``shape``."""
    for suffix in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        path = masks_dir / f"{stem}{suffix}"
        if path.is_file():
            mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise ValueError(f"cannot decode mask: {path}")
            if mask.shape != shape:
                mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
            return mask.astype(np.float32) / 255.0
    return None


def photo_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one photo: depends on the seed and the photo's name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def split_by_photo(names: list[str], test_fraction: float, seed: int) -> set[str]:
    """Names of the photos that go to the test list (a seeded shuffle, the first round(F*n))."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"--test-fraction must be in [0, 1], got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_test = int(round(test_fraction * len(names)))
    return {names[i] for i in order[:n_test]}


def make_dataset(images: Path, out: Path, masks: Path | None = None, per_image: int = 1, seed: int = 0,
                 test_fraction: float = 0.0, max_side: int | None = None, quality: int = 95,
                 recipe: RecolorRecipe = DEFAULT_RECIPE, progress: bool = True) -> dict:
    """Write the set (see the module docstring) and return its summary (also saved as meta.json).

    Raises:
        FileNotFoundError: if ``images`` (or ``masks``, when given) is missing.
        ValueError: if ``images`` has no image, or an argument is out of range.
    """
    files = list_images(images)
    if masks is not None and not Path(masks).is_dir():
        raise FileNotFoundError(f"--masks directory not found: {masks}")
    if per_image < 1:
        raise ValueError(f"--per-image must be >= 1, got {per_image}")
    out = Path(out)
    for sub in ("composite_images", "masks", "real_images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    segmenter = None if masks is not None else PersonSegmenter()
    kept, skipped, fg_ratios = [], [], []
    try:
        for path in tqdm(files, desc="make_dataset", unit="photo", disable=not progress):
            name = path.stem
            real = resize_max_side(read_rgb(path), max_side)
            if masks is not None:
                mask = read_given_mask(Path(masks), name, real.shape[:2])
                if mask is None:
                    skipped.append((name, "no mask file"))
                    continue
            else:
                mask = segmenter(real)
            ratio = float((mask > 0.5).mean())
            if ratio < MIN_PERSON_FRACTION:
                skipped.append((name, f"no person found ({100 * ratio:.2f} % of the frame)"))
                continue
            rng = photo_rng(seed, name)
            write_rgb(out / "real_images" / f"{name}.jpg", real, quality)
            cv2.imwrite(str(out / "masks" / f"{name}_1.png"), np.round(mask * 255).astype(np.uint8))
            for j in range(1, per_image + 1):
                write_rgb(out / "composite_images" / f"{name}_1_{j}.jpg", composite(real, mask, rng, recipe), quality)
            kept.append(name)
            fg_ratios.append(ratio)
    finally:
        if segmenter is not None:
            segmenter.close()
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    test = split_by_photo(kept, test_fraction, seed)
    set_name = out.resolve().name
    for split, names in (("train", [n for n in kept if n not in test]), ("test", [n for n in kept if n in test])):
        lines = [f"{n}_1_{j}.jpg" for n in names for j in range(1, per_image + 1)]
        (out / f"{set_name}_{split}.txt").write_text("".join(line + "\n" for line in lines))
    meta = {
        "images": str(images), "masks": str(masks) if masks else "mediapipe selfie segmentation (model 0)",
        "per_image": per_image, "seed": seed, "test_fraction": test_fraction, "max_side": max_side,
        "recipe": asdict(recipe),
        "photos": len(kept), "test_photos": sorted(test), "skipped": [f"{n}: {w}" for n, w in skipped],
        "mean_foreground_ratio": float(np.mean(fg_ratios)) if fg_ratios else 0.0,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.make_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="directory of photos of people")
    p.add_argument("--out", type=Path, required=True, help="output directory (iHarmony4 layout)")
    p.add_argument("--masks", type=Path, default=None, help="directory of person masks <stem>.png (else MediaPipe)")
    p.add_argument("--per-image", type=int, default=1, help="composites per photo (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.0, help="share of PHOTOS listed as test (0..1)")
    p.add_argument("--max-side", type=int, default=None, help="shrink photos to this longest side first")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    meta = make_dataset(args.images, args.out, args.masks, args.per_image, args.seed, args.test_fraction,
                        args.max_side, args.quality, progress=not args.no_progress)
    print(f"wrote {meta['photos']} photos x {args.per_image} composites to {args.out} "
          f"({len(meta['test_photos'])} test photos, {len(meta['skipped'])} skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
