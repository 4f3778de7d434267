#!/usr/bin/env bash
# Starts a PostgreSQL server for the tests (Debian's packages; CI runs as
# root) and prints the URL of a database whose user may create schemas:
#   export TEST_DATABASE_URL="$(.ci/postgres.sh)"
# Idempotent: a server already running is reused.
set -euo pipefail

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
psql_as_postgres() { su postgres -c "psql -p $port -qAtX -v ON_ERROR_STOP=1 $*"; }
if [ "$(psql_as_postgres "-c \"SELECT 1 FROM pg_roles WHERE rolname = 'efa'\"")" != 1 ]; then
  psql_as_postgres "-c \"CREATE ROLE efa LOGIN PASSWORD 'efa'\"" >&2
fi
if [ "$(psql_as_postgres "-c \"SELECT 1 FROM pg_database WHERE datname = 'efa_test'\"")" != 1 ]; then
  psql_as_postgres "-c \"CREATE DATABASE efa_test OWNER efa\"" >&2
fi
echo "postgres://efa:efa@127.0.0.1:$port/efa_test"
