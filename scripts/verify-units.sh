#!/usr/bin/env bash
# Checks the unit files in systemd/ with `systemd-analyze verify` (syntax, directive names,
# values, dependencies). The binary is not installed where the unit expects it, so the
# check runs on a temporary copy whose ExecStart= is /bin/true. Exits 0 with a notice when
# systemd-analyze is absent (containers, macOS), non-zero when a unit has a problem.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify-units: systemd-analyze not found; skipping the unit check"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's|^ExecStart=.*|ExecStart=/bin/true|' systemd/runq-worker@.service > "$tmp/runq-worker@.service"
cp systemd/runq.target "$tmp/runq.target"
# A concrete instance too, so that %i expands as it will on a host.
cp "$tmp/runq-worker@.service" "$tmp/runq-worker@default.service"

# systemd-analyze prints problems but may still exit 0 for some warnings: fail on any output.
out=$(systemd-analyze verify "$tmp/runq-worker@.service" "$tmp/runq-worker@default.service" "$tmp/runq.target" 2>&1) || {
  echo "$out" >&2
  echo "verify-units: systemd-analyze verify failed" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "verify-units: systemd-analyze verify reported problems" >&2
  exit 1
fi
echo "verify-units: systemd/runq-worker@.service and systemd/runq.target are valid ($(systemd-analyze --version | head -1))"
