#!/usr/bin/env bash
# Creates the Python virtualenvs the integration tests (tests/) use to talk to real RQ:
#   .venv/rq3   rq==3.0.0 (plus msgpack, to read runq's MessagePack jobs from Python)
#   .venv/rq116 rq==1.16.2
# Both with redis-py 8.1.0: 8.2.0's PubSubWorkerThread.stop() joins the pubsub thread
# without a timeout, and rq's Worker.unsubscribe() calls it after unsubscribing, when
# that thread may be waiting up to 60 s for a subscription: `rq worker --burst` then
# sometimes takes a minute to exit (rq 3.0.0's own teardown, seen in tests/interop.rs).
# Idempotent: an existing venv that already has the right rq and redis-py versions is
# left alone.
# Usage: bash scripts/setup-python.sh   (PYTHON=python3.11 to pick another interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
REDIS_PY=8.1.0

make_venv() {
    local dir="$1" version="$2" extra="${3:-}"
    local venv="$root/.venv/$dir"
    local check="import importlib.metadata as m; print(m.version('rq'), m.version('redis'))"
    [ -n "$extra" ] && check="import $extra; $check"
    if [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c "$check" 2>/dev/null || true)" = "$version $REDIS_PY" ]; then
        echo "$venv (rq $version, redis-py $REDIS_PY, already set up)"
        return
    fi
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "rq==$version" "redis==$REDIS_PY" $extra
    echo "$venv (rq $version, redis-py $REDIS_PY)"
}

mkdir -p "$root/.venv"
make_venv rq3 3.0.0 msgpack
make_venv rq116 1.16.2
