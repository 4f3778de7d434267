#!/usr/bin/env bash
# Measures the same loadgen scenarios, in one run on this machine, against:
#   1. one controller on SQLite (a fresh temporary database);
#   2. one controller on PostgreSQL (a fresh schema of PG_URL);
#   3. two controllers on one PostgreSQL schema and one storage root, the
#      requests spread over both in turn (loadgen --url a,b).
#   PG_URL=postgres://user:password@127.0.0.1/db cmd/loadgen/run-nodes.sh [loadgen flags...]
#   e.g. PG_URL=$(.ci/postgres.sh) cmd/loadgen/run-nodes.sh --scenario idle,dispatch,longpoll
# Needs psql (to create and drop the schemas). CPU and RSS figures come from
# the first node (--pid); docs/BENCHMARKS.md, Several nodes.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PG_URL:?set PG_URL to a PostgreSQL database whose user may create schemas}"
export CGO_ENABLED=1
go build -o bin/ ./cmd/controller ./cmd/loadgen
T=$(mktemp -d)
KEY=bench-key-$(date +%s)-0123456789
PIDS=()
SCHEMAS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for s in "${SCHEMAS[@]}"; do psql "$PG_URL" -qAtXc "DROP SCHEMA $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$T"
}
trap cleanup EXIT
with_schema() { # a URL of PG_URL whose connections use schema $1
  case "$PG_URL" in *\?*) echo "$PG_URL&search_path=$1" ;; *) echo "$PG_URL?search_path=$1" ;; esac
}
start() { # start <port> <db> <storage>: a node, waiting for /health
  bin/controller --host 127.0.0.1 --port "$1" --log-level warn --api-key "$KEY" \
    --db "$2" --storage "$3" >>"$T/controller-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 3000); do curl -fsS "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return; sleep 0.01; done
  echo "node on port $1 did not start:" >&2; cat "$T/controller-$1.log" >&2; exit 1
}
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -sr), go $(go env GOVERSION), $(psql "$PG_URL" -qAtXc 'SHOW server_version' | sed 's/^/PostgreSQL /')" >&2
status=0

echo "## SQLite, one node" >&2
start 3941 "$T/sqlite/data/controller.db" "$T/sqlite/storage"
bin/loadgen --url "http://127.0.0.1:3941" --api-key "$KEY" --pid "${PIDS[0]}" "$@" | sed 's/^figure /figure sqlite./' || status=$?
stop_all

echo "## PostgreSQL, one node" >&2
s1="bench_$(date +%s)_1"; psql "$PG_URL" -qAtXc "CREATE SCHEMA $s1"; SCHEMAS+=("$s1")
start 3942 "$(with_schema "$s1")" "$T/pg1/storage"
bin/loadgen --url "http://127.0.0.1:3942" --api-key "$KEY" --pid "${PIDS[0]}" "$@" | sed 's/^figure /figure pg1./' || status=$?
stop_all

echo "## PostgreSQL, two nodes" >&2
s2="bench_$(date +%s)_2"; psql "$PG_URL" -qAtXc "CREATE SCHEMA $s2"; SCHEMAS+=("$s2")
start 3943 "$(with_schema "$s2")" "$T/pg2/storage"
start 3944 "$(with_schema "$s2")" "$T/pg2/storage"
bin/loadgen --url "http://127.0.0.1:3943,http://127.0.0.1:3944" --api-key "$KEY" --pid "${PIDS[0]}" "$@" \
  | sed 's/^figure /figure pg2./' || status=$?
stop_all
exit $status
