"""The rim around hair and shoulders: vcam's composite against the composite made with a published mask.

    python scripts/rim_eval.py --data ../shared/data/portraits_more --limit 413 --json rim.json \
        [--harmonize] [--crop docs/img/rim_before_after.jpg]

For each photo that comes with a person mask (`masks/<stem>.png`, hard 0/255): vcam segments the photo
(the shipped MediaPipe model and vcam's post-processing, as on a still camera frame) and composites it
onto a new background twice: as before this work (`composite(image, background, mask)`: the soft edge
keeps some of the old backdrop's colour) and as now (`composite_person`: the person's own colours
estimated at the soft edge). Both are compared, in a band of 6 px on either side of the published mask's
edge, with the composite made from the published mask; mean absolute difference in 0..255 levels.

With `--harmonize` it also checks that the soft edge gets the inside's correction: the change the
harmonizer makes (output minus unharmonized output) per unit of person in the band, next to the change
inside the person (published mask, 6 px away from the edge), before (the correction blended into the
composite with the soft mask) and now (the correction applied to the person, then composited).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from vcam.composite import composite, composite_person
from vcam.segment import Segmenter

BAND_PX = 6
PREVIOUS_EDGE = (0.15, 0.9)  # vcam.segment.STRETCH before the clean-edges work


def band_and_inside(published: np.ndarray, band_px: int = BAND_PX) -> tuple[np.ndarray, np.ndarray]:
    """Boolean planes: within `band_px` of the published mask's edge (either side); inside, farther in."""
    person = (published > 127).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    inner = cv2.erode(person, kernel)
    outer = cv2.dilate(person, kernel)
    return (outer > 0) & (inner == 0), inner > 0


