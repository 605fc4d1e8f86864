#!/usr/bin/env bash
# Training variants on MovieLens-100K on a GPU machine, side by side (one process per variant
# and split: warm, and 10% cold items), with the real training code. Writes $OUT/sweep.json.
#
# On the development machine first (the GPU machine reaches no network, holds no weights):
#   HF_HUB_OFFLINE=1 .venv/bin/python -m stream_rec.bench.gpu --prepare .gpu
# then, on the GPU machine, from the repository root with .gpu beside it:
#   OUT=/tmp/out deploy/gpu_sweep.sh [VARIANT ...]     (default: every variant; see VARIANTS
#                                                       in stream_rec/bench/gpu.py)
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$(pwd)/var/gpu-sweep}"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
variants=("$@")
if [[ ${#variants[@]} -eq 0 ]]; then
  mapfile -t variants < <("$PY" -c "from stream_rec.bench.gpu import VARIANTS; print(*VARIANTS, sep='\n')")
fi
work=$(mktemp -d)
mkdir -p "$OUT"
for v in "${variants[@]}"; do
  for c in 0 0.1; do
    "$PY" -m stream_rec.bench.gpu --device cuda --movielens .gpu/home --vectors .gpu/vectors.npy \
      --epochs 200 --variant "$v" --cold "$c" --out "$work/${v}_$c.json" >"$work/${v}_$c.log" 2>&1 &
  done
done
wait
cat "$work"/*.log >"$OUT/sweep.log"
"$PY" - "$work" "$OUT/sweep.json" <<'PY'
import glob, json, sys
runs = []
for f in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    runs += json.load(open(f))["runs"]
json.dump(runs, open(sys.argv[2], "w"), indent=1)
for r in runs:
    cold = r.get("test_cold_target", {}).get("hr10", float("nan"))
    print(f'{r["variant"]:24s} cold items {r["cold_items"]:.1f}  best epoch {r["best_epoch"]:3d}  '
          f'NDCG@10 {r["test"]["ndcg10"]:.4f}  HR@10 {r["test"]["hr10"]:.4f}  cold HR@10 {cold:.4f}')
PY
