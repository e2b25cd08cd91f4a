"""Soak: over a long run, resident memory and CPU per frame stay flat (issue 22, acceptance 2).

    nice -n 10 .venv/bin/python scripts/soak.py \
        --input ../shared/data/videos/volcomix_Thoughtful_-_35590.mp4 --minutes 120 --window-min 10 \
        --out out/soak/soak.json

One pipeline runs GPU-style, the network on every frame in the frame loop (`--harmonize-mode inline`), on
the CPU torch device at a small size (320x180, network 128 px by default) with one torch thread (a GPU
run spends no CPU threads on the network; two spin-waiting threads on a shared 2-core machine measure the
neighbours), reading a video file looped at its own frame rate, with the control page's server attached (its per-frame hook, as `vcam run --ui`) and polled by a
client thread the way the page polls it: GET /api/state every second, GET /preview four times a second,
and a POST of the strength every 30 s. Every `--sample-s` seconds it records the process's resident memory
(VmRSS), its CPU time (every thread) and the frames sent; CPU per frame is the CPU of that interval over
its frames. At the end the first and the last `--window-min` minutes are compared (the first `--warmup-s`
seconds left out: allocators and caches fill there): mean resident memory and mean CPU ms per frame, and
the verdict is whether both moved less than `--tolerance` (5 %). Each window is summarised by its
median sample (a neighbour's burst on a shared machine moves a mean, not the median) and its mean, both
kept. The JSON is rewritten after every sample,
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vcam.config import RunConfig  # noqa: E402 - after the path, so the script runs from a checkout
from vcam.metrics import CORES, write_json  # noqa: E402

log = logging.getLogger("soak")


def resident_mb() -> float | None:
    """The process's resident memory now (VmRSS, Linux); None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class PagePoller(threading.Thread):
    """Polls the control page as the page's JavaScript does, from its own thread, until `stop` is set."""

    def __init__(self, url: str, stop: threading.Event, post_every_s: float = 30.0):
        super().__init__(name="soak-poller", daemon=True)
        self.url, self.stop, self.post_every_s = url.rstrip("/"), stop, post_every_s
        self.requests, self.errors, self.last_error = 0, 0, None

    def _call(self, path: str, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except OSError as exc:  # a refused or failed request is counted, the soak goes on
            if "503" not in str(exc):  # no frame yet for /preview at the very start
                self.errors += 1
                self.last_error = str(exc)

    def run(self) -> None:
        tick, strength = 0, 0.8
        next_post = time.monotonic() + self.post_every_s
        while not self.stop.wait(0.25):
            tick += 1
            self._call(f"/preview?t={tick}")
            if tick % 4 == 0:
                self._call("/api/state")
            if time.monotonic() >= next_post:
                next_post += self.post_every_s
                strength = 1.0 if strength < 1.0 else 0.8
                self._call("/api/state", {"settings": {"strength": strength}})


class Sampler(threading.Thread):
    """Every `every_s`: (seconds since the first frame, RSS MB, process CPU s, frames sent)."""

    def __init__(self, pipeline, every_s: float, stop: threading.Event, on_sample):
        super().__init__(name="soak-sampler", daemon=True)
        self.pipeline, self.every_s, self.stop, self.on_sample = pipeline, every_s, stop, on_sample
        self.samples: list[dict] = []

    def run(self) -> None:
        while self.pipeline.frames == 0 and not self.stop.wait(0.1):
            pass
        start = time.monotonic()
        previous = (start, time.process_time(), self.pipeline.frames)
        while not self.stop.wait(max(0.0, previous[0] + self.every_s - time.monotonic())):
            now, cpu, frames = time.monotonic(), time.process_time(), self.pipeline.frames
            sent = frames - previous[2]
            self.samples.append({
                "t_s": round(now - start, 1), "rss_mb": resident_mb(), "frames": frames,
                "fps": round(sent / (now - previous[0]), 2),
                "cpu_ms_per_frame": round(1000.0 * (cpu - previous[1]) / sent, 3) if sent else None,
                "cpu_cores": round((cpu - previous[1]) / (now - previous[0]), 3)})
            previous = (now, cpu, frames)
            self.on_sample(self.samples)


def compare(samples: list[dict], window_s: float, warmup_s: float, tolerance: float) -> dict:
    """Mean RSS and CPU per frame of the first and the last `window_s` (after `warmup_s`), and the verdict."""
    if not samples:
        return {"complete": False, "reason": "no samples"}
    end = samples[-1]["t_s"]
    first = [s for s in samples if warmup_s < s["t_s"] <= warmup_s + window_s]
    last = [s for s in samples if s["t_s"] > end - window_s]
    complete = end >= warmup_s + 2 * window_s  # the two windows do not overlap

    def summary(chosen):
        out = {"samples": len(chosen)}
        for key in ("rss_mb", "cpu_ms_per_frame", "fps"):
            values = [s[key] for s in chosen if s[key] is not None]
            out[key] = round(float(np.median(values)), 3) if values else None
            out[key + "_mean"] = round(float(np.mean(values)), 3) if values else None
        return out

    a, b = summary(first), summary(last)
    change = {key: round(100.0 * (b[key] - a[key]) / a[key], 2) if a[key] and b[key] is not None else None
              for key in ("rss_mb", "cpu_ms_per_frame")}
    flat = all(v is not None and abs(v) <= 100.0 * tolerance for v in change.values())
    return {"complete": complete, "window_s": window_s, "warmup_s": warmup_s, "first": a, "last": b,
            "change_pct": change, "tolerance_pct": 100.0 * tolerance, "flat": bool(flat and complete)}


def build(args):
    """The pipeline (GPU-style inline on the CPU torch device) and the control page's server, attached."""
    from vcam.pipeline import Pipeline
    from vcam.ui.server import UiServer

    width, height = (int(v) for v in args.size.lower().split("x"))
    config = RunConfig(input=args.input, size=(width, height), background=[args.background],
                       output=["null"], harmonize_mode="inline", backend="torch", device="cpu",
                       net_size=args.net_size, threads=args.threads, loop=True, status_interval=60.0)
    page = UiServer("127.0.0.1", 0, persist=False)
    pipeline = Pipeline(config, on_frame=page.on_frame)
    page.attach(pipeline)
    return config, pipeline, page


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(REPO.parent / "shared/data/videos/volcomix_Thoughtful_-_35590.mp4"))
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--net-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the frame loop")
    parser.add_argument("--background", default="color:#1e3caa")
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--window-min", type=float, default=10.0, help="minutes compared at each end")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of the first window")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--out", default="out/soak/soak.json")
    return parser


