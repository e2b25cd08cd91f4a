"""Benchmark the network alone: every backend × precision × model × net size on this machine.

    .venv/bin/python scripts/bench_engine.py --backends torch,onnxruntime,tensorrt --precisions fp32,fp16 \
        --models phnet,phnet-s,phnet-xs --sizes 256,512,1024 --runs 100 --out out/bench

The same as `vcam bench engine ...` (see `vcam bench engine --help` for every option); writes
out/bench/engine.json, engine.md and engine.png. Configurations that cannot run on this machine (fp16 on
a CPU, TensorRT without a GPU) are listed as skipped with the backend's reason; every row that ran carries
its speed-up over torch fp32.
"""

from __future__ import annotations

import sys

from vcam.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
