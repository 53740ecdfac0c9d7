#!/usr/bin/env bash
# Side-by-side benchmark against Python RQ on one private Redis, in one run:
#  1. worker throughput: 10,000 no-op jobs, `runq-worker --burst` vs
#     `rq worker --burst -w rq.worker.SimpleWorker` (both pick up the same task name:
#     runq.tasks.noop, which contrib/python/runq/tasks.py provides to Python);
#  2. batch enqueue: 100,000 jobs, `runq enqueue --file` vs Python `Queue.enqueue_many`
#     in a pipeline;
#  3. NoDb lock latency: runq's acquire/release against wepppy's Python lock protocol;
#  4. Python task functions (rq-enqueued, pickled): `runq-worker --burst --concurrency 2`
#     with a [python] host preloading the module, vs `rq worker --burst` (the forking
#     Worker: every job's horse imports the module afresh) vs `rq worker --burst -w
#     rq.worker.SimpleWorker`, for (a) a light function (bench/pytasks_light.py) and
#     (b) the same function in a module that takes 0.5 s to import (bench/pytasks_heavy.py).
#     Wall time includes each worker's start-up. Sizes: PY_LIGHT_JOBS (2000),
#     PY_HEAVY_JOBS (2000; runq and SimpleWorker), PY_HEAVY_FORK_JOBS (40; forking Worker).
#     PY_REPS (1) runs the three workers that many times in turn and also prints each
#     worker's median and the ratios of the medians: a shared machine's speed drifts
#     within minutes, and interleaved runs compare the workers at the same moments.
# Usage: bench/compare.sh [JOBS] [CONCURRENCY]   (release build; needs .venv/rq3)
#        SECTIONS="1 4" bench/compare.sh          (only those sections; default all four)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-10000}
CONC=${2:-16}
BATCH=${BATCH:-100000}
PY=${RUNQ_PY_RQ3:-.venv/rq3/bin/python}
[ -x "$PY" ] || bash scripts/setup-python.sh >/dev/null
cargo build --release --bins --quiet
BIN=target/release
. scripts/private_redis.sh
SECTIONS=${SECTIONS:-1 2 3 4}
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }
COST="$PY bench/redis_cost.py"
echo "bench: redis-server $(redis-server --version | awk '{print $3}') on port $PORT, $(nproc) cores"

if wants 1; then
runq_out=$($BIN/runq bench --jobs "$JOBS" --concurrency "$CONC" --queue bench-runq)
echo "$runq_out" | sed 's/^/runq:   /'
runq_rate=$(echo "$runq_out" | tail -1 | sed -E 's/.*= ([0-9]+) jobs\/s/\1/')

$COST snap "$PORT" "$DIR/cost.json"
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
print(f"python: enqueued {n} jobs in {time.time()-t:.2f} s", end='')
PYEOF
echo "; enqueue cost: $($COST diff "$PORT" "$DIR/cost.json" "$JOBS")"
$COST snap "$PORT" "$DIR/cost.json"
t0=$(date +%s.%N)
PYTHONPATH=contrib/python "$(dirname "$PY")/rq" worker --burst -w rq.worker.SimpleWorker --url "$REDIS_URL/9" --logging_level WARNING bench-py >/dev/null 2>&1
t1=$(date +%s.%N)
py_done=$(redis-cli -p "$PORT" -n 9 zcard rq:finished:bench-py)
py_rate=$(python3 -c "print(round($py_done/($t1-$t0)))")
echo "python: worker cost: $($COST diff "$PORT" "$DIR/cost.json" "$py_done")"
echo "python: rq worker --burst -w rq.worker.SimpleWorker: $py_done jobs finished in $(python3 -c "print(round($t1-$t0,2))") s = $py_rate jobs/s"
echo "worker throughput ratio runq/python: $(python3 -c "print(round($runq_rate/$py_rate,1))")x"
fi
if wants 2; then

