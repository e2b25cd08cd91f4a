"""Does temporal smoothing remove flicker, and does it still follow a real change of the light?

    .venv/bin/python scripts/temporal_smoothing.py --data ../shared/data \
        --videos volcomix_Doctor_-_26732.mp4,liveportrait_d6.mp4 --background mate_Aqua.jpg \
        --frames 120 --smoothing 0.1 --out docs/img/temporal_smoothing

`--smoothing` is the Harmonizer's time constant in seconds; frames are stamped index / the video's FPS.

Each real video of a person is segmented with MediaPipe selfie segmentation and composited onto a
background photo. The Harmonizer (model --model; "stats" until trained weights ship, then the default)
runs over the sequence with smoothing off (momentum 0) and on (--smoothing). The flicker it ADDS is, per
frame, the mean over the person (mask > 0.5, all channels, 0..255) of
    |apply(correction_t, comp_t) - apply(correction_{t-1}, comp_t)|
i.e. how much this frame's output changes because the correction changed, the input held still: the
colour jitter a viewer sees, and what the smoothing is there to remove. Acceptance: its mean falls by at
least half with smoothing on. Also checked: with smoothing 0, streaming results equal single-image results
(a fresh Harmonizer per frame) bit for bit. Writes <out>.json and <out>.png (per-frame added flicker).

Step response (--step-video): the whole camera frame turns brighter and warmer at --step-at seconds (a
lamp switched on: exposure x STEP_GAIN, red up and blue down), composited on the same background. The
correction's effect is read on one fixed frame after the step: the person's mean colour there under
each frame's correction. Its level before the step and its new level are those of the unsmoothed
corrections (the means of the last STEP_LEVEL_FRAMES before the step and of the clip's last ones); the
response is the share of the way covered, and the script reports the time from the step until it first
reaches 90 %, with the network on every frame (a GPU) and every --every-th frame (the CPU worker's rate;
the frames between get the latest correction). Acceptance: at most 0.5 s for both.

Also reported, for continuity with earlier figures: the output-vs-input difference measure
    |(out_t - out_{t-1}) - (comp_t - comp_{t-1})|
It counts a perfectly steady correction that changes contrast (gain g != 1) as flicker, |g - 1| times
the motion, which no smoothing can or should remove; so it is not the acceptance measure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import cv2
import numpy as np


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--videos", default="volcomix_Doctor_-_26732.mp4,liveportrait_d6.mp4",
                   help="comma-separated file names under <data>/videos")
    p.add_argument("--background", default="mate_Aqua.jpg", help="file name under <data>/backgrounds")
    p.add_argument("--frames", type=int, default=120, help="frames per video")
    p.add_argument("--max-side", type=int, default=640, help="resize frames so the longer side is at most this")
    p.add_argument("--smoothing", type=float, default=0.1, help="time constant in seconds")
    p.add_argument("--every", type=int, default=8, help="step response: the CPU worker's estimate every N frames")
    p.add_argument("--step-video", default="liveportrait_d6.mp4", help="file name under <data>/videos ('' = no "
                   "step response)")
    p.add_argument("--step-at", type=float, default=3.0, help="seconds into the clip when the light changes")
    p.add_argument("--step-frames", type=int, default=180, help="frames of the step-response clip")
    p.add_argument("--model", default=None, help="model name or weights path (default: shipped weights, "
                   "else 'stats')")
    p.add_argument("--backend", default="auto")
    p.add_argument("--lift", default=None, help="full-resolution lift (engine.corrections.METHODS; default: the Harmonizer's)")
    p.add_argument("--identity-frames", type=int, default=5, help="frames checked for momentum-0 identity")
    p.add_argument("--out", type=Path, default=Path("docs/img/temporal_smoothing"),
                   help="output stem: <out>.json and <out>.png")
    return p


STEP_GAIN = np.array([1.35, 1.2, 0.95], np.float32)  # brighter and warmer (R, G, B)
STEP_LEVEL_FRAMES = 10


def video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and 1 <= fps <= 240 else 30.0


def read_frames(path: Path, count: int, max_side: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    frames = []
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        scale = min(1.0, max_side / max(bgr.shape[:2]))
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if len(frames) < 2:
        raise ValueError(f"{path} gave {len(frames)} frames; need at least 2")
    return frames


def composite_sequence(frames, background_path: Path):
    """(composites, masks): MediaPipe masks of each frame, the person pasted on the background photo."""
    from vcam.segment import open_selfie_model

    bgr = cv2.imread(str(background_path))
    if bgr is None:
        raise FileNotFoundError(f"cannot read background {background_path}")
    bg = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = frames[0].shape[:2]
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    composites, masks = [], []
    with contextlib.closing(open_selfie_model(1)) as segmenter:
        for frame in frames:
            mask = segmenter(frame)
            comp = frame.astype(np.float32) * mask[..., None] + bg * (1 - mask[..., None])
            composites.append(np.clip(comp + 0.5, 0, 255).astype(np.uint8))
            masks.append(mask)
    return composites, masks


def added_flicker(outputs, composites, masks) -> list[float]:
    values = []
    for t in range(1, len(outputs)):
        inside = (masks[t] > 0.5) & (masks[t - 1] > 0.5)
        if not inside.any():
            values.append(float("nan"))
            continue
        d_out = outputs[t].astype(np.float32) - outputs[t - 1]
        d_comp = composites[t].astype(np.float32) - composites[t - 1]
        values.append(float(np.abs(d_out - d_comp)[inside].mean()))
    return values


def run_sequence(harmonizer, composites, masks, fps: float = 30.0) -> tuple[list[np.ndarray], list[float]]:
    """(outputs, correction flicker per frame from the second on; see the module docstring)."""
    harmonizer.reset()
    outputs, flicker, previous = [], [], None
    for t, (comp, mask) in enumerate(zip(composites, masks)):
        correction = harmonizer.estimate(comp, mask, timestamp=t / fps)
        out = harmonizer.apply(correction, comp, mask)
        if previous is not None:
            inside = mask > 0.5
            held = harmonizer.apply(previous, comp, mask)  # last frame's correction on this frame
            change = np.abs(out.astype(np.float32) - held)[inside]
            flicker.append(float(change.mean()) if change.size else float("nan"))
        outputs.append(out)
        previous = correction
    return outputs, flicker


def corrections(harmonizer, composites, masks, fps: float, every: int = 1) -> list:
    """The correction each frame gets: the network on every `every`-th frame, the latest one between."""
    harmonizer.reset()
    out, latest = [], None
    for t, (comp, mask) in enumerate(zip(composites, masks)):
        if latest is None or t % every == 0:
            latest = harmonizer.estimate(comp, mask, timestamp=t / fps)
        out.append(latest)
    return out


def step_response(harmonizer, off, frames, background: Path, fps: float, step_at: float, every: int) -> dict:
    """Time (s) from the light's step until the correction covers 90 % of its change (module docstring),
    inline and at the worker's rate; the response curves."""
    step = int(round(step_at * fps))
    if not STEP_LEVEL_FRAMES < step < len(frames) - 2 * STEP_LEVEL_FRAMES:
        raise ValueError(f"--step-at {step_at} s leaves too few frames on one side of the step "
                         f"({len(frames)} frames at {fps:.1f} FPS)")
    lit = [f if t < step else np.clip(f * STEP_GAIN + 0.5, 0, 255).astype(np.uint8) for t, f in enumerate(frames)]
    composites, masks = composite_sequence(lit, background)
    probe, probe_mask = composites[step], masks[step]

    def level(correction) -> np.ndarray:
        out = off.apply(correction, probe, probe_mask).astype(np.float64)
        return out[probe_mask > 0.5].mean(0)

    single = [level(c) for c in corrections(off, composites, masks, fps)]
    before = np.mean(single[step - STEP_LEVEL_FRAMES:step], 0)
    after = np.mean(single[-STEP_LEVEL_FRAMES:], 0)
    change = after - before
    result = {"fps": fps, "step_frame": step, "level_before": before.tolist(), "level_after": after.tolist()}
    for label, n in (("inline", 1), (f"every {every}", every)):
        levels = [level(c) for c in corrections(harmonizer, composites, masks, fps, n)]
        response = [float((v - before) @ change / (change @ change)) for v in levels]
        reached = next((t for t in range(step, len(response)) if response[t] >= 0.9), None)
        result[label] = {"seconds_to_90": None if reached is None else (reached - step) / fps,
                         "response": response}
    return result


