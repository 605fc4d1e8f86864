#!/usr/bin/env bash
# py-spy profiles of the fallback worker and of the bare echo agent in the middle of their
# latency runs (a steady stream, each event sent on its own), as raw stacks for
# docs/hot-path/stack_share.py (docs/hot-path.md, round seven). The local broker must be up.
#
#   docs/hot-path/steady_profile.sh OUT_DIR [RATE]     # RATE events/s, default 300
set -euo pipefail
out=${1:?usage: steady_profile.sh OUT_DIR [RATE]}
rate=${2:-300}
bin=$(dirname "$0")/../../.venv/bin
mkdir -p "$out"
log="$out/bench.log"
"$bin/stream-rec" bench pipeline --events 2000 --latency-rate "$rate" --out "$out/bench.json" >"$log" 2>&1 &
bench=$!
profile() {  # $1: the subject's line in the log, $2: its process, $3: the profile's name
  until grep -q "$1" "$log"; do sleep 0.5; kill -0 "$bench"; done
  sleep 8  # past the worker's start and the first seconds of the run
  "$bin/py-spy" record --pid "$(pgrep -n -f "$2")" --rate 100 --duration 12 --nonblocking \
    --threads --format raw -o "$out/$3.txt" >>"$out/py-spy.log" 2>&1
}
profile "fallback latency" "stream_rec worker" fallback
profile "bare-echo latency" "stream_rec.bench.bare" echo
wait "$bench"
