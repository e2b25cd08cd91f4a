#!/usr/bin/env bash
# Reproduce the shipped default weights end to end: pack -> train -> evaluate -> plot -> install.
#
#   scripts/train_default.sh                 # CPU, the recipe the shipped weights used (docs/model_card.md)
#   scripts/train_default.sh --gpu           # one CUDA GPU (an H200): bigger batch, longer schedule, bf16
#   scripts/train_default.sh --gpu --nproc 4 # torchrun DDP over 4 GPUs
#
# Environment: PY (default .venv/bin/python), PORTRAITS (../shared/data/portraits), PACK (.pack, git-ignored),
# RUN (runs/default), OUT (runs/default/eval). Nothing is downloaded; the photos never enter the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
PORTRAITS=${PORTRAITS:-../shared/data/portraits}
PACK=${PACK:-.pack}
RUN=${RUN:-runs/default}
OUT=${OUT:-$RUN/eval}
GPU=0
NPROC=1
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=1 ;;
    --nproc) NPROC="$2"; shift ;;
    *) echo "error: unknown argument $1 (expected --gpu, --nproc N)" >&2; exit 2 ;;
  esac
  shift
done

# 1. Pack: permissive portraits split BY PHOTO (seed 0) into train (512 px, person masks from MediaPipe)
#    and held-out (native resolution, 4 FFHQH composites per photo, never trained on).
[ -f "$PACK/split.json" ] || "$PY" scripts/make_pack.py --portraits "$PORTRAITS" --out "$PACK" --seed 0

COMMON=(--synth "$PACK/train" --eval-data "$PACK/heldout" --eval-size 256 --model phnet-xs --seed 0
        --out "$RUN" --ckpt-every 200)
# 2. Train.
if [ "$GPU" = 1 ]; then
  # The paper's staged schedule at 256 (stage 1 no PFE, 2 PFE with a frozen encoder, 3 everything).
  LAUNCH=("$PY")
  [ "$NPROC" -gt 1 ] && LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC")
  "${LAUNCH[@]}" -m trainer.train "${COMMON[@]}" --size 256 --batch 16 --amp --workers 6 --device cuda \
      --stages 1:40000:1e-4,2:4000:1e-5,3:10000:1e-7 --eval-every 2000 --no-progress
else
  # CPU (2 cores): progressive resizing. Steps 1-4000 at 128 px (4x cheaper per step), then the same schedule
  # continued at 256 px from the 128 px checkpoint (--steps stops the first part; --resume continues).
  # Stage 1 (no PFE) lr 3e-4 to step 3000, stage 3 (PFE on) lr 1e-4 to 5500, then lr 3e-5 to 6500.
  STAGES=1:3000:3e-4,3:2500:1e-4,3:1000:3e-5
  "$PY" -m trainer.train "${COMMON[@]}" --size 128 --batch 8 --threads 1 --stages "$STAGES" --steps 4000 \
      --eval-every 200
  "$PY" -m trainer.train "${COMMON[@]}" --size 256 --batch 8 --threads 2 --stages "$STAGES" \
      --eval-every 100 --resume "$RUN/last.pt"
fi

# 3. Evaluate on the held-out set: identity, statistics-only, trained (network and full resolution).
mkdir -p "$OUT"
"$PY" -m trainer.evaluate --data "$PACK/heldout" --identity --json "$OUT/identity.json" --full-res
"$PY" -m trainer.evaluate --data "$PACK/heldout" --model stats --json "$OUT/stats.json" --full-res
"$PY" -m trainer.evaluate --data "$PACK/heldout" --weights "$RUN/best.safetensors" --json "$OUT/model.json" \
    --grid "$OUT/grid.png" --full-res
"$PY" scripts/plot_training.py --run "$RUN" --baselines "$OUT/identity.json" "$OUT/stats.json" \
    --out "$OUT/psnr_vs_steps.png"

# 4. Install as the shipped default (metadata: recipe + held-out figures).
"$PY" scripts/install_weights.py --weights "$RUN/best.safetensors" \
    --eval "$OUT/model.json" "$OUT/identity.json" "$OUT/stats.json" --out engine/weights/default.safetensors
