#!/usr/bin/env bash
# Reproduce the shipped default weights end to end: pack -> linear baseline -> colour prior -> train ->
# linear init -> train on -> train behind the prior -> evaluate -> plot -> install -> sharpness detector.
# See docs/model_card.md for what was run and how it differed.
#
#   scripts/train_default.sh                 # CPU (2 cores, about 2.5 h): the recipe of the shipped weights
#   scripts/train_default.sh --gpu           # one CUDA GPU (an H200): the same recipe, bigger batches, bf16
#                                            # (stages A and B sized to about 8 minutes; the prior and stage
#                                            # C were added later and have not run on a GPU)
#
# Environment: PY (default .venv/bin/python), DATA (../shared/data), PACK (.pack, git-ignored),
# RUN (runs/default), OUT (runs/default/eval). Nothing is downloaded; the photos never enter the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
PACK=${PACK:-.pack}
RUN=${RUN:-runs/default}
OUT=${OUT:-$RUN/eval}
GPU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=1 ;;
    *) echo "error: unknown argument $1 (expected --gpu)" >&2; exit 2 ;;
  esac
  shift
done

# 1. Pack: the permissive photos of portraits/ and portraits_more/, split BY PHOTO (seed 0, 15 % of each
#    group held out): train (512 px, MediaPipe person masks), held-out (native resolution, 2 composites each).
[ -f "$PACK/split.json" ] || "$PY" scripts/make_pack.py --data "$DATA" --out "$PACK" --seed 0
# 2. The linear baseline every evaluation reports (fitted on the training photos only).
[ -f "$PACK/linear.json" ] || "$PY" -m trainer.linear --data "$PACK/train" --out "$PACK/linear.json"

# 2b. The colour prior (engine.colour_prior): colour statistics -> one global transform, an MLP trained on
#     22,176 fresh composites of the training photos (about 10 minutes on 2 cores).
[ -f "$RUN/colour_prior.safetensors" ] || "$PY" -m trainer.prior --data "$PACK/train" \
    --out "$RUN/colour_prior.safetensors" --eval-data "$PACK/heldout"

COMMON=(--synth "$PACK/train" --eval-data "$PACK/heldout" --eval-size 256 --model phnet-xs --no-progress)
if [ "$GPU" = 1 ]; then
  DEV=(--device cuda --amp --workers 12 --threads 4); B128=64; B256=32; A=4000; B=6000; C=2000; D=2100
else
  DEV=(--threads 1); B128=16; B256=8; A=4000; B=3500; C=900; D=2100
fi
# 3. Stage A: the affine head from scratch at 128 px (Lion, lr 3e-4).
"$PY" -m trainer.train "${COMMON[@]}" "${DEV[@]}" --model-overrides '{"output": "affine"}' --seed 0 \
    --out "$RUN/a" --size 128 --batch "$B128" --stages "3:$A:3e-4" --eval-every 1000 --ckpt-every 250
# 4. Fit the global head's linear map to what stage A still gets wrong (closed form, seconds).
"$PY" -m trainer.linear_init --checkpoint "$RUN/a/last.pt" --data "$PACK/train" --out "$RUN/init.safetensors" \
    --samples 3000
# 5. Stage B: on from there at 128 px (lr 1e-4), then at 256 px (lr 3e-5), one schedule, resumable; the
#    weight average (--ema) is what is evaluated and installed (single checkpoints swing by +-0.3 dB).
STAGES="3:$B:1e-4,3:$C:3e-5"
"$PY" -m trainer.train "${COMMON[@]}" "${DEV[@]}" --init "$RUN/init.safetensors" --seed 2 --out "$RUN/b" \
    --size 128 --batch "$B128" --stages "$STAGES" --steps "$B" --eval-every 1000 --ckpt-every 250 --ema 0.998
"$PY" -m trainer.train "${COMMON[@]}" "${DEV[@]}" --seed 2 --out "$RUN/b" --size 256 --batch "$B256" \
    --stages "$STAGES" --eval-every 250 --ckpt-every 250 --ema 0.998 --resume "$RUN/b/last.pt"

# 6. Stage C: behind the colour prior (every composite re-coloured by it first, as engine.Harmonizer does),
#    from stage B's weights at 256 px: the network learns what the prior leaves (2026-11-30: 55 minutes).
D1=$((D * 5 / 7)); D2=$((D - D1))
"$PY" -m trainer.train "${COMMON[@]}" "${DEV[@]}" --init "$RUN/b/best.safetensors" \
    --prior "$RUN/colour_prior.safetensors" --seed 3 --out "$RUN/c" --size 256 --batch "$B256" \
    --stages "3:$D1:1e-4,3:$D2:3e-5" --eval-every 250 --ckpt-every 250 --ema 0.998

# 7. Evaluate on the held-out set (identity, linear and stats beside it), at 256 and at full resolution.
mkdir -p "$OUT"
"$PY" -m trainer.evaluate --data "$PACK/heldout" --weights "$RUN/c/best.safetensors" --json "$OUT/model.json" \
    --grid "$OUT/grid.png" --full-res
"$PY" scripts/plot_training.py --run "$RUN/c" --baselines "$OUT/model.json" --out "$OUT/psnr_vs_steps.png"

# 8. Install as the shipped default (metadata: recipe + held-out figures; the prior copied beside it).
"$PY" scripts/install_weights.py --weights "$RUN/c/best.safetensors" --eval "$OUT/model.json" \
    --out engine/weights/default.safetensors

# 9. The sharpness detector, refitted on the installed weights' outputs (its labels: whether undoing a
#    sharpening helps the shipped Harmonizer on the training composites).
"$PY" scripts/fit_sharpness.py --data "$PACK/train" --out engine/weights/sharpness.json
