#!/usr/bin/env bash
# The one command of a GPU session (docs/notes/gpu.md has the exact device `run` call):
#
#   scripts/gpu_session.sh              # on the GPU machine: smoke, engine, 1080p pipeline, training -> $OUT
#   scripts/gpu_session.sh --dry-run    # on a CPU: the same code at tiny sizes, in seconds (tests run it)
#
# Everything lands in $OUT (at most 8 files: log.txt, summary.*, engine.*, pipeline.*, train.tar.gz);
# OUT defaults to out/gpu_session. The carry (.gpu/, made by scripts/make_gpu_pack.py) holds the pack and
# the 1080p clip. Other arguments go to scripts/gpu_session.py (--help lists them). PY picks the
# interpreter: .venv/bin/python where the checkout has one, else python3 (the GPU machine's, with torch).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_session}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" scripts/gpu_session.py --out "$OUT" "$@"
