"""Does the mask keep up? People with published masks moved across real backgrounds, exact truth per frame.

    nice -n 10 .venv/bin/python scripts/mask_motion.py --json out/mask_motion.json \
        --plot out/mask_motion.png [--per-group 4] [--no-smoothing] [--no-zoom] [--before old.json]
    .venv/bin/python scripts/mask_motion.py --replot out/mask_motion.json --before old.json --plot x.png
    git show <before>:vcam/segment.py > /tmp/segment_before.py
    nice -n 10 .venv/bin/python scripts/mask_motion.py --time-against /tmp/segment_before.py --frames 100

For held-out photos of `../shared/data/portraits_more` (ccp: full-body, humanseg: half-body; a photo is
held out when crc32(stem) % 5 == 0, and nothing in vcam is fitted on those), the person is cut out with the
published mask (hard 0/255), scaled to 720p, pasted on a real background (`../shared/data/backgrounds`) and
moved along paths: still, 4, 8, 16 and 32 px per frame (back and forth), a turn of speed (still, then
32 px/frame, then still), leaving the frame and coming back, and a second person coming in. Every frame gets
a camera's noise (Gaussian, sigma 3 levels, seeded), so a still person is not a still picture. The pasted
mask is the truth. Each path runs through one `vcam.segment.Segmenter`, frame after frame, as the app runs it.

Per path: IoU of mask >= 0.5 with the truth (mean and worst frame; frames where the truth covers under 1 %
of the frame left out), the boundary F-score within `--band` px (the mask's 0.5 contour against the
truth's), the lag (the shift of the truth that best matches the mask near the person, along the motion, in
px: positive = behind), edge flicker (mean |mask_t - mask_t-1| in a 6 px band around the truth's edge, on
the frames where nobody moves; `edge_flicker_steady` from the 6th frame of a path on), the IoU of every 4th frame segmented on its own by a reset segmenter
(`iou_fresh`: the same picture as a still frame, so motion is told apart from where the person stands) next
to the tracked mask's on those frames (`iou_tracked_same`), ghost pixels (mask >= 0.5 in frames with
nobody), and the segmenter's median time per frame (the machine's load included: compare within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rim_eval import cover  # noqa: E402

from vcam import segment  # noqa: E402
from vcam.segment import Segmenter  # noqa: E402

SIZE = (720, 1280)
NOISE_SIGMA = 3.0
FLICKER_BAND_PX = 6
LAG_REACH_PX = 40  # the largest lag measured (px) and the margin around the person it is looked for in
STEADY_AFTER = 5  # edge_flicker_steady leaves out a path's first frames (the segmenter starts from nothing)
MIN_VISIBLE = 0.01  # frames where the person covers less of the frame are left out of IoU and boundary F
HOLDOUT_MOD = 5  # a photo is held out from any fitting when crc32(stem) % HOLDOUT_MOD == 0
SPEEDS = (0, 4, 8, 16, 32)
BACKGROUNDS = ("lomiri1604_Bridge_by_Sander_Klootwijk.jpg", "lomiri1604_Wine_by_Jakkub_Mede.jpg",
               "fakecam_background.jpg", "backscrub_total_landscaping.jpg")


def held_out(stem: str) -> bool:
    """Whether a photo is kept out of any fitting (by photo, stable across runs and machines)."""
    return zlib.crc32(stem.encode()) % HOLDOUT_MOD == 0


def cutouts(data: Path, per_group: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(stem, RGB person at 720p scale, mask uint8 0/1)] for held-out photos whose person does not touch
    the photo's left, right or top side (a cut-off arm would be a straight edge in the new frame)."""
    out = []
    for group, height_fraction in (("ccp", 0.92), ("humanseg", 0.8)):
        taken = 0
        for mask_path in sorted((data / "masks").glob(f"{group}_*.png")):
            if taken == per_group:
                break
            photo_path = data / f"{mask_path.stem}.jpg"
            if not held_out(mask_path.stem) or not photo_path.exists():
                continue
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
            if mask[:, 0].any() or mask[:, -1].any() or mask[0].any() or not 0.15 <= mask.mean() <= 0.6:
                continue
            image = cv2.cvtColor(cv2.imread(str(photo_path)), cv2.COLOR_BGR2RGB)
            mask = cv2.resize(mask.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            ys, xs = np.nonzero(mask)
            image, mask = image[ys.min():, xs.min():xs.max() + 1], mask[ys.min():, xs.min():xs.max() + 1]
            # the photo's bottom stays the frame's bottom (a half-body photo's person ends there)
            scale = SIZE[0] * height_fraction / image.shape[0]
            size = (max(1, round(image.shape[1] * scale)), round(image.shape[0] * scale))
            out.append((mask_path.stem, cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                        cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)))
            taken += 1
    return out


