#!/usr/bin/env bash
# Secondary arm (decided before the token-label runs finished): token labels + the ground-truth blend of the class
# target, the same 3 seeds and settings as run.sh's students. Usage: bash diagnose.sh OUT (after run.sh OUT).
# STUDENT_EPOCHS: as given to run.sh (run 1: 6, run 2: 20).
set -euo pipefail
OUT=${1:?experiment folder}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-6}
common=(--set model.num_classes=10 --set train.progress=false --set train.log_every=10 --set data.workers=0
        --set checkpoint.eval_every=1000 --set schedule.warmup_epochs=1 --set data.eval_batch_size=256)
for seed in 0 1 2; do
  [ -f "$OUT/runs/tlgt_s$seed/result.json" ] || OMP_NUM_THREADS=1 volo train debug --data "$OUT/student" \
    --out "$OUT/runs" --name "tlgt_s$seed" "${common[@]}" --set train.seed="$seed" \
    --set schedule.epochs="$STUDENT_EPOCHS" --set optim.lr_base=0.04 --set train.batch_size=32 \
    --set token_labels.label_root="$OUT/labels" --set token_labels.ground_truth=true > "$OUT/tlgt_s$seed.log" 2>&1 &
done
wait
echo "diag done $(date -u +%H:%M:%S)"
