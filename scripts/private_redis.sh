# Sourced by scripts/demo.sh and the bench scripts: starts a private redis-server on a free port (no
# persistence) in a temporary directory, waits until it answers, and removes both at
# exit. Sets PORT, DIR (the directory, also for the script's own files) and REDIS_URL.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
trap 'kill $(cat "$DIR/redis.pid") 2>/dev/null || true; rm -rf "$DIR"' EXIT
export REDIS_URL="redis://127.0.0.1:$PORT"
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
