#!/usr/bin/env bash
# Side-by-side benchmark against Python RQ on one private Redis, in one run:
#  1. worker throughput: 10,000 no-op jobs, `runq-worker --burst` vs
#     `rq worker --burst -w rq.worker.SimpleWorker` (both pick up the same task name:
#     runq.tasks.noop, which contrib/python/runq/tasks.py provides to Python);
#  2. batch enqueue: 100,000 jobs, `runq enqueue --file` vs Python `Queue.enqueue_many`
#     in a pipeline.
# Usage: bench/compare.sh [JOBS] [CONCURRENCY]   (release build; needs .venv/rq3)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-10000}
CONC=${2:-16}
BATCH=${BATCH:-100000}
PY=${RUNQ_PY_RQ3:-.venv/rq3/bin/python}
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release --bins --quiet
BIN=target/release
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --save "" --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
trap 'kill $(cat "$DIR/redis.pid") 2>/dev/null; rm -rf "$DIR"' EXIT
export REDIS_URL="redis://127.0.0.1:$PORT"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "bench: redis-server $(redis-server --version | awk '{print $3}') on port $PORT, $(nproc) cores"

runq_out=$($BIN/runq bench --jobs "$JOBS" --concurrency "$CONC" --queue bench-runq)
echo "$runq_out" | sed 's/^/runq:   /'
runq_rate=$(echo "$runq_out" | tail -1 | sed -E 's/.*= ([0-9]+) jobs\/s/\1/')

PYTHONPATH=contrib/python "$PY" - "$PORT" "$JOBS" <<'PYEOF'
import sys, time, redis
from rq import Queue
r = redis.Redis(port=int(sys.argv[1]), db=9)
q = Queue('bench-py', connection=r)
n = int(sys.argv[2])
t = time.time()
with r.pipeline() as pipe:
    jobs = q.enqueue_many([Queue.prepare_data('runq.tasks.noop', result_ttl=600) for _ in range(n)], pipeline=pipe)
    pipe.execute()
print(f"python: enqueued {n} jobs in {time.time()-t:.2f} s")
PYEOF
t0=$(date +%s.%N)
PYTHONPATH=contrib/python "$(dirname "$PY")/rq" worker --burst -w rq.worker.SimpleWorker --url "$REDIS_URL/9" --logging_level WARNING bench-py >/dev/null 2>&1
t1=$(date +%s.%N)
py_done=$(redis-cli -p "$PORT" -n 9 zcard rq:finished:bench-py)
py_rate=$(python3 -c "print(round($py_done/($t1-$t0)))")
echo "python: rq worker --burst -w rq.worker.SimpleWorker: $py_done jobs finished in $(python3 -c "print(round($t1-$t0,2))") s = $py_rate jobs/s"
echo "worker throughput ratio runq/python: $(python3 -c "print(round($runq_rate/$py_rate,1))")x"

python3 -c "
import json
for i in range($BATCH): print(json.dumps({'func': 'runq.tasks.noop', 'args': [i], 'queue': 'batch-runq'}))
" > "$DIR/jobs.jsonl"
runq_batch=$($BIN/runq enqueue --file "$DIR/jobs.jsonl")
echo "runq:   $runq_batch"
rb=$(echo "$runq_batch" | sed -E 's/.*\(([0-9]+) jobs\/s\).*/\1/')
pb=$("$PY" - "$PORT" "$BATCH" <<'PYEOF'
import sys, time, redis
from rq import Queue
r = redis.Redis(port=int(sys.argv[1]), db=9)
q = Queue('batch-py', connection=r)
n = int(sys.argv[2])
t = time.time()
for start in range(0, n, 2000):
    with r.pipeline() as pipe:
        q.enqueue_many([Queue.prepare_data('runq.tasks.noop', args=(i,)) for i in range(start, min(n, start + 2000))], pipeline=pipe)
        pipe.execute()
print(round(n / (time.time() - t)))
PYEOF
)
echo "python: Queue.enqueue_many in pipelines of 2000: $BATCH jobs at $pb jobs/s"
echo "batch enqueue ratio runq/python: $(python3 -c "print(round($rb/$pb,1))")x"
