"""Does the old room's colour ride along into the new composite's edge? Measured where the truth is known.

    nice -n 10 .venv/bin/python scripts/edge_colour.py --json out/edge_colour.json \
        [--per-group 4] [--frames 8] [--video-frames 30] [--variants camera,estimate]
    nice -n 10 .venv/bin/python scripts/edge_colour.py --real 60 --json out/edge_real.json
    nice -n 10 .venv/bin/python scripts/edge_colour.py --flicker
    .venv/bin/python scripts/edge_colour.py --picture docs/img/edges_before_after.jpg

Three sets, each with the true composite known at the edge:
1. The benchmark of `scripts/mask_motion.py`: held-out people with published masks pasted on a real room
   (A) at 720p, still and walking at 8 px/frame, a camera's noise on every frame. The same person pasted on
   a new background (B) with the same mask is the true composite, exact on every pixel.
2. A real video with a published soft matte (`../shared/data/harmonization/video/harmonizer_*`: a person
   filmed in front of a plaza, with hair blowing, and her matte), at 720p. Where the matte is 0 (< 2 levels)
   the true composite is B, where it is 1 (> 253 levels) the camera picture; its own soft fringe is left
   out (the person's true colour there is not known).
3. The same clip recomposed as matting benchmarks compose: its frames as the person's colours F and its
   matte as the true alpha a, in front of a real room A (camera = F·a + A·(1-a)); the true composite is
   F·a + B·(1-a), so the room's colour in the hair is known exactly, soft alpha included.

Each frame goes through one `vcam.segment.Segmenter`, as the app runs it, and is composited on B by each
variant: `camera` (the camera picture blended with the soft mask, as before the foreground estimate),
`estimate_before` (`vcam.composite.composite_person` before this work: one level of blur fusion at
1/4 resolution, 3x3, blended with the mask), `estimate` (as shipped: the same, with the edge's weight
lowered where the pixel's colour says room, `vcam.composite.colour_alpha`) and `reaching_alpha` (a
candidate, not shipped: the same lowering also on pixels the mask calls certain, within 2 px of its
edge) and `decontaminated` (a candidate, not shipped: those certain pixels, within 3 px, keep alpha 1 but
have the room's part of their colour replaced by the person's); `--variants a,b` runs some. In a band of `BAND_PX` on either side of the true edge:
- `mae`: the mean absolute difference to the true composite (0-255 levels, per channel);
- `mae_soft`: the same on vcam's soft pixels only (0 < mask < 1: where the colour treatment acts);
- `room_share`: how much of the old room's colour is in the composite, sum <C - T, A - T> / sum |A - T|^2
  over the band's pixels where the room differs from the truth by 40 levels or more (C the composite, T the
  truth, A the room's colour at that pixel: the clean room for the benchmark; on the video, the camera
  picture where the matte is 0, i.e. the background side only). 0: none of the room; 1: the room itself.
  `room_share_soft` and `room_share_certain` split it by where vcam's mask is soft or 0/1 (the latter is
  the mask's position: a colour treatment of the soft edge cannot reach it).

`--flicker`: on the benchmark's still person, the edge flicker of the segmenter's mask and of the
composite's alpha (the lowered weight), and the composite's own frame-to-frame change at the edge.

Set 4, `--real FRAMES`: real clips of `../shared/data/videos` (no truth): what the lowering does there and
its cost, `composite_person` timed both ways frame for frame.

Before/after picture: `--picture docs/img/edges_before_after.jpg` (set 3's hair: before the edge work,
now, the true composite).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mask_motion import BACKGROUNDS, NOISE_SIGMA, SIZE, cutouts, edge_band, paste, paths  # noqa: E402
from rim_eval import PREVIOUS_EDGE, cover  # noqa: E402

from vcam.composite import colour_alpha, composite, composite_person  # noqa: E402
from vcam.segment import Segmenter  # noqa: E402

BAND_PX = 6
ROOM_MIN_LEVELS = 40  # room_share counts pixels where the room's colour differs this much from the truth
NEW_BACKGROUNDS = ("plasma_DarkestHour.jpg", "mate_Aqua.jpg")  # a dark and a light one, unlike the rooms
VIDEO = Path("../shared/data/harmonization/video")
REAL_VIDEOS = ("volcomix_Thoughtful_-_35590.mp4", "volcomix_Doctor_-_26732.mp4", "liveportrait_d0.mp4")


def _low_sums(image, mask, box, scale: int, radius: int):
    """The box's mask, its pixels (float32) and, at 1/`scale`, the window sums the edge-colour candidates
    share: (m, person, (lh, lw), weight, weight2, person_sum, image_sum)."""
    y0, y1, x0, x1 = box
    m = mask[y0:y1, x0:x1]
    person = image[y0:y1, x0:x1].astype(np.float32)
    h, w = m.shape
    lw, lh = max(w // scale, 1), max(h // scale, 1)
    image_low = cv2.resize(person, (lw, lh), interpolation=cv2.INTER_LINEAR)
    mask_low = cv2.resize(m, (lw, lh), interpolation=cv2.INTER_LINEAR)
    k = (2 * radius + 1,) * 2
    return (m, person, (lh, lw), cv2.blur(mask_low, k), cv2.blur(mask_low * mask_low, k),
            cv2.blur(image_low * mask_low[..., None], k), cv2.blur(image_low, k))


def reaching_alpha(image, background, mask, box, reach: int = 2, scale: int = 4, radius: int = 1,
                   min_contrast: float = 30.0, max_residual: float = 0.5):
    """Candidate, not shipped: `vcam.composite.colour_alpha`'s lowering also on pixels the mask calls
    certain within `reach` px of its 0.5 contour (full-resolution means, bilinear from 1/`scale`)."""
    if box is None:
        return composite_person(image, background, mask, box)
    y0, y1, x0, x1 = box
    m, person, _, weight, _, p_sum, i_sum = _low_sums(image, mask, box, scale, radius)
    h, w = m.shape
    f_hat = cv2.resize(p_sum / np.maximum(weight, 1e-3)[..., None], (w, h), interpolation=cv2.INTER_LINEAR)
    b_hat = cv2.resize((i_sum - p_sum) / np.maximum(1 - weight, 1e-3)[..., None], (w, h),
                       interpolation=cv2.INTER_LINEAR)
    wt = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
    hard = (m >= 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2)
    near = (cv2.dilate(hard, kernel) > 0) & (cv2.erode(hard, kernel) == 0) & (wt > 0.02) & (wt < 0.98)
    d = f_hat - b_hat
    dd = (d * d).sum(axis=2)
    a = ((person - b_hat) * d).sum(axis=2) / np.maximum(dd, 1e-3)
    residual = np.linalg.norm(person - b_hat - a[..., None] * d, axis=2)
    ok = near & (dd >= min_contrast ** 2) & (residual <= max_residual * np.sqrt(dd))
    new = m.copy()
    new[ok] = np.minimum(m[ok], np.clip(a, 0, 1)[ok])
    out_mask = mask.copy()
    out_mask[y0:y1, x0:x1] = new
    return composite_person(image, background, out_mask, box, lower_alpha=False)


def decontaminated(image, background, mask, box, reach: int = 3, scale: int = 4, radius: int = 1):
    """Candidate: pixels the mask calls certain person within `reach` px of its edge keep alpha 1, but
    their colour is un-mixed: with a their share of person told by colour (`vcam.composite.colour_alpha`'s
    test and correction), the room's part (1-a)·B^ is replaced by the person's, I + (1-a)·(F^ - B^)."""
    if box is None:
        return composite_person(image, background, mask, box)
    y0, y1, x0, x1 = box
    m, person, (lh, lw), weight, weight2, p_sum, i_sum = _low_sums(image, mask, box, scale, radius)
    h, w = m.shape
    hard = (m >= 1.0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1,) * 2)
    ys, xs = np.nonzero((hard > 0) & (cv2.erode(hard, kernel) == 0))
    if ys.size == 0:
        return composite_person(image, background, mask, box)
    ly, lx = ys * lh // h, xs * lw // w
    wv, w2 = weight[ly, lx], weight2[ly, lx]
    f_hat = p_sum[ly, lx] / np.maximum(wv, 1e-3)[:, None]
    b_hat = (i_sum[ly, lx] - p_sum[ly, lx]) / np.maximum(1 - wv, 1e-3)[:, None]
    pixels = person[ys, xs]
    share = colour_alpha(pixels, f_hat, b_hat, np.ones_like(wv), wv, w2)
    fixed = image.copy()
    fixed[y0 + ys, x0 + xs] = np.clip(pixels + (1 - share)[:, None] * (f_hat - b_hat) + 0.5, 0, 255).astype(np.uint8)
    return composite_person(fixed, background, mask, box)


def variants(names: tuple[str, ...] | None = None) -> dict:
    """Name -> composite(image, background, mask, box) for each way of treating the edge's colour (those in
    `names`; None: all)."""
    ways = {
        "camera": lambda image, background, mask, box: composite(image, background, mask),
        "estimate_before": lambda image, background, mask, box: composite_person(image, background, mask, box,
                                                                                  lower_alpha=False),
        "estimate": lambda image, background, mask, box: composite_person(image, background, mask, box),
        "reaching_alpha": reaching_alpha,
        "decontaminated": decontaminated,
    }
    return {name: way for name, way in ways.items() if names is None or name in names}


class Tally:
    """Sums over frames of one set: |C - T| in the band and on its soft pixels, and the room's share."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}

    def add(self, name: str, out: np.ndarray, truth: np.ndarray, room: np.ndarray, band: np.ndarray,
            soft: np.ndarray, room_known: np.ndarray) -> None:
        s = self.sums.setdefault(name, dict.fromkeys(
            ("err", "n", "err_soft", "n_soft", "dot", "norm", "dot_soft", "dot_certain"), 0.0))
        diff = out.astype(np.float32) - truth.astype(np.float32)
        s["err"] += float(np.abs(diff[band]).sum())
        s["n"] += 3.0 * band.sum()
        s["err_soft"] += float(np.abs(diff[band & soft]).sum())
        s["n_soft"] += 3.0 * (band & soft).sum()
        towards = room.astype(np.float32) - truth.astype(np.float32)
        counted = band & room_known & (np.abs(towards).max(axis=2) >= ROOM_MIN_LEVELS)
        s["dot"] += float((diff[counted] * towards[counted]).sum())
        s["norm"] += float((towards[counted] ** 2).sum())
        # where the room comes from: vcam's soft edge (the colour treatment's part) or a mask of 1 where
        # the truth is not the person (the mask's position)
        s["dot_soft"] += float((diff[counted & soft] * towards[counted & soft]).sum())
        certain = counted & ~soft
        s["dot_certain"] += float((diff[certain] * towards[certain]).sum())

    def result(self) -> dict:
        return {name: {"mae": s["err"] / max(s["n"], 1), "mae_soft": s["err_soft"] / max(s["n_soft"], 1),
                       "room_share": s["dot"] / max(s["norm"], 1e-9),
                       "room_share_soft": s["dot_soft"] / max(s["norm"], 1e-9),
                       "room_share_certain": s["dot_certain"] / max(s["norm"], 1e-9), "band_px": int(s["n"] // 3),
                       "soft_px": int(s["n_soft"] // 3)}
                for name, s in self.sums.items()}


def score_frame(tally: Tally, ways: dict, news: list, image, mask, box, truth_alpha, true_person, room,
                known, room_known):
    """Every variant's composite of one frame on each new background, scored against the truth there
    (`known`: where the truth is exact; `room_known`: where `room` is the old room's colour)."""
    band = edge_band(truth_alpha > 0.5, BAND_PX) & known
    soft = (mask > 0) & (mask < 1)
    for new in news:
        alpha = truth_alpha[..., None]
        truth = np.round(true_person * alpha + new * (1 - alpha)).astype(np.uint8)
        for name, way in ways.items():
            tally.add(name, way(image, new, mask, box), truth, room, band, soft, room_known)


def new_backgrounds(backgrounds: Path) -> list[np.ndarray]:
    return [cover(cv2.cvtColor(cv2.imread(str(backgrounds / name)), cv2.COLOR_BGR2RGB), SIZE)
            for name in NEW_BACKGROUNDS]


def benchmark(data: Path, backgrounds: Path, per_group: int, frames: int, seed: int = 0,
              names: tuple[str, ...] | None = None) -> dict:
    """Set 1: pasted people, still and at 8 px/frame; the clean room is known everywhere."""
    rng = np.random.default_rng(seed)
    segmenter, ways, tally, news = Segmenter(), variants(names), Tally(), new_backgrounds(backgrounds)
    everywhere = np.ones(SIZE, bool)
    try:
        for i, (_, person, person_mask) in enumerate(cutouts(data, per_group)):
            room = cover(cv2.cvtColor(cv2.imread(str(backgrounds / BACKGROUNDS[i % len(BACKGROUNDS)])),
                                      cv2.COLOR_BGR2RGB), SIZE)
            for name in ("0px", "8px"):
                segmenter.reset()
                for index, positions in enumerate(paths(person.shape[1], frames)[name]):
                    frame, truth = room.copy(), np.zeros(SIZE, bool)
                    paste(frame, truth, person, person_mask, int(round(positions[0][0])))
                    true_person = frame.copy()
                    noisy = np.clip(frame + rng.normal(0.0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8)
                    mask = segmenter.mask_for(noisy)
                    if index < 2:  # the segmenter's first frames (crop and smoothing settling) as in the app
                        continue
                    score_frame(tally, ways, news, noisy, mask, segmenter.box, truth.astype(np.float32),
                                true_person, room, everywhere, everywhere)
    finally:
        segmenter.close()
    return tally.result()


def video(backgrounds: Path, frames: int, names: tuple[str, ...] | None = None) -> dict:
    """Set 2: the real clip with its published matte; truth only where the matte is 0 or 1."""
    captures = [cv2.VideoCapture(str(VIDEO / f"harmonizer_{part}.mp4")) for part in ("foreground", "mask")]
    segmenter, ways, tally, news = Segmenter(), variants(names), Tally(), new_backgrounds(backgrounds)
    try:
        for _ in range(frames):
            reads = [capture.read() for capture in captures]
            if not all(ok for ok, _ in reads):
                break
            image = cv2.cvtColor(cv2.resize(reads[0][1], SIZE[::-1], interpolation=cv2.INTER_AREA),
                                 cv2.COLOR_BGR2RGB)
            matte = cv2.resize(reads[1][1][..., 0], SIZE[::-1], interpolation=cv2.INTER_AREA)
            mask = segmenter.mask_for(image)
            known = (matte < 2) | (matte > 253)
            # the room is the camera picture where the matte is 0 (the person's side: not known)
            score_frame(tally, ways, news, image, mask, segmenter.box, matte / np.float32(255), image, image,
                        known, matte < 2)
    finally:
        segmenter.close()
        for capture in captures:
            capture.release()
    return tally.result()


def video_recomposited(backgrounds: Path, frames: int, names: tuple[str, ...] | None = None,
                       room_name: str = "nyu_densedepth_1_image.jpg") -> dict:
    """Set 3: the clip's frames as the person's colours F and its matte as the true alpha, put in front of
    a real room A (camera = F·a + A·(1-a), as matting benchmarks compose): the room's colour in the hair is
    known exactly, soft alpha included; the true composite is F·a + B·(1-a)."""
    captures = [cv2.VideoCapture(str(VIDEO / f"harmonizer_{part}.mp4")) for part in ("foreground", "mask")]
    room = cover(cv2.cvtColor(cv2.imread(str(backgrounds / room_name)), cv2.COLOR_BGR2RGB), SIZE)
    segmenter, ways, tally, news = Segmenter(), variants(names), Tally(), new_backgrounds(backgrounds)
    everywhere = np.ones(SIZE, bool)
    try:
        for _ in range(frames):
            reads = [capture.read() for capture in captures]
            if not all(ok for ok, _ in reads):
                break
            person = cv2.cvtColor(cv2.resize(reads[0][1], SIZE[::-1], interpolation=cv2.INTER_AREA),
                                  cv2.COLOR_BGR2RGB)
            alpha = cv2.resize(reads[1][1][..., 0], SIZE[::-1], interpolation=cv2.INTER_AREA) / np.float32(255)
            image = np.round(person * alpha[..., None] + room * (1 - alpha[..., None])).astype(np.uint8)
            mask = segmenter.mask_for(image)
            score_frame(tally, ways, news, image, mask, segmenter.box, alpha, person, room, everywhere, everywhere)
    finally:
        segmenter.close()
        for capture in captures:
            capture.release()
    return tally.result()


def flicker(data: Path, backgrounds: Path, per_group: int, frames: int = 16, seed: int = 0) -> dict:
    """A still person (the benchmark's still path, camera noise): the edge flicker (mean |x_t - x_t-1| in the
    6 px band around the true edge, from the 6th frame on, as mask_motion's edge_flicker_steady) of the
    segmenter's mask and of the composite's alpha (the mask lowered by colour), and the composite's own
    frame-to-frame change there (levels; the camera's noise is most of it)."""
    rng = np.random.default_rng(seed)
    segmenter, new = Segmenter(), new_backgrounds(backgrounds)[0]
    sums: dict[str, list[float]] = {"mask": [], "alpha": [], "composite_before": [], "composite_now": []}
    try:
        for i, (_, person, person_mask) in enumerate(cutouts(data, per_group)):
            room = cover(cv2.cvtColor(cv2.imread(str(backgrounds / BACKGROUNDS[i % len(BACKGROUNDS)])),
                                      cv2.COLOR_BGR2RGB), SIZE)
            segmenter.reset()
            previous = None
            for index, positions in enumerate(paths(person.shape[1], frames)["0px"]):
                frame, truth = room.copy(), np.zeros(SIZE, bool)
                paste(frame, truth, person, person_mask, int(round(positions[0][0])))
                noisy = np.clip(frame + rng.normal(0.0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8)
                mask = segmenter.mask_for(noisy)
                alpha = mask.copy()
                now = composite_person(noisy, new, mask, segmenter.box, alpha=alpha).astype(np.float32)
                before = composite_person(noisy, new, mask, segmenter.box, lower_alpha=False).astype(np.float32)
                current = {"mask": mask, "alpha": alpha, "composite_before": before, "composite_now": now}
                if previous is not None and index >= 5:  # mask_motion's STEADY_AFTER
                    band = edge_band(truth)
                    for key, value in current.items():
                        sums[key].append(float(np.abs(value - previous[key])[band].mean()))
                previous = current
    finally:
        segmenter.close()
    return {key: float(np.mean(values)) for key, values in sums.items()}


def real_videos(videos: Path, backgrounds: Path, frames: int, names: tuple[str, ...] = REAL_VIDEOS) -> dict:
    """Set 4, no truth: real webcam-like clips at 720p, composited before (the estimate with the mask as
    it is) and now, frame for frame in turn: what the lowering does there (the share of soft pixels
    lowered, by how much, the composite's change) and what it costs (median ms of `composite_person` in
    the person's box, each way; the machine's load falls on both)."""
    new = new_backgrounds(backgrounds)[0]
    out = {}
    for name in names:
        capture, segmenter = cv2.VideoCapture(str(videos / name)), Segmenter()
        times, soft, lowered, drop, change = {"before": [], "now": []}, 0, 0, 0.0, []
        try:
            for _ in range(frames):
                ok, frame = capture.read()
                if not ok:
                    break
                image = cv2.cvtColor(cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                mask = segmenter.mask_for(image)
                alpha = mask.copy()
                settings = {"before": {"lower_alpha": False}, "now": {"alpha": alpha}}
                results = {}
                for way in sorted(settings, reverse=len(times["now"]) % 2 == 1):  # each first every other frame
                    start = time.perf_counter()
                    results[way] = composite_person(image, new, mask, segmenter.box, **settings[way])
                    times[way].append(1e3 * (time.perf_counter() - start))
                before, now = results["before"], results["now"]
                edge = (mask > 0) & (mask < 1)
                soft += int(edge.sum())
                lowered += int((alpha < mask - 1e-3).sum())
                drop += float((mask - alpha)[edge].sum())
                change.append(float(np.abs(now.astype(np.float32) - before)[edge].mean()) if edge.any() else 0.0)
        finally:
            capture.release()
            segmenter.close()
        out[name] = {"frames": len(times["now"]), "soft_px_per_frame": soft / max(len(times["now"]), 1),
                     "lowered_share": lowered / max(soft, 1), "mean_drop": drop / max(soft, 1),
                     "edge_change_levels": float(np.mean(change)),
                     "ms_before_p50": float(np.median(times["before"])), "ms_now_p50": float(np.median(times["now"]))}
    return out


def picture(backgrounds: Path, path: Path, frame_index: int = 20, room_name: str = "nyu_densedepth_1_image.jpg",
            width: int = 360) -> None:
    """Before | now | true composite: the recomposited clip's hair (set 3) on the first new background.
    Before: vcam before the edge work (the mask's ramp 0.15-0.9, the camera picture blended); now: as
    shipped. A crop around the top of the head, `width` px wide per panel at 720p, enlarged 1.5x."""
    captures = [cv2.VideoCapture(str(VIDEO / f"harmonizer_{part}.mp4")) for part in ("foreground", "mask")]
    room = cover(cv2.cvtColor(cv2.imread(str(backgrounds / room_name)), cv2.COLOR_BGR2RGB), SIZE)
    new = new_backgrounds(backgrounds)[0]
    before, now = Segmenter(edge=PREVIOUS_EDGE), Segmenter()
    try:
        for _ in range(frame_index + 1):
            person, matte = (capture.read()[1] for capture in captures)
            person = cv2.cvtColor(cv2.resize(person, SIZE[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            alpha = cv2.resize(matte[..., 0], SIZE[::-1], interpolation=cv2.INTER_AREA) / np.float32(255)
            image = np.round(person * alpha[..., None] + room * (1 - alpha[..., None])).astype(np.uint8)
            mask_before, mask_now = before.mask_for(image), now.mask_for(image)
    finally:
        before.close()
        now.close()
        for capture in captures:
            capture.release()
    truth = np.round(person * alpha[..., None] + new * (1 - alpha[..., None])).astype(np.uint8)
    panels = [composite(image, new, mask_before), composite_person(image, new, mask_now, now.box), truth]
    rows, cols = np.nonzero(alpha > 0.5)
    y0 = max(int(rows.min()) - width // 6, 0)
    x0 = min(max(int(cols[rows == rows.min()].mean()) - width // 2, 0), SIZE[1] - width)
    height = width * 2 // 3
    crops = [cv2.resize(p[y0:y0 + height, x0:x0 + width], None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
             for p in panels]
    strip = np.concatenate([np.pad(c, ((0, 0), (0, 6), (0, 0)), constant_values=255) for c in crops], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/portraits_more"))
    parser.add_argument("--backgrounds", type=Path, default=Path("../shared/data/backgrounds"))
    parser.add_argument("--per-group", type=int, default=4, help="held-out photos of each group (ccp, humanseg)")
    parser.add_argument("--frames", type=int, default=8, help="frames per path and photo (the first 2 unscored)")
    parser.add_argument("--video-frames", type=int, default=30)
    parser.add_argument("--variants", default=None, help="comma list of the variants to run (default all)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--picture", type=Path, default=None, help="only draw before | now | truth (a jpg)")
    parser.add_argument("--real", type=int, default=0, metavar="FRAMES",
                        help="only set 4: this many frames of each real clip in ../shared/data/videos, timed")
    parser.add_argument("--videos", type=Path, default=Path("../shared/data/videos"))
    parser.add_argument("--flicker", action="store_true", help="only the still person's edge flicker, mask and alpha")
    args = parser.parse_args(argv)
    if args.flicker:
        result = flicker(args.data, args.backgrounds, args.per_group)
        print(json.dumps(result, indent=1))
        return result
    if args.real:
        result = real_videos(args.videos, args.backgrounds, args.real)
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return result
    if args.picture is not None:
        picture(args.backgrounds, args.picture)
        return {}
    names = tuple(args.variants.split(",")) if args.variants else None
    result = {"band_px": BAND_PX, "new_backgrounds": list(NEW_BACKGROUNDS),
              "benchmark": benchmark(args.data, args.backgrounds, args.per_group, args.frames, names=names),
              "video": video(args.backgrounds, args.video_frames, names),
              "video_recomposited": video_recomposited(args.backgrounds, args.video_frames, names)}
    for part in ("benchmark", "video", "video_recomposited"):
        for name, stats in result[part].items():
            print(f"{part:18s} {name:14s} " + " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
