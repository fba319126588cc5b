#!/usr/bin/env bash
# Plain labels vs token labels on Imagenette photographs, 3 seeds per arm, all 3,925 validation images.
# Usage: bash run.sh OUT   (OUT: a scratch folder outside the repo; ~60 min on a shared 2-core CPU)
# The code run is the one on PYTHONPATH; results.py turns OUT into the table.
set -euo pipefail
OUT=${1:?scratch folder}
SRC=${SRC:-/work/shared/data/imagenette2-224}
HERE=$(cd "$(dirname "$0")" && pwd)
TEACHER_PER_CLASS=${TEACHER_PER_CLASS:-100}
STUDENT_PER_CLASS=${STUDENT_PER_CLASS:-50}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-6}
SEEDS=${SEEDS:-"0 1 2"}
# Run 2 (README "Run 2") sets these; the defaults are run 1's.
TEACHER_MODEL=${TEACHER_MODEL:-test_resnet}
TEACHER_PX=${TEACHER_PX:-80}
TEACHER_SMOOTHING=${TEACHER_SMOOTHING:-0.1}
TEACHER_WORKERS=${TEACHER_WORKERS:-0}
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }

log "shrink: short side 112 px (the models see 64 and 96 px)"
python "$HERE/shrink.py" "$SRC" "$OUT/img112" 112
# Subsets: the first N files (sorted) of every class; the student's images are among the teacher's.
python - "$OUT" "$TEACHER_PER_CLASS" "$STUDENT_PER_CLASS" <<'PY'
import sys
from pathlib import Path
out, sizes = Path(sys.argv[1]), {"teacher": int(sys.argv[2]), "student": int(sys.argv[3])}
for name, n in sizes.items():
    for c in sorted((out / "img112" / "train").iterdir()):
        (out / name / "train" / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[:n]:
            link = out / name / "train" / c.name / f.name
            if not link.is_symlink():
                link.symlink_to(f)
    if not (out / name / "val").exists():
        (out / name / "val").symlink_to(out / "img112" / "val")
PY

common=(--set model.num_classes=10 --set train.progress=false --set train.log_every=10 --set data.workers=0
        --set checkpoint.eval_every=1000 --set schedule.warmup_epochs=1 --set data.eval_batch_size=256)
# Students run one thread each. The plain arm needs no teacher, so its seeds run one after another while the
# teacher trains; the token-label seeds start together once the labels exist.
student() {
  local arm=$1 seed=$2 extra=()
  [ "$arm" = tl ] && extra=(--set token_labels.label_root="$OUT/labels")
  local t0; t0=$(date +%s)
  log "student $arm seed $seed: volo_tiny @64 px, ${STUDENT_PER_CLASS}/class, $STUDENT_EPOCHS epochs, MixToken"
  [ -f "$OUT/runs/${arm}_s$seed/result.json" ] || OMP_NUM_THREADS=1 volo train debug --data "$OUT/student" \
    --out "$OUT/runs" --name "${arm}_s$seed" "${common[@]}" --set train.seed="$seed" \
    --set schedule.epochs="$STUDENT_EPOCHS" --set optim.lr_base=0.04 --set train.batch_size=32 "${extra[@]}" \
    > "$OUT/${arm}_s$seed.log" 2>&1
  echo "${arm}_s${seed}_s $(( $(date +%s) - t0 ))" >> "$OUT/minutes.txt"
}
( for seed in $SEEDS; do student plain "$seed"; done ) &

t0=$(date +%s)
while [ -n "${WAIT_TEACHER:-}" ] && [ ! -f "$OUT/runs/teacher/result.json" ]; do sleep 20; done  # resumed driver
log "teacher: timm:$TEACHER_MODEL @$TEACHER_PX px, ${TEACHER_PER_CLASS}/class, $TEACHER_EPOCHS epochs, plain labels" \
    "(smoothing $TEACHER_SMOOTHING), no dense loss"
[ -f "$OUT/runs/teacher/result.json" ] || volo train debug --data "$OUT/teacher" --out "$OUT/runs" --name teacher \
  "${common[@]}" --set model.name="timm:$TEACHER_MODEL" --set model.img_size="$TEACHER_PX" --set token_labels.size=$((TEACHER_PX / 16)) \
  --set token_labels.label_smoothing="$TEACHER_SMOOTHING" --set data.workers="$TEACHER_WORKERS" \
  --set token_labels.mixtoken=false --set token_labels.dense_weight=0 --set schedule.epochs="$TEACHER_EPOCHS" \
  --set optim.lr_base=0.032 --set train.batch_size=64
echo "teacher_s $(( $(date +%s) - t0 ))" >> "$OUT/minutes.txt"

t0=$(date +%s)
log "label: the teacher's per-location classifier over the student's training images"
[ -f "$OUT/labels/manifest.json" ] || volo label --data "$OUT/student/train" \
  --teacher "$OUT/runs/teacher/weights/final.safetensors" --out "$OUT/labels" --topk 5 --workers 0 --no-progress \
  | tee "$OUT/label_report.json"
echo "label_s $(( $(date +%s) - t0 ))" >> "$OUT/minutes.txt"

for seed in $SEEDS; do student tl "$seed" & done
wait
log "done"