def paste(frame: np.ndarray, truth: np.ndarray, person: np.ndarray, mask: np.ndarray, x: int) -> None:
    """The person at column x (may be partly or wholly outside), standing on the frame's bottom."""
    height, width = mask.shape
    y0 = SIZE[0] - height
    a, b = max(x, 0), min(x + width, SIZE[1])
    if a >= b:
        return
    m = mask[:, a - x:b - x].astype(bool)
    frame[y0:, a:b][m] = person[:, a - x:b - x][m]
    truth[y0:, a:b] |= m


def bounce(start: float, speed: float, frames: int, low: float, high: float) -> list[tuple[float, float]]:
    """[(x, velocity)] moving at `speed` px/frame, turning at `low` and `high`."""
    out, x, v = [], start, speed
    for _ in range(frames):
        out.append((x, v))
        if not low <= x + v <= high:
            v = -v
        x += v
    return out


def paths(person_width: int, frames: int) -> dict[str, list[list[tuple[float, float]]]]:
    """Path name -> per frame, [(x, velocity)] of each person (one or two)."""
    low, high = 40, SIZE[1] - person_width - 40
    centre = (low + high) / 2
    # back and forth about the centre (as many frames each way, so a mask that sits a pixel to one side
    # of the truth whatever the motion does not count as lag)
    out = {f"{speed}px": [[p] for p in bounce(centre, speed, frames, max(low, centre - speed * frames / 4),
                                                min(high, centre + speed * frames / 4))] for speed in SPEEDS}
    turn = [(centre - 300, 0.0)] * 10 + [(centre - 300 + 32 * i, 32.0) for i in range(1, 20)]
    turn += [(turn[-1][0], 0.0)] * 10
    out["turn"] = [[p] for p in turn]
    # leave on the right at 16 px/frame, away for 6 frames, back the same way
    out_x = SIZE[1] + 10
    steps = int((out_x - centre) / 16) + 1
    leave = [(centre + 16 * i, 16.0) for i in range(steps)]
    back = [(out_x - 16 * i, -16.0) for i in range(steps)]
    out["leave_return"] = [[p] for p in leave + [(out_x, 0.0)] * 6 + back]
    # a second person (the next photo) walks in from the right at 8 px/frame beside a still one
    out["second_person"] = [[(low, 0.0), (SIZE[1] - 8 * i, -8.0)] for i in range(frames)]
    return out


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's one-pixel inner contour (bool)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return mask & (eroded == 0)