def main(args) -> int:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)  # the frame loop's own (inline: it runs the network)
    config, pipeline, page = build(args)
    stop = threading.Event()
    url = page.start()
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cores": CORES,
              "cpu": _cpu_model(), "config": {k: v for k, v in vars(args).items()},
              "pipeline": {"harmonize_mode": config.harmonize_mode, "backend": config.backend,
                           "device": config.device, "size": list(config.size)}, "url": url}

    def on_sample(samples):
        s = samples[-1]
        log.info("t=%5.0f s  rss %.1f MB  cpu %s ms/frame  %.1f fps", s["t_s"], s["rss_mb"] or -1,
                 s["cpu_ms_per_frame"], s["fps"])
        result.update(samples=samples, poll={"requests": poller.requests, "errors": poller.errors,
                                             "last_error": poller.last_error},
                      comparison=compare(samples, 60.0 * args.window_min, args.warmup_s, args.tolerance))
        write_json(args.out, result)

    poller = PagePoller(url, stop)
    sampler = Sampler(pipeline, args.sample_s, stop, on_sample)
    timer = threading.Timer(60.0 * args.minutes, pipeline.stop)
    for thread in (poller, sampler, timer):
        thread.daemon = True
        thread.start()
    try:
        stats = pipeline.run()
    finally:
        stop.set()
        timer.cancel()
        page.close()
        sampler.join()
    result["run"] = {k: stats.get(k) for k in ("frames", "duration_s", "fps", "latency_ms", "cpu", "harmonizer")}
    write_json(args.out, result)
    comparison = result.get("comparison", {})
    print(json.dumps(comparison, indent=2))
    return 0 if comparison.get("flat") else 1


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine if hasattr(os, "uname") else None


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
