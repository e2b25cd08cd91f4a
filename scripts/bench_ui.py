"""The control page's cost to the stream: FPS and latency p95 with the page open and polling vs without,
in one run (issue 12, acceptance 3).

    python scripts/bench_ui.py --input ../shared/data/videos/volcomix_Thoughtful_-_35590.mp4 --size 1280x720 \
        --phase-s 20 --repeats 3 --out out/bench/ui.json

One pipeline runs at camera rate (a video file paced at its frame rate, looped) with the page's server
attached. Phases alternate: "closed" (the headless Chromium shows about:blank) and "open" (it shows the
page, which polls /api/state every second and the preview four times a second). Alternating, repeated
phases spread a background load drifting over the run evenly over both. The first second of each phase
is left out (the switch itself). Latency is output send time - capture time, as the pipeline reports it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1280,900")


class PhaseRecorder:
    """on_frame hook: (sent time, latency ms) of every live frame, by the phase set when it was sent."""

    def __init__(self, page):
        self.page, self.phase, self.skip_until = page, None, 0.0
        self.samples: dict[str, list[tuple[float, float]]] = {"closed": [], "open": []}

    def __call__(self, frame) -> None:
        self.page.on_frame(frame)
        now = time.perf_counter()
        if frame.live and self.phase is not None and now >= self.skip_until:
            self.samples[self.phase].append((now, (now - frame.captured_at) * 1000.0))

    def start(self, phase: str) -> None:
        self.phase, self.skip_until = phase, time.perf_counter() + 1.0

    def report(self, spans: dict[str, list[tuple[float, float]]]) -> dict:
        out = {}
        for phase, samples in self.samples.items():
            frames = len(samples)
            seconds = sum(end - (start + 1.0) for start, end in spans[phase])
            latency = np.array([ms for _, ms in samples])
            each = [[ms for t, ms in samples if start <= t <= end] for start, end in spans[phase]]
            out[phase] = {"frames": frames, "fps": round(frames / seconds, 2),
                          "latency_p50_ms": round(float(np.percentile(latency, 50)), 2),
                          "latency_p95_ms": round(float(np.percentile(latency, 95)), 2),
                          # each phase alone, in order: how much the machine's load moved under the run
                          "fps_each": [round(len(v) / (end - start - 1.0), 1) for v, (start, end) in zip(each, spans[phase])],
                          "latency_p95_each_ms": [round(float(np.percentile(v, 95)), 1) if v else None for v in each]}
        return out


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


POLL_LOOP = """
import sys, time, urllib.request
url, tick = sys.argv[1], 0
while True:
    for path in (["preview", "api/state"] if tick % 4 == 0 else ["preview"]):
        with urllib.request.urlopen(url + path, timeout=10) as response:
            response.read()
    tick += 1
    time.sleep(0.25)
"""


class HttpPoller:
    """The page's requests without a browser, from another process (as a browser would be): /api/state
    every second, /preview four times a second."""

    def __init__(self):
        self.process = None

    def get(self, url: str) -> None:
        import subprocess
        import sys

        self.quit()
        if url.startswith("http"):
            self.process = subprocess.Popen([sys.executable, "-c", POLL_LOOP, url])

    def quit(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


def measure(args) -> dict:
    from vcam.config import RunConfig
    from vcam.pipeline import Pipeline
    from vcam.ui.server import UiServer

    config = RunConfig(input=args.input, size=args.size, output=["null"], loop=True, status_interval=0)
    page = UiServer("127.0.0.1", 0, persist=False)
    recorder = PhaseRecorder(page)
    pipeline = Pipeline(config, on_frame=recorder)
    page.attach(pipeline)
    url = page.start()
    runner = threading.Thread(target=pipeline.run, name="pipeline")
    runner.start()
    driver = browser() if args.client == "browser" else HttpPoller()
    spans: dict[str, list[tuple[float, float]]] = {"closed": [], "open": []}
    try:
        time.sleep(args.warmup_s)
        for phase in ["closed", "open"] * args.repeats:
            driver.get(url if phase == "open" else "about:blank")
            recorder.start(phase)
            started = time.perf_counter()
            time.sleep(args.phase_s)
            spans[phase].append((started, time.perf_counter()))
    finally:
        driver.quit()
        pipeline.stop()
        runner.join()
        page.close()
    return recorder.report(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--client", choices=("browser", "http"), default="browser",
                        help="browser: the page in headless Chromium; http: its requests alone (the server's cost)")
    parser.add_argument("--out", default="out/bench/ui.json")
    args = parser.parse_args()
    phases = measure(args)
    closed, opened = phases["closed"], phases["open"]
    result = {"command": vars(args), "phases": phases,
              "fps_change_percent": round(100 * (opened["fps"] / closed["fps"] - 1), 1),
              "latency_p95_change_percent": round(100 * (opened["latency_p95_ms"] / closed["latency_p95_ms"] - 1), 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
