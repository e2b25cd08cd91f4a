"""Benchmark the network alone: every backend × precision × model × net size on this machine.

    .venv/bin/python scripts/bench_engine.py --backends auto --precisions fp32,fp16 \
        --models phnet,phnet-s,phnet-xs --sizes 256,512,1024 --runs 100 --out out/bench

The same as `vcam bench engine ...` (see `vcam bench engine --help` for every option); writes
out/bench/engine.json, engine.md and engine.png. On a CPU the defaults shrink to phnet-s/phnet-xs at
256/512 (said in the report); on CUDA the torch fast-path variants (cudagraph, compile) run next to eager
fp32 torch so every row carries its speed-up.
"""

from __future__ import annotations

import sys

from vcam.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "engine", *sys.argv[1:]]))
