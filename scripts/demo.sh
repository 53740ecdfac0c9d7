#!/usr/bin/env bash
# End-to-end demo: builds runq, finds Redis (or starts a private redis-server on a free
# port and says so), enqueues a batch of jobs, runs a burst worker over them and prints
# `runq info` and a few jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
BIN=target/debug
URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_URL="$URL"
if ! $BIN/runq info >/dev/null 2>&1; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  DIR=$(mktemp -d)
  redis-server --port "$PORT" --save "" --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
  trap 'kill $(cat "$DIR/redis.pid") 2>/dev/null; rm -rf "$DIR"' EXIT
  export REDIS_URL="redis://127.0.0.1:$PORT"
  for _ in $(seq 50); do $BIN/runq info >/dev/null 2>&1 && break; sleep 0.1; done
  echo "demo: no Redis answered at $URL; started a private redis-server on port $PORT"
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