python3 -c "
import json
for i in range($BATCH): print(json.dumps({'func': 'runq.tasks.noop', 'args': [i], 'queue': 'batch-runq'}))
" > "$DIR/jobs.jsonl"
runq_batch=$($BIN/runq enqueue --file "$DIR/jobs.jsonl")
echo "runq:   $runq_batch"
rb=$(echo "$runq_batch" | sed -E 's/.*\(([0-9]+) jobs\/s\).*/\1/')
$COST snap "$PORT" "$DIR/cost.json"
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
echo "python: Queue.enqueue_many in pipelines of 2000: $BATCH jobs at $pb jobs/s; cost: $($COST diff "$PORT" "$DIR/cost.json" "$BATCH")"
echo "batch enqueue ratio runq/python: $(python3 -c "print(round($rb/$pb,1))")x"
fi
if wants 3; then

# 3. NoDb locks: runq's acquire (one script) and compare-and-delete release, against
#    wepppy's own lock()/unlock() protocol (SET NX EX + HSET; GET, DEL, HSET) in Python.
runq_locks=$($BIN/runq bench-locks --cycles 2000 --held 100)
echo "$runq_locks" | sed 's/^/runq:   /'
"$PY" - "$PORT" <<'PYEOF'
import json, os, socket, sys, time, uuid, redis
r = redis.Redis(port=int(sys.argv[1]), db=0, decode_responses=True)
key, runid, flag = 'nodb-lock:py-bench:climate.nodb', 'py-bench', 'locked:climate.nodb'
owner = f'{socket.gethostname()}:{os.getpid()}'
acq, rel = [], []
for _ in range(2000):
    token, now = uuid.uuid4().hex, int(time.time())
    payload = json.dumps({'token': token, 'owner': owner, 'acquired_at': now,
                          'expires_at': now + 60, 'ttl': 60}, separators=(',', ':'))
    t = time.perf_counter()
    assert r.set(key, payload, nx=True, ex=60)
    r.hset(runid, flag, 'true')
    acq.append(time.perf_counter() - t)
    t = time.perf_counter()
    stored = json.loads(r.get(key))['token']
    assert stored == token
    r.delete(key)
    r.hset(runid, flag, 'false')
    rel.append(time.perf_counter() - t)
def pct(xs, q):
    xs = sorted(xs); return xs[round((len(xs) - 1) * q)] * 1e6
print(f"python: wepppy lock(): p50 {pct(acq, .5):.0f} µs p99 {pct(acq, .99):.0f} µs; "
      f"unlock(): p50 {pct(rel, .5):.0f} µs p99 {pct(rel, .99):.0f} µs (no renewal exists)")
PYEOF
fi
if wants 4; then

# 4. Python task functions: runq's preloaded fork server vs rq's forking Worker and
#    SimpleWorker, on the same Redis.
PY_LIGHT_JOBS=${PY_LIGHT_JOBS:-2000}
PY_HEAVY_JOBS=${PY_HEAVY_JOBS:-2000}
PY_HEAVY_FORK_JOBS=${PY_HEAVY_FORK_JOBS:-40}
PY_ABS=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
RQ_CLI="$(dirname "$PY")/rq"
BENCH_DIR=$(pwd)/bench

# py_enqueue QUEUE FUNC N: N jobs FUNC(i), pipelined, pickled as rq does.
py_enqueue() {
  "$PY" - "$PORT" "$1" "$2" "$3" <<'PYEOF'
import sys, redis
from rq import Queue
r = redis.Redis(port=int(sys.argv[1]), db=9)
q, func, n = Queue(sys.argv[2], connection=r), sys.argv[3], int(sys.argv[4])
for start in range(0, n, 1000):
    with r.pipeline() as pipe:
        q.enqueue_many([Queue.prepare_data(func, args=(i,), result_ttl=600)
                        for i in range(start, min(n, start + 1000))], pipeline=pipe)
        pipe.execute()
PYEOF
}

