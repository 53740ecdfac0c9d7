#!/usr/bin/env bash
# The test command: Python virtualenvs with the real `rq` (3.0.0 and 1.16.2), a build of
# every binary, then every test. Integration tests start their own redis-server on free
# ports, so redis-server must be on PATH; the TLS tests make their certificates with the
# `openssl` command-line tool.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "test.sh: redis-server is not on PATH (apt-get install redis-server)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "test.sh: openssl is not on PATH (apt-get install openssl)" >&2; exit 1; }
bash scripts/setup-python.sh
cargo build --workspace --bins
cargo test --workspace
# The Python task host's own suite, against real rq 3.0.0 and 1.16.2.
.venv/rq3/bin/python tests/py/test_python_host.py
.venv/rq116/bin/python tests/py/test_python_host.py
