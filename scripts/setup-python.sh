#!/usr/bin/env bash
# Creates the Python virtualenvs the integration tests (tests/) use to talk to real RQ:
#   .venv/rq3   rq==3.0.0 (plus msgpack, to read runq's MessagePack jobs from Python)
#   .venv/rq116 rq==1.16.2
# Idempotent: an existing venv that already has the right rq version is left alone.
# Usage: bash scripts/setup-python.sh   (PYTHON=python3.11 to pick another interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

make_venv() {
    local dir="$1" version="$2" extra="${3:-}"
    local venv="$root/.venv/$dir"
    local check="import importlib.metadata as m; print(m.version('rq'))"
    [ -n "$extra" ] && check="import $extra; $check"
    if [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c "$check" 2>/dev/null || true)" = "$version" ]; then
        echo "$venv (rq $version, already set up)"
        return
    fi
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "rq==$version" $extra
    echo "$venv (rq $version)"
}

mkdir -p "$root/.venv"
make_venv rq3 3.0.0 msgpack
make_venv rq116 1.16.2