# py_case LABEL QUEUE N CMD...: enqueue N jobs of the module's inc() on QUEUE, run CMD
# (a burst worker), print one line and set RATE to finished jobs per second.
py_case() {
  local label=$1 queue=$2 n=$3; shift 3
  py_enqueue "$queue" "$MODULE.inc" "$n"
  local t0 t1 finished failed secs
  t0=$(date +%s.%N)
  "$@" >"$DIR/$queue.log" 2>&1 || { echo "$label failed:"; tail -20 "$DIR/$queue.log"; exit 1; }
  t1=$(date +%s.%N)
  finished=$(redis-cli -p "$PORT" -n 9 zcard "rq:finished:$queue")
  failed=$(redis-cli -p "$PORT" -n 9 zcard "rq:failed:$queue")
  secs=$(python3 -c "print(round($t1-$t0,2))")
  RATE=$(python3 -c "print(round($finished/($t1-$t0),1))")
  echo "python tasks ($MODULE): $label: $finished/$n jobs finished ($failed failed) in $secs s = $RATE jobs/s"
  [ "$finished" = "$n" ] || { echo "  not every job finished; see $queue.log:"; tail -20 "$DIR/$queue.log"; }
}

PY_REPS=${PY_REPS:-1}
# median RATE...: the middle one (the mean of the two middle ones for an even count).
median() { python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:])), 1))" "$@"; }
# ratio A B: A/B with two decimals (a 4.98 must not print as the 5.0 target).
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

for MODULE in pytasks_light pytasks_heavy; do
  if [ "$MODULE" = pytasks_light ]; then N=$PY_LIGHT_JOBS; NF=$PY_LIGHT_JOBS; else N=$PY_HEAVY_JOBS; NF=$PY_HEAVY_FORK_JOBS; fi
  cat >"$DIR/$MODULE.toml" <<TOML
[worker]
concurrency = 2
[python]
command = ["$PY_ABS"]
path = ["$BENCH_DIR"]
preload = ["$MODULE"]
functions = ["$MODULE.*"]
TOML
  all_runq=() all_fork=() all_simple=()
  for rep in $(seq "$PY_REPS"); do
    q=${MODULE#pytasks_}-$rep
    py_case "runq-worker --burst --concurrency 2 ([python] preload)" "py-$q-runq" "$N" \
      $BIN/runq-worker --config "$DIR/$MODULE.toml" --queues "py-$q-runq" --burst --concurrency 2
    r_runq=$RATE
    py_case "rq worker --burst (forking Worker)" "py-$q-fork" "$NF" \
      env PYTHONPATH="$BENCH_DIR" "$RQ_CLI" worker --burst --url "$REDIS_URL/9" --logging_level WARNING "py-$q-fork"
    r_fork=$RATE
    py_case "rq worker --burst -w rq.worker.SimpleWorker" "py-$q-simple" "$N" \
      env PYTHONPATH="$BENCH_DIR" "$RQ_CLI" worker --burst -w rq.worker.SimpleWorker --url "$REDIS_URL/9" --logging_level WARNING "py-$q-simple"
    r_simple=$RATE
    echo "python tasks ($MODULE) ratio runq/forking: $(ratio "$r_runq" "$r_fork")x, runq/SimpleWorker: $(ratio "$r_runq" "$r_simple")x"
    all_runq+=("$r_runq") all_fork+=("$r_fork") all_simple+=("$r_simple")
  done
  if [ "$PY_REPS" -gt 1 ]; then
    m_runq=$(median "${all_runq[@]}") m_fork=$(median "${all_fork[@]}") m_simple=$(median "${all_simple[@]}")
    echo "python tasks ($MODULE) medians of $PY_REPS runs: runq-worker $m_runq, forking Worker $m_fork, SimpleWorker $m_simple jobs/s; ratio runq/forking: $(ratio "$m_runq" "$m_fork")x, runq/SimpleWorker: $(ratio "$m_runq" "$m_simple")x"
  fi
done
fi