def load_pairs(data: Path, limit: int | None):
    """(name, RGB photo, published mask uint8) for every photo with a mask, in name order."""
    masks = sorted((data / "masks").glob("*.png"))[:limit]
    for mask_path in masks:
        photo = next((p for p in (data / f"{mask_path.stem}{ext}" for ext in (".jpg", ".png")) if p.exists()),
                     None)
        if photo is None:
            continue
        image = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        published = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if published.max() <= 127:  # no person in the published mask: no edge to measure
            continue
        if published.shape != image.shape[:2]:
            published = cv2.resize(published, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        yield mask_path.stem, image, published


def cover(background: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`background` scaled and centre-cropped to (height, width)."""
    height, width = size
    scale = max(height / background.shape[0], width / background.shape[1])
    resized = cv2.resize(background, (max(width, round(background.shape[1] * scale)),
                                      max(height, round(background.shape[0] * scale))))
    y, x = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y:y + height, x:x + width])


def rim_errors(image, published, background, mask_before, mask) -> dict:
    """Mean abs difference in the band to the published-mask composite: before (the previous mask and a
    plain blend of the camera picture) and now (vcam's mask and foreground estimate)."""
    band, _ = band_and_inside(published)
    reference = composite(image, background, (published > 127).astype(np.float32)).astype(np.int16)
    before = composite(image, background, mask_before).astype(np.int16)
    now = composite_person(image, background, mask).astype(np.int16)
    return {"before": float(np.abs(before - reference)[band].mean()),
            "now": float(np.abs(now - reference)[band].mean())}


def edge_correction(harmonizer, image, published, background, mask) -> dict:
    """The band's correction next to the inside's (1 = the same), before and now, two ways: per unit of
    person in the band (the change over the mask's sum there), and the plain mean change on the person's
    side of the band (published mask 1, within 6 px of its edge)."""
    band, inside = band_and_inside(published)
    inner = band & (published > 127)
    foreground = image.copy()
    alpha = mask.copy()  # as the app's frame.mask after compositing: the edge's weights, lowered by colour
    plain = composite_person(image, background, mask, foreground=foreground, alpha=alpha)
    correction = harmonizer.estimate(plain, alpha)
    if correction.params is None:
        return {}
    ratios = {}
    for name, (base, output) in {
        "before": (composite(image, background, mask),
                   harmonizer.apply(correction, composite(image, background, mask), mask)),
        "now": (plain, harmonizer.apply(correction, plain, alpha, foreground=foreground,
                                                 background=background)),
    }.items():
        change = np.abs(output.astype(np.float32) - base.astype(np.float32)).mean(axis=2)
        coverage = float(mask[band].sum())
        inside_change = float(change[inside].mean()) if inside.any() else 0.0
        if coverage < 1.0 or inside_change < 0.5 or not inner.any():  # no person or no correction
            return {}
        ratios[name] = float(change[band].sum()) / coverage / inside_change
        ratios[f"{name}_inner"] = float(change[inner].mean()) / inside_change
    return ratios


def crop_picture(image, published, background, mask, path: Path) -> None:
    """Before | now | published, a crop around the top of the person's outline (hair), 3x enlarged."""
    rows = np.flatnonzero(published.max(axis=1) > 127)
    cols = np.flatnonzero(published[rows[0]] > 127)
    cy, cx = int(rows[0]), int(cols.mean())
    half = 40
    y0 = max(cy - half // 2, 0)
    x0 = min(max(cx - half, 0), image.shape[1] - 2 * half)
    panels = [composite(image, background, mask), composite_person(image, background, mask),
              composite(image, background, (published > 127).astype(np.float32))]
    crops = [cv2.resize(p[y0:y0 + 2 * half, x0:x0 + 2 * half], None, fx=3, fy=3,
                        interpolation=cv2.INTER_NEAREST) for p in panels]
    picture = np.concatenate([np.pad(c, ((0, 0), (0, 4), (0, 0)), constant_values=255) for c in crops], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def evaluate(data: Path, background_path: Path, limit: int | None = None, harmonizer=None,
             crop: Path | None = None, crop_name: str | None = None) -> dict:
    """Rim errors (and edge-correction ratios with a harmonizer) over the photos with published masks."""
    segmenter = Segmenter(smoothing=False)
    # vcam before this work: a wide edge ramp (0.15..0.9) and the landscape model for every frame.
    previous = Segmenter(smoothing=False, edge=PREVIOUS_EDGE, match_aspect=False, zoom=False)
    backdrop = cv2.cvtColor(cv2.imread(str(background_path)), cv2.COLOR_BGR2RGB)
    errors, ratios = {"before": [], "now": []}, {}
    try:
        for name, image, published in load_pairs(data, limit):
            background = cover(backdrop, image.shape[:2])
            segmenter.reset()  # every photo is a new scene: no smoothing state, no crop kept from the last one
            mask = segmenter.mask_for(image)
            mask_before = previous.mask_for(image)
            for key, value in rim_errors(image, published, background, mask_before, mask).items():
                errors[key].append(value)
            if harmonizer is not None:
                harmonizer.reset()
                for key, value in edge_correction(harmonizer, image, published, background, mask).items():
                    ratios.setdefault(key, []).append(value)
            if crop is not None and (crop_name is None or name == crop_name):
                crop_picture(image, published, background, mask, crop)
                crop = None
    finally:
        segmenter.close()
        previous.close()
    result = {"photos": len(errors["now"]), "band_px": BAND_PX,
              "band_mad_before": float(np.mean(errors["before"])), "band_mad_now": float(np.mean(errors["now"]))}
    result["reduction"] = 1.0 - result["band_mad_now"] / result["band_mad_before"]
    if ratios:
        result.update({f"edge_ratio_{key}": float(np.mean(values)) for key, values in ratios.items()})
        result["harmonized_photos"] = len(ratios["now"])
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/portraits_more"))
    parser.add_argument("--background", type=Path,
                        default=Path("../shared/data/backgrounds/lomiri1604_Bridge_by_Sander_Klootwijk.jpg"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--harmonize", action="store_true", help="also measure the edge's correction")
    parser.add_argument("--crop", type=Path, default=None, help="write a before/now/published crop here")
    parser.add_argument("--crop-name", default=None, help="the photo (stem) to crop; default the first")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    harmonizer = None
    if args.harmonize:
        from engine import Harmonizer
        harmonizer = Harmonizer(device="cpu", smoothing=0.0, sharpness=False)  # as the app builds it
    result = evaluate(args.data, args.background, args.limit, harmonizer, args.crop, args.crop_name)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
