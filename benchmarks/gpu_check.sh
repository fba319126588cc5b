#!/usr/bin/env bash
# The GPU check in three device calls of under 10 minutes each (see benchmarks/gpu_check.py for what each runs):
#
#     bash benchmarks/gpu_check.sh 1     # then 2, then 3; each leaves one archive $OUT/gpu_check_<call>.tar.gz
#
# Needs only python3 with torch, triton, timm and pytest; volo is imported from this tree (nothing is installed).
set -u
cd "$(dirname "$0")/.."
PY=$(command -v python3 || command -v python) || { echo "gpu_check: no python3 on PATH" >&2; exit 2; }
exec "$PY" benchmarks/gpu_check.py "$@"
