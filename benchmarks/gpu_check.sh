#!/usr/bin/env bash
# Everything issue 6 needs from a GPU, in one call, most important first (a lent GPU session has ~10 minutes):
#   1. GPU tests: fused-kernel parity (fp32/bf16/fp16, every gradient), prefetch, no host sync in a step,
#      CUDA-graph training equal to eager                                              (budget 150 s)
#   2. the outlook op alone at the stage-1 shapes of D1..D5, ours vs the reference     (budget  60 s)
#   3. D1..D5 @224 and D5 @448/512: train/eval img/s, memory, MFU, ours vs timm, bf16, plus ours with the
#      unfold/fold op (the fused kernel's share of the step)                            (budget 180 s)
#   4. the per-category profile of one D1 step (batch 128, bf16), ours vs timm         (budget  60 s)
#   5. D1 compiled, ours vs timm                                                       (budget 110 s)
#   6. the issue's targets table filled from those reports (targets_<card>.md)          (budget  20 s)
# At most 580 s in all: it fits one 600-s device call.
# Each stage has its own timeout, so a slow stage cannot eat the later ones' reports. Reports land in
# benchmarks/results/ (card slug in the name) and, when $OUT is set (the device tool), are copied there after
# every stage, with the logs.
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on a machine with one CUDA GPU
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-}"
LOGS="${OUT:-benchmarks/results}/gpu_check_logs"
mkdir -p "$LOGS"

save() {
    if [ -n "$OUT" ]; then
        mkdir -p "$OUT/results" && cp benchmarks/results/*.md benchmarks/results/*.json "$OUT/results/" 2>/dev/null
    fi
    return 0
}

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 budget=$2
    shift 2
    echo "== $name (budget ${budget}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$budget" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$LOGS/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0))s"
    save
}

{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader
  python -c 'import torch, triton, timm; print("torch", torch.__version__, "triton", triton.__version__, "timm", timm.__version__)'
  git rev-parse --short HEAD 2>/dev/null; date -u; } 2>&1 | tee "$LOGS/env.log"

stage tests 150 python -m pytest -m gpu -q -p no:cacheprovider tests/test_outlook_kernel.py tests/test_prefetch.py \
    tests/test_gpu_training.py
stage outlook 60 python benchmarks/bench_outlook.py
stage model 180 python benchmarks/bench_model.py --ablate-outlook
stage profile 60 python benchmarks/profile_step.py --models volo_d1 --batch 128 --amp bf16
stage compiled 110 python benchmarks/bench_model.py --models volo_d1 --compile \
    --out benchmarks/results/model_gpu_compiled_d1.md
stage targets 20 python benchmarks/targets.py
