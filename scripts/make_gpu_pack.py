"""Build the carry for the GPU session (scripts/gpu_session.sh): a compact training pack, a compact held-out
set, and a 1080p clip with its MediaPipe masks, all under one git-ignored folder (.gpu/, < 64 MiB).

    .venv/bin/python scripts/make_pack.py --out .pack --seed 0          # once: the full pack (MediaPipe masks)
    .venv/bin/python scripts/make_gpu_pack.py --pack .pack --out .gpu   # this: ~1 min on 2 cores

The device gets the working tree and the carried paths (64 MiB in all), not ../shared, and has no
MediaPipe. So everything MediaPipe makes is made here:

    OUT/pack/train     the training photos at --train-side (JPEG) + their person masks (PNG): what
                       trainer.datasets.SynthesisDataset reads (it re-colours them live)
    OUT/pack/heldout   the held-out composites, masks and ground truths at --heldout-side (the same names
                       and list as .pack/heldout, smaller), for the evaluation at the end of the training
    OUT/pack/linear.json  the linear baseline beside it (trainer.evaluate reports it next to the model)
    OUT/clip/clip.mp4  --frames frames of a real clip, cover-cropped to 1920x1080 (MPEG-4, which
                       OpenCV's wheels decode everywhere)
    OUT/clip/masks.npz the Segmenter's (MediaPipe) uint8 masks of those frames, as decoded from clip.mp4
    OUT/clip/background.jpg  a real background cover-cropped to 1920x1080
    OUT/manifest.json  sources, settings and the measured size of each part

The photos and clips are not the project's to commit: OUT must stay git-ignored (.gpu/ is).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

LIMIT_BYTES = 64 << 20  # what one device call carries, working tree included


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """Longest side at most `side` (INTER_AREA), never enlarged."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    s = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def write(path: Path, image: np.ndarray, quality: int = 90) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    if not cv2.imwrite(str(path), image, params):
        raise RuntimeError(f"cannot write {path}")
    return path.stat().st_size


def read(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def make_train(pack: Path, out: Path, side: int, quality: int) -> int:
    """Photos + masks (masks/NAME_1.png, as make_dataset names them); composites are not needed."""
    photos = 0
    for photo in sorted((pack / "real_images").glob("*.jpg")):
        mask_path = pack / "masks" / f"{photo.stem}_1.png"
        if not mask_path.is_file():
            continue
        write(out / "real_images" / photo.name, shrink(read(photo), side), quality)
        mask = read(mask_path, cv2.IMREAD_GRAYSCALE)
        write(out / "masks" / mask_path.name, shrink(mask, side))
        photos += 1
    if photos == 0:
        raise ValueError(f"no photo with a masks/NAME_1.png in {pack} (is it make_pack's train folder?)")
    return photos


def make_heldout(pack: Path, out: Path, side: int, quality: int) -> int:
    """The test list's composites with their masks and ground truths, shrunk alike."""
    lists = sorted(pack.glob("*_test.txt"))
    if not lists:
        raise ValueError(f"no *_test.txt list in {pack} (is it make_pack's heldout folder?)")
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for f in lists:
        shutil.copy(f, out / f.name)
        names += [Path(line.strip()).name for line in f.read_text().splitlines() if line.strip()]
    for name in names:
        stem = Path(name).stem
        mask_stem, real_stem = stem.rsplit("_", 1)[0], stem.rsplit("_", 2)[0]
        write(out / "composite_images" / name, shrink(read(pack / "composite_images" / name), side), quality)
        if not (out / "masks" / f"{mask_stem}.png").is_file():
            write(out / "masks" / f"{mask_stem}.png",
                  shrink(read(pack / "masks" / f"{mask_stem}.png", cv2.IMREAD_GRAYSCALE), side))
        if not (out / "real_images" / f"{real_stem}.jpg").is_file():
            write(out / "real_images" / f"{real_stem}.jpg", shrink(read(pack / "real_images" / f"{real_stem}.jpg"), side),
                  quality)
    return len(names)


def make_clip(video: Path, background: Path, out: Path, frames: int, size: tuple[int, int]) -> dict:
    """The clip at `size` (cover-cropped, MPEG-4), its MediaPipe masks, and the background."""
    from vcam.capture import cover_crop
    from vcam.segment import Segmenter

    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = cv2.VideoWriter(str(out / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    written = 0
    while written < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        writer.write(cover_crop(bgr, size, interpolation=cv2.INTER_LINEAR))
        written += 1
    cap.release()
    writer.release()
    if written == 0:
        raise ValueError(f"cannot read frames from {video}")
    # Masks from the frames as the device will decode them (MPEG-4 is lossy), as the app makes them.
    segmenter = Segmenter(1)
    masks = []
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            masks.append(np.round(segmenter.mask_for(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) * 255).astype(np.uint8))
    finally:
        cap.release()
        segmenter.close()
    if len(masks) != written:
        raise RuntimeError(f"wrote {written} frames to {out / 'clip.mp4'} but decoded {len(masks)}")
    np.savez_compressed(out / "masks.npz", masks=np.stack(masks))
    write(out / "background.jpg", cover_crop(read(background), size), 92)
    return {"frames": written, "fps": fps, "size": list(size),
            "mean_mask_coverage": float(np.mean([m.mean() / 255 for m in masks]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, default=Path(".pack"), help="make_pack.py's output (train/, heldout/)")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="for the clip and background")
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--train-side", type=int, default=320, help="training photos' longest side")
    p.add_argument("--heldout-side", type=int, default=448, help="held-out images' longest side")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--video", default="videos/liveportrait_s18.mp4", help="under --data (MIT, 1280x720)")
    p.add_argument("--background", default="backgrounds/mate_Dune.jpg", help="under --data")
    p.add_argument("--frames", type=int, default=90)
    args = p.parse_args(argv)

    for part in ("train", "heldout"):
        if not (args.pack / part).is_dir():
            print(f"error: {args.pack / part} not found: make it with scripts/make_pack.py --out {args.pack}",
                  file=sys.stderr)
            return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    photos = make_train(args.pack / "train", args.out / "pack" / "train", args.train_side, args.quality)
    composites = make_heldout(args.pack / "heldout", args.out / "pack" / "heldout", args.heldout_side, args.quality)
    if (args.pack / "linear.json").is_file():
        shutil.copy(args.pack / "linear.json", args.out / "pack" / "linear.json")
    clip = make_clip(args.data / args.video, args.data / args.background, args.out / "clip", args.frames,
                     (1920, 1080))
    sizes = {name: folder_bytes(args.out / name) for name in ("pack/train", "pack/heldout", "clip")}
    manifest = {"command": "scripts/make_gpu_pack.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "train_photos": photos, "train_side": args.train_side, "heldout_composites": composites,
                "heldout_side": args.heldout_side, "jpeg_quality": args.quality,
                "clip": {"source": args.video, "background": args.background, **clip}, "bytes": sizes}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = folder_bytes(args.out)
    for name, n in sizes.items():
        print(f"{name:14s} {n / 2**20:6.2f} MiB")
    print(f"{'total':14s} {total / 2**20:6.2f} MiB -> {args.out}")
    if total > LIMIT_BYTES:
        print(f"error: {total / 2**20:.1f} MiB is over the 64 MiB a device call carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
