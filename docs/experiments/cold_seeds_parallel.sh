#!/bin/bash
# Frozen and --tune-text runs of cold_seeds.py for every seed at once (one process each; on the
# GPU when torch sees one, STREAM_REC_DEVICE=auto), into $OUT/frozen and $OUT/tuned. The runs
# in docs/model-report.md ("Cold items over three draws, on a GPU"):
#
#   OUT=docs/experiments/cold-seeds/train-seed-0 SEEDS="1 2 3 none" EPOCHS=60 TRAIN_SEED=0 \
#       docs/experiments/cold_seeds_parallel.sh
#   (the same with train-seed-1 and TRAIN_SEED=1), then
#   PYTHONPATH=. python docs/experiments/cold_seeds.py --table $OUT/frozen $OUT/tuned
set -u
: "${OUT:?set OUT to the output folder}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/frozen" "$OUT/tuned" "$OUT/logs"
t0=$(date +%s)
for s in ${SEEDS:-1 2 3}; do
  for mode in frozen tuned; do
    flag=$([ "$mode" = tuned ] && echo --tune-text)
    timeout "${RUN_S:-3600}" python3 docs/experiments/cold_seeds.py --seeds "$s" \
      --epochs "${EPOCHS:-20}" --train-seed "${TRAIN_SEED:-0}" $flag --out "$OUT/$mode" \
      > "$OUT/logs/$mode-$s.log" 2>&1 &
  done
done
wait
echo "all runs done in $(( $(date +%s) - t0 )) s"
