#!/usr/bin/env bash
# Builds the controller and loadgen, starts a fresh controller on a temporary
# directory, runs loadgen against it with --pid, measures the disk's
# sequential write rate with dd in the same directory, and cleans up.
#   cmd/loadgen/run-local.sh [loadgen flags...]     e.g. --scenario idle,dispatch
#   DB=/tmp/h/data/controller.db cmd/loadgen/run-local.sh --scenario reads
#     runs the controller on that database (e.g. one made by cmd/seed-history)
#     instead of a fresh one; the start-up time is printed either way.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CGO_ENABLED=1
go build -o bin/ ./cmd/controller ./cmd/loadgen
T=$(mktemp -d)
KEY=bench-key-$(date +%s)-0123456789
PORT=${PORT:-3939}
DB=${DB:-$T/data/controller.db}
started=$(date +%s%N)
bin/controller --host 127.0.0.1 --port "$PORT" --log-level warn --max-source-size 2GiB \
  --api-key "$KEY" --db "$DB" --storage "$T/storage" >"$T/controller.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 2000); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.01; done
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -sr), go $(go env GOVERSION)" >&2
echo "# start-up: $((($(date +%s%N) - started) / 1000000)) ms from launch to the first /health 200 ($DB)" >&2
ddrate() { dd if=/dev/zero of="$T/storage/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -n 1; rm -f "$T/storage/dd.bin"; }
echo "# dd sequential write before: $(ddrate)" >&2
status=0
bin/loadgen --url "http://127.0.0.1:$PORT" --api-key "$KEY" --pid "$PID" "$@" || status=$?
echo "# dd sequential write after: $(ddrate)" >&2
exit $status
