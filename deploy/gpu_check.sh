#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU: a fine-tune step (full and LoRA) and
# batch scoring with torch CUDA; writes $OUT/gpu_check.json. Runs from the repository root.
# Usage: OUT=/tmp/out deploy/gpu_check.sh            (GPU)
#        OUT=/tmp/out deploy/gpu_check.sh --movielens HOME --vectors FILE.npy
#            (also trains on MovieLens-100K with the real training code; HOME holds
#             datasets/movielens-100k, FILE.npy the item text vectors, ids in FILE.json)
#        OUT=/tmp/out deploy/gpu_check.sh --cpu      (same code on CPU, tiny shapes: for tests)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(pwd)/var/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1
if [[ "${1:-}" == "--cpu" ]]; then
  exec "$PY" -m stream_rec.bench.gpu --device cpu --quick --out "$OUT/gpu_check.json"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" || true
exec "$PY" -m stream_rec.bench.gpu --device cuda --out "$OUT/gpu_check.json" "$@"
