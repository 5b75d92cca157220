#!/usr/bin/env bash
# The GPU check of the memory plan (benchmarks/gpu_check.py), for one 80 GB GPU, within 8 minutes.
#
# On a GPU machine without a package index, carry the bundle made here by
# `bash ../shared/gpu/make_bundle.sh` (.device/, git-ignored) and run from the project root:
#     bash benchmarks/gpu_check.sh                  # writes $OUT/gpu_check.json (or benchmarks/gpu_check.json)
# Extra arguments go to gpu_check.py, e.g. `--steps 3` or `--phases both`, or `--case parallel`:
# both phases at once against one after the other on the FLUX-size model (about 7 minutes on an H100).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .device/on_device.sh ]; then
    # shellcheck disable=SC1091
    source .device/on_device.sh
    PY=python3
else
    PY=.venv/bin/python
fi
RESULTS=${OUT:-benchmarks}/gpu_check.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 420 s of planned work (the bf16 baseline only starts with 150 s left), cut at 470 s whatever happens.
timeout 470 "$PY" benchmarks/gpu_check.py --device cuda --budget 420 --json "$RESULTS" "$@"
