#!/usr/bin/env bash
# Redis cost and throughput of this checkout's runq-worker against an earlier commit's, on
# one private Redis: `runq bench` (this checkout's CLI enqueues and measures) runs each
# worker alternately, FLUSHALL between runs, at each concurrency, REPS times; with ENQ=1
# also `runq enqueue --file` of 100,000 jobs by each commit's CLI, its Redis cost measured
# by bench/redis_cost.py. Prints one line per run: commands/job, Redis µs/job, jobs/s.
#
# Usage: bench/before_after.sh [BASE_REV]          (default e0d7e82, where issue 13 began)
#   BASE_BIN=/path/to/release/dir   use that commit's already built binaries instead of
#                                   building BASE_REV in a worktree under target/
#   CONCURRENCY="1 16 64" JOBS=20000 REPS=3 ENQ=1
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV=${1:-e0d7e82}
CONCURRENCY=${CONCURRENCY:-1 16 64}
JOBS=${JOBS:-20000}
REPS=${REPS:-3}
PY=${RUNQ_PY_RQ3:-.venv/rq3/bin/python}
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release --bins --quiet
NEW=target/release
if [ -n "${BASE_BIN:-}" ]; then
  BASE=$BASE_BIN
else
  WT=target/before-after-$BASE_REV
  [ -d "$WT" ] || git worktree add --detach "$WT" "$BASE_REV" >/dev/null
  (cd "$WT" && cargo build --release --bins --quiet)
  BASE=$WT/target/release
fi
. scripts/private_redis.sh
echo "before/after: $BASE_REV ($BASE) vs $(git rev-parse --short HEAD) ($NEW), redis-server on port $PORT, $(nproc) cores"

for c in $CONCURRENCY; do
  for r in $(seq "$REPS"); do
    for side in before after; do
      worker=$NEW/runq-worker; [ "$side" = before ] && worker=$BASE/runq-worker
      redis-cli -p "$PORT" flushall >/dev/null
      out=$($NEW/runq bench --jobs "$JOBS" --concurrency "$c" --worker-bin "$worker" 2>&1)
      cost=$(echo "$out" | grep "worker cost" | sed -E 's/.*worker cost: ([0-9.]+) commands\/job, ([0-9]+) µs.*/\1 commands\/job, \2 µs Redis CPU\/job/')
      rate=$(echo "$out" | tail -1 | sed -E 's/.*= ([0-9]+) jobs\/s/\1/')
      echo "concurrency $c run $r $side: $cost, $rate jobs/s"
    done
  done
done

if [ "${ENQ:-0}" = 1 ]; then
  python3 -c "
import json
for i in range(100000): print(json.dumps({'func': 'runq.tasks.noop', 'args': [i], 'queue': 'enq'}))
" > "$DIR/jobs.jsonl"
  for r in $(seq "$REPS"); do
    for side in before after; do
      cli=$NEW/runq; [ "$side" = before ] && cli=$BASE/runq
      redis-cli -p "$PORT" flushall >/dev/null
      "$PY" bench/redis_cost.py snap "$PORT" "$DIR/snap.json"
      line=$($cli enqueue --file "$DIR/jobs.jsonl" 2>&1 | tail -1)
      echo "enqueue run $r $side: $line; cost: $("$PY" bench/redis_cost.py diff "$PORT" "$DIR/snap.json" 100000)"
    done
  done
fi