def boundary_f(pred: np.ndarray, truth: np.ndarray, band: int) -> float:
    """Boundary F-score: contour pixels of each within `band` px of the other's contour."""
    pb, tb = boundary(pred), boundary(truth)
    if not pb.any() or not tb.any():
        return float(pb.any() == tb.any())
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    precision = float((cv2.dilate(tb.astype(np.uint8), kernel) > 0)[pb].mean())
    recall = float((cv2.dilate(pb.astype(np.uint8), kernel) > 0)[tb].mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def lag(pred: np.ndarray, truth: np.ndarray, velocity: float, reach: int = LAG_REACH_PX) -> float:
    """How far the mask sits behind the truth along the motion (px; negative: ahead): the horizontal shift
    of the truth that best matches the mask near the person (their box grown by `reach`; a blob elsewhere
    in the background does not count), refined to a fraction of a pixel by a parabola."""
    ys, xs = np.nonzero(truth)
    y0, y1 = ys.min(), ys.max() + 1
    x0, x1 = max(xs.min() - reach, 0), min(xs.max() + 1 + reach, SIZE[1])
    p, t = pred[y0:y1, x0:x1], truth[y0:y1, x0:x1]
    shifts = np.arange(-reach, reach + 1)
    errors = np.array([np.count_nonzero(p ^ np.roll(t, s, axis=1)) for s in shifts], float)
    i = int(np.argmin(errors))
    best = float(shifts[i])
    if 0 < i < len(shifts) - 1:
        left, mid, right = errors[i - 1:i + 2]
        curve = left - 2 * mid + right
        if curve > 0:
            best += 0.5 * (left - right) / curve
    return -best if velocity > 0 else best


def edge_band(truth: np.ndarray, px: int = FLICKER_BAND_PX) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    person = truth.astype(np.uint8)
    return (cv2.dilate(person, kernel) > 0) & (cv2.erode(person, kernel) == 0)


def run_path(segmenter: Segmenter, background: np.ndarray, people, steps, rng, band: int,
             fresh: Segmenter | None = None, fresh_every: int = 4) -> dict:
    """Per-frame figures of one path; with `fresh`, also the IoU of every `fresh_every`-th frame segmented
    on its own (a reset segmenter: as a still picture), and the tracked mask's IoU on the same frames."""
    segmenter.reset()
    frames = {"iou": [], "bf": [], "lag": [], "flicker": [], "flicker_steady": [], "ghost": [], "ms": [],
              "iou_fresh": [], "iou_same": []}
    previous = None
    for index, positions in enumerate(steps):
        frame, truth = background.copy(), np.zeros(SIZE, bool)
        for (person, mask), (x, _) in zip(people, positions):
            paste(frame, truth, person, mask, int(round(x)))
        noisy = np.clip(frame + rng.normal(0.0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8)
        start = time.perf_counter()
        mask = segmenter.mask_for(noisy)
        frames["ms"].append(1e3 * (time.perf_counter() - start))
        pred = mask >= 0.5
        if not truth.any():
            frames["ghost"].append(int(pred.sum()))
        elif truth.sum() >= MIN_VISIBLE * truth.size:  # a sliver at the frame's side is no test of the mask
            frames["iou"].append(float((pred & truth).sum() / (pred | truth).sum()))
            if fresh is not None and index % fresh_every == 0:
                fresh.reset()
                alone = fresh.mask_for(noisy) >= 0.5
                frames["iou_fresh"].append(float((alone & truth).sum() / (alone | truth).sum()))
                frames["iou_same"].append(frames["iou"][-1])
            frames["bf"].append(boundary_f(pred, truth, band))
            x, v = positions[0]
            width = people[0][1].shape[1]
            # lag only for one person wholly inside the frame, moving
            if v != 0 and len(positions) == 1 and 0 < x and x + width < SIZE[1]:
                frames["lag"].append(lag(pred, truth, v))
        if previous is not None and all(v == 0 for _, v in positions) and truth.any():
            edge = edge_band(truth)
            frames["flicker"].append(float(np.abs(mask - previous)[edge].mean()))
            if index >= STEADY_AFTER:  # past the first frames, where the crop and the smoothing settle
                frames["flicker_steady"].append(frames["flicker"][-1])
        previous = mask
    return frames


def summarize(per_frame: list[dict]) -> dict:
    """Means over photos' frames, the worst frame, for one path."""
    pool = {key: [v for frames in per_frame for v in frames[key]] for key in per_frame[0]}
    out = {"frames": len(pool["ms"])}
    if pool["iou"]:
        out.update(iou=float(np.mean(pool["iou"])), iou_worst=float(np.min(pool["iou"])),
                   boundary_f=float(np.mean(pool["bf"])), boundary_f_worst=float(np.min(pool["bf"])))
    if pool["iou_fresh"]:
        # the same frames segmented each on its own: what motion costs, apart from where the person is
        out.update(iou_fresh=float(np.mean(pool["iou_fresh"])), iou_tracked_same=float(np.mean(pool["iou_same"])))
    if pool["lag"]:
        out.update(lag_px=float(np.mean(pool["lag"])), lag_px_p95=float(np.percentile(pool["lag"], 95)))
    if pool["flicker"]:
        out["edge_flicker"] = float(np.mean(pool["flicker"]))
    if pool["flicker_steady"]:
        out["edge_flicker_steady"] = float(np.mean(pool["flicker_steady"]))
    if pool["ghost"]:
        out["ghost_px_max"] = int(np.max(pool["ghost"]))
    out["ms_p50"] = float(np.median(pool["ms"]))
    return out


def evaluate(data: Path, backgrounds: Path, per_group: int = 4, frames: int = 40, band: int = 3,
             smoothing: bool = True, zoom: bool = True, seed: int = 0) -> dict:
    people = cutouts(data, per_group)
    if len(people) < 2:
        raise FileNotFoundError(f"fewer than 2 held-out photos with masks in {data}")
    rng = np.random.default_rng(seed)
    segmenter = Segmenter(smoothing=smoothing, zoom=zoom)
    fresh = Segmenter(smoothing=smoothing, zoom=zoom)
    results: dict[str, list[dict]] = {}
    try:
        for i, (_, person, mask) in enumerate(people):
            backdrop = cv2.cvtColor(cv2.imread(str(backgrounds / BACKGROUNDS[i % len(BACKGROUNDS)])),
                                    cv2.COLOR_BGR2RGB)
            background = cover(backdrop, SIZE)
            other = people[(i + 1) % len(people)]
            for name, steps in paths(person.shape[1], frames).items():
                cast = [(person, mask)] if name != "second_person" else [(person, mask), other[1:]]
                results.setdefault(name, []).append(run_path(segmenter, background, cast, steps, rng, band,
                                                             fresh))
    finally:
        segmenter.close()
        fresh.close()
    return {"photos": [stem for stem, _, _ in people], "size": list(SIZE), "band_px": band, "seed": seed,
            "smoothing": smoothing, "zoom": zoom, "noise_sigma": NOISE_SIGMA,
            "paths": {name: summarize(per_frame) for name, per_frame in results.items()}}


def plot(result: dict, path: Path, before: dict | None = None) -> None:
    """IoU (mean and worst frame), boundary F and lag per path; with `before` (an earlier run's JSON),
    its bars beside these."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["paths"])
    runs = [("before", before), ("now", result)] if before else [("now", result)]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    x = np.arange(len(names))
    width = 0.8 / len(runs)
    panels = [("iou", "IoU with the truth (mean)", (0.6, 1.0)), ("iou_worst", "IoU, worst frame", (0.0, 1.0)),
              ("boundary_f", f"boundary F ({result['band_px']} px)", (0.4, 1.0)),
              ("lag_px", "lag along the motion (px)", None)]
    for ax, (key, title, limits) in zip(axes, panels):
        for i, (label, run) in enumerate(runs):
            values = [run["paths"].get(n, {}).get(key, np.nan) for n in names]
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=label)
        if limits:
            ax.set_ylim(*limits)
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=45, ha="right")
    axes[0].legend()
    fig.suptitle(f"mask_motion: {len(result['photos'])} held-out photos at 720p, smoothing={result['smoothing']}, "
                 f"zoom={result['zoom']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def time_against(other: Path, data: Path, backgrounds: Path, frames: int = 60, speed: int = 8) -> dict:
    """Milliseconds per frame of this checkout's Segmenter and of the one in `other` (a segment.py, e.g.
    `git show HEAD~1:vcam/segment.py > /tmp/segment_before.py`), frame for frame in turn on the same 720p
    frames (one person walking at `speed` px/frame, then standing): the load of the machine falls on both."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("segment_other", other)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MODELS_DIR = segment.MODELS_DIR  # the models ship beside this checkout's segment.py
    stem, person, mask = cutouts(data, 1)[0]
    background = cover(cv2.cvtColor(cv2.imread(str(backgrounds / BACKGROUNDS[0])), cv2.COLOR_BGR2RGB), SIZE)
    rng = np.random.default_rng(0)
    segmenters = {"this": Segmenter(), "other": module.Segmenter()}
    times: dict[str, dict[str, list[float]]] = {name: {"moving": [], "still": []} for name in segmenters}
    # the process's CPU time too (every thread: MediaPipe's included), less moved by other processes' load
    cpu: dict[str, dict[str, list[float]]] = {name: {"moving": [], "still": []} for name in segmenters}
    steps = paths(person.shape[1], frames)
    for phase, key in (("moving", f"{speed}px"), ("still", "0px")):
        for positions in steps[key]:
            frame, truth = background.copy(), np.zeros(SIZE, bool)
            paste(frame, truth, person, mask, int(round(positions[0][0])))
            noisy = np.clip(frame + rng.normal(0.0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8)
            order = list(segmenters.items())
            for name, segmenter in order if len(times["this"][phase]) % 2 else order[::-1]:  # each first in turn
                start, start_cpu = time.perf_counter(), time.process_time()
                segmenter.mask_for(noisy)
                times[name][phase].append(1e3 * (time.perf_counter() - start))
                cpu[name][phase].append(1e3 * (time.process_time() - start_cpu))
    for segmenter in segmenters.values():
        segmenter.close()
    return {"photo": stem, "other": str(other), **{
        f"{name}_{phase}_ms_p50": float(np.median(values)) for name, by in times.items() for phase, values in by.items()},
        **{f"{name}_{phase}_cpu_ms_mean": float(np.mean(values)) for name, by in cpu.items()
           for phase, values in by.items()}, "load": list(os.getloadavg())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/portraits_more"))
    parser.add_argument("--backgrounds", type=Path, default=Path("../shared/data/backgrounds"))
    parser.add_argument("--per-group", type=int, default=4, help="held-out photos of each group (ccp, humanseg)")
    parser.add_argument("--frames", type=int, default=40, help="frames per path")
    parser.add_argument("--band", type=int, default=3, help="boundary F-score tolerance, px")
    parser.add_argument("--seed", type=int, default=0, help="the camera noise's seed (the figures' spread)")
    parser.add_argument("--no-smoothing", action="store_true")
    parser.add_argument("--no-zoom", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None, help="an earlier run's JSON, plotted beside")
    parser.add_argument("--replot", type=Path, default=None, help="only plot this run's JSON (with --before)")
    parser.add_argument("--time-against", type=Path, default=None,
                        help="only time this Segmenter against the one in this segment.py, frame for frame")
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text()) if args.before else None
    if args.replot is not None:
        plot(json.loads(args.replot.read_text()), args.plot, before)
        return {}
    if args.time_against is not None:
        result = time_against(args.time_against, args.data, args.backgrounds, args.frames)
        print(json.dumps(result, indent=1))
        return result
    result = evaluate(args.data, args.backgrounds, args.per_group, args.frames, args.band,
                      smoothing=not args.no_smoothing, zoom=not args.no_zoom, seed=args.seed)
    for name, stats in result["paths"].items():
        print(f"{name:14s} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in stats.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot, before)
    return result


if __name__ == "__main__":
    main()
