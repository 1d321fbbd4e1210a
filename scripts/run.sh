#!/usr/bin/env bash
# Runs the service on this machine: creates the database if it is missing,
# fetches a GeoLite2 City database if none is given, migrates and serves.
# Extra arguments go to `xm-ip-service serve` (see `serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/xm_ip_service}
command -v psql >/dev/null || { echo "run.sh: psql is missing: apt-get install postgresql-client" >&2; exit 1; }
database=${DATABASE_URL##*/}; database=${database%%\?*}
admin=${DATABASE_URL%/*}/postgres
if ! psql "$admin" -Atc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  psql "$admin" -qc "CREATE DATABASE \"$database\""
  echo "run.sh: created database $database"
fi

if [ -z "${XM_IP_MMDB:-}" ]; then
  export XM_IP_MMDB=data/GeoLite2-City.mmdb
  [ -f "$XM_IP_MMDB" ] || scripts/fetch-data.sh
fi

cargo build --release --quiet
exec target/release/xm-ip-service serve --migrate "$@"