def main(args) -> dict:
    from engine.harmonizer import Harmonizer

    results = {"command": "scripts/temporal_smoothing.py", "smoothing": args.smoothing, "videos": {}}
    curves = {}
    lift = {"lift": args.lift} if args.lift else {}
    with Harmonizer(model=args.model, backend=args.backend, smoothing=0.0, **lift) as off, \
            Harmonizer(model=args.model, backend=args.backend, smoothing=args.smoothing, **lift) as on:
        results["model"] = off.model_description
        results["backend"] = off.backend_name
        for name in args.videos.split(","):
            frames = read_frames(args.data / "videos" / name, args.frames, args.max_side)
            composites, masks = composite_sequence(frames, args.data / "backgrounds" / args.background)
            fps = video_fps(args.data / "videos" / name)
            out_off, f_off = run_sequence(off, composites, masks, fps)
            out_on, f_on = run_sequence(on, composites, masks, fps)
            d_off = added_flicker(out_off, composites, masks)
            d_on = added_flicker(out_on, composites, masks)
            # Momentum 0 is stateless: streaming equals a fresh harmonizer on each frame, bit for bit.
            identical = True
            for t in range(min(args.identity_frames, len(composites))):
                off.reset()
                identical &= bool(np.array_equal(off.harmonize(composites[t], masks[t]), out_off[t]))
            identical &= bool(np.array_equal(out_on[0], out_off[0]))  # first frame: momentum 0 either way
            mean_off, mean_on = float(np.nanmean(f_off)), float(np.nanmean(f_on))
            # The harmonization itself, for context: how far the output moves from the composite.
            change = float(np.mean([np.abs(o.astype(np.float32) - c)[m > 0.5].mean()
                                    for o, c, m in zip(out_off, composites, masks) if (m > 0.5).any()]))
            results["videos"][name] = {
                "frames": len(frames), "size": list(frames[0].shape[:2]),
                "added_flicker_off": mean_off, "added_flicker_on": mean_on,
                "ratio_on_off": mean_on / mean_off if mean_off > 0 else float("nan"),
                "mean_abs_change_vs_composite": change, "momentum0_identical_to_single_image": identical,
                "difference_measure_off": float(np.nanmean(d_off)), "difference_measure_on": float(np.nanmean(d_on)),
                "per_frame_off": f_off, "per_frame_on": f_on,
            }
            curves[name] = (f_off, f_on)
        if args.step_video:
            path = args.data / "videos" / args.step_video
            fps = video_fps(path)
            frames = read_frames(path, args.step_frames, args.max_side)
            results["step"] = step_response(on, off, frames, args.data / "backgrounds" / args.background, fps,
                                            args.step_at, args.every)
            results["step"]["video"] = args.step_video
    ratios = [v["ratio_on_off"] for v in results["videos"].values()]
    step_times = [v["seconds_to_90"] for k, v in results.get("step", {}).items() if isinstance(v, dict)]
    results["pass"] = bool(all(r <= 0.5 for r in ratios) and all(
        v["momentum0_identical_to_single_image"] for v in results["videos"].values())
        and all(t is not None and t <= 0.5 for t in step_times))

    print(f"model {results['model']}, backend {results['backend']}, smoothing {args.smoothing}")
    print("| video | frames | size | added flicker off | on | on/off | difference measure off / on | |out-comp| "
          "| momentum 0 = single image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, v in results["videos"].items():
        print(f"| {name} | {v['frames']} | {v['size'][1]}x{v['size'][0]} | {v['added_flicker_off']:.3f} | "
              f"{v['added_flicker_on']:.3f} | {v['ratio_on_off']:.2f} | {v['difference_measure_off']:.3f} / "
              f"{v['difference_measure_on']:.3f} | {v['mean_abs_change_vs_composite']:.2f} | "
              f"{'yes' if v['momentum0_identical_to_single_image'] else 'NO'} |")
    if "step" in results:
        st = results["step"]
        for label in ("inline", f"every {args.every}"):
            t90 = st[label]["seconds_to_90"]
            print(f"step of the light in {st['video']} at {args.step_at:g} s ({st['fps']:.0f} FPS), network {label}: "
                  f"90 % of the change after {'never' if t90 is None else f'{t90:.2f} s'}")
    print("acceptance (on/off <= 0.5, identical at momentum 0, step followed to 90 % within 0.5 s): "
          f"{'PASS' if results['pass'] else 'FAIL'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(curves) + ("step" in results)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.8 * rows), squeeze=False)
    if "step" in results:
        st, ax = results["step"], axes[-1, 0]
        for label in ("inline", f"every {args.every}"):
            r = st[label]["response"]
            ax.plot([(t - st["step_frame"]) / st["fps"] for t in range(len(r))], r, label=f"network {label}", lw=1)
        ax.axhline(0.9, color="grey", lw=0.5, ls="--")
        ax.axvline(0.5, color="grey", lw=0.5, ls="--")
        ax.set_title(f"{st['video']}: the light steps at 0 s (smoothing {args.smoothing:g} s)", fontsize=9)
        ax.set_xlabel("seconds after the step")
        ax.set_ylabel("share of the change")
        ax.legend(fontsize=8)
    for ax, (name, (f_off, f_on)) in zip(axes[:, 0], curves.items()):
        ax.plot(range(1, len(f_off) + 1), f_off, label="smoothing off", lw=1)
        ax.plot(range(1, len(f_on) + 1), f_on, label=f"smoothing {args.smoothing:g} s", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("correction flicker (0..255)")
        ax.legend(fontsize=8)
        ax.set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
