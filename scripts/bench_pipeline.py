"""Benchmark the whole app from a video file to the null output, with and without harmonization.

    .venv/bin/python scripts/bench_pipeline.py --inputs 720p,1080p,4k --frames 150 --camera-rate 30 \
        --model phnet-xs --out out/bench

The same as `vcam bench pipeline ...` (see `vcam bench pipeline --help`); writes out/bench/pipeline.json,
pipeline.md and pipeline.png. The 720p/1080p/4K inputs are generated into out/bench/inputs from a real
video of a person in ../shared/data/videos (a labelled synthetic clip where none exists); they are never
committed. The targets these figures are read against are in docs/benchmarks.md.
"""

from __future__ import annotations

import sys

from vcam.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
