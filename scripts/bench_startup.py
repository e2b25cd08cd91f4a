"""Start-up and memory of `vcam run` on a 720p still, each run a new process with an empty cache (issue 21).

    python scripts/bench_startup.py                                   # this interpreter (e.g. .venv)
    python scripts/bench_startup.py --python /tmp/vcam-lean/bin/python --runs 5 --json out/startup.json

Each run starts `vcam run --input still.png --size 1280x720 --background rocket.jpg --output null` (the
CLI's own parser and Pipeline, in a child process of the given python, VCAM_CACHE_DIR a new empty folder)
and reports, from the moment the child process is started: the first frame out, the harmonizer ready
(backend started), the first frame whose person is re-coloured (output differs from the plain composite),
and, after --seconds of streaming, the resident memory (VmRSS) and its peak (VmHWM). Medians over --runs.
The still is the package's public-domain astronaut photo centred on a 1280x720 grey canvas.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the child: the CLI's parser and Pipeline with a hook that timestamps the frames (monotonic clock,
# the same clock as the parent's on Linux).
_CHILD = r"""
import json, logging, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, format="vcam: %(message)s")  # as vcam.cli.main does
from vcam.cli import build_parser
from vcam.commands.run import from_args
from vcam.pipeline import Pipeline

argv, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
config, flags = from_args(build_parser().parse_args(argv))
marks = {}

def hook(frame):
    now = time.monotonic()
    marks.setdefault("first_frame", now)
    if pipeline.harmonize is not None:
        marks.setdefault("harmonizer_ready", now)
        if frame.composite is not None and not np.array_equal(frame.output, frame.composite):
            marks.setdefault("first_harmonized", now)
    if now - marks["first_frame"] >= seconds and "first_harmonized" in marks:
        pipeline.stop()

pipeline = Pipeline(config, flags=flags, on_frame=hook)
stats = pipeline.run()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
memory = {k: int(v.split()[0]) / 1024 for k, v in status.items()}
print(json.dumps({"marks": marks, "rss_mb": memory["VmRSS"], "peak_rss_mb": memory["VmHWM"],
                  "frames": stats["frames"], "fps": stats.get("fps"),
                  "backend": (stats.get("harmonizer") or {}).get("backend"),
                  "torch_loaded": "torch" in sys.modules}))
"""


def make_inputs(folder: Path, python: str) -> tuple[Path, Path]:
    """(the 720p still, the background), written by the child's python from the package's demo photos."""
    code = ("import cv2, numpy as np, sys\n"
            "from vcam.commands.demo import DEMO_DIR\n"
            "person = cv2.resize(cv2.imread(str(DEMO_DIR / 'astronaut.jpg')), (720, 720))\n"
            "canvas = np.full((720, 1280, 3), 128, np.uint8); canvas[:, 280:1000] = person\n"
            "cv2.imwrite(sys.argv[1], canvas)\n")
    still = folder / "still.png"
    subprocess.run([python, "-c", code, str(still)], check=True)
    from_package = subprocess.run([python, "-c", "from vcam.commands.demo import DEMO_DIR; print(DEMO_DIR)"],
                                  check=True, capture_output=True, text=True).stdout.strip()
    return still, Path(from_package) / "rocket.jpg"


def one_run(python: str, still: Path, background: Path, seconds: float, folder: Path) -> dict:
    argv = ["run", "--input", str(still), "--size", "1280x720", "--background", str(background),
            "--output", "null", "--fps", "30"]
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=folder))  # empty: nothing exported or built before
    env = {**os.environ, "VCAM_CACHE_DIR": str(cache)}
    started = time.monotonic()
    done = subprocess.run([python, "-c", _CHILD, json.dumps(argv), str(seconds)], capture_output=True,
                          text=True, env=env, cwd=folder, timeout=300)
    if done.returncode:
        raise RuntimeError(f"vcam run failed: {(done.stdout + done.stderr).strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["from_start_s"] = {k: round(v - started, 3) for k, v in result.pop("marks").items()}
    result["startup_line"] = next((line for line in done.stderr.splitlines() if "backend:" in line), None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose vcam runs")
    parser.add_argument("--runs", type=int, default=3, help="new processes (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="streaming time before memory is read")
    parser.add_argument("--json", type=Path, default=None, help="also write the runs here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vcam-startup-") as tmp:
        still, background = make_inputs(Path(tmp), args.python)
        runs = []
        for i in range(args.runs):
            run = one_run(args.python, still, background, args.seconds, Path(tmp))
            runs.append(run)
            marks = ", ".join(f"{k} {v:.2f} s" for k, v in run["from_start_s"].items())
            print(f"run {i + 1}: {marks}; RSS {run['rss_mb']:.0f} MB (peak {run['peak_rss_mb']:.0f}); "
                  f"{run['frames']} frames, {run['backend']}; torch loaded: {run['torch_loaded']}")
    summary = {k: statistics.median(r["from_start_s"].get(k, float("nan")) for r in runs)
               for k in ("first_frame", "harmonizer_ready", "first_harmonized")}
    summary.update(rss_mb=statistics.median(r["rss_mb"] for r in runs),
                   peak_rss_mb=statistics.median(r["peak_rss_mb"] for r in runs))
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    print(f"start-up line: {runs[0]['startup_line']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"python": args.python, "runs": runs, "median": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
