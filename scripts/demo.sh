#!/usr/bin/env bash
# End-to-end demo: builds runq, uses the Redis at $REDIS_URL when that is set and answers
# (else starts a private redis-server on a free port and says so: it never writes to a
# Redis it was not pointed at), enqueues a batch of jobs, runs a burst worker over them and prints
# `runq info` and a few jobs. Then a WEPP-like NoDb pipeline for three runs (climate,
# soils and landuse builds, then run_wepp depending on all three) with its status lines,
# RedisPrep hash and run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
BIN=target/debug
URL="${REDIS_URL:-}"
if [ -z "$URL" ] || ! REDIS_URL="$URL" $BIN/runq info >/dev/null 2>&1; then
  . scripts/private_redis.sh
  if [ -n "$URL" ]; then
    echo "demo: no Redis answered at $URL; started a private redis-server on port $PORT"
  else
    echo "demo: REDIS_URL is not set; started a private redis-server on port $PORT"
  fi
else
  export REDIS_URL="$URL"
fi
Q="demo-$$"
echo "demo: enqueueing jobs on queue $Q and 2000 no-op jobs on $Q-bench"
for i in $(seq 1 5); do $BIN/runq enqueue runq.tasks.echo "$i" "demo" --queue "$Q" >/dev/null; done
ID_SLEEP=$($BIN/runq enqueue runq.tasks.sleep 0.5 --queue "$Q" | tail -1)
ID_FAIL=$($BIN/runq enqueue runq.tasks.fail "demo failure" --queue "$Q" | tail -1)
ID_JSON=$($BIN/runq enqueue runq.tasks.echo '{"k": [1, 2]}' --kwarg mode='"json"' --serializer json --queue "$Q" | tail -1)
$BIN/runq bench --jobs 2000 --concurrency 8 --queue "$Q-bench" | sed 's/^/demo: /'
RUST_LOG=warn $BIN/runq-worker --burst --queues "$Q" --concurrency 4 --name "demo-$$"
echo; $BIN/runq info "$Q" "$Q-bench"
echo; $BIN/runq job "$ID_JSON"; echo; $BIN/runq job "$ID_FAIL"

RUNS=$(mktemp -d)
trap 'kill $(cat "${DIR:-/nonexistent}/redis.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "${DIR:-}" "$RUNS"' EXIT
printf '[worker]\nruns_dir = "%s"\n' "$RUNS/runs" > "$RUNS/queues.toml"
export RUNQ_CONFIG="$RUNS/queues.toml"
RUN1="demo-$$-run-1"
echo; echo "demo: NoDb pipeline for 3 runs in $RUNS/runs (build_climate, build_soils, build_landuse -> run_wepp)"
$BIN/runq tail "$RUN1" --count 16 > "$RUNS/tail.log" 2>/dev/null &
TAIL=$!
sleep 0.3
for r in 1 2 3; do
  run="demo-$$-run-$r"
  C=$($BIN/runq enqueue runq.demo.build_climate "$run" 0.3 --queue "$Q" | tail -1)
  S=$($BIN/runq enqueue runq.demo.build_soils "$run" 0.3 --queue "$Q" | tail -1)
  L=$($BIN/runq enqueue runq.demo.build_landuse "$run" 0.3 --queue "$Q" | tail -1)
  $BIN/runq enqueue runq.demo.run_wepp "$run" 1 --queue "$Q" --depends-on "$C" --depends-on "$S" --depends-on "$L" >/dev/null
done
RUST_LOG=warn $BIN/runq-worker --burst --queues "$Q" --concurrency 4 --name "demo-nodb-$$"
wait "$TAIL" 2>/dev/null || true
echo "demo: status lines of $RUN1 (runq tail $RUN1):"; sed 's/^/  /' "$RUNS/tail.log"
echo; $BIN/runq prep "$RUN1"
echo; $BIN/runq locks "$RUN1"
echo; echo "demo: $RUNS/runs/$RUN1:"; ls "$RUNS/runs/$RUN1" | sed 's/^/  /'
echo "demo: wepp.nodb = $(cat "$RUNS/runs/$RUN1/wepp.nodb")"
