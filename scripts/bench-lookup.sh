#!/usr/bin/env bash
# Lookup benchmark: loads the real data into a scratch database, starts a
# release server on loopback and drives it with `xm-ip-service bench` for a
# fixed time per configuration (random public IPv4, 10% IPv6). The load
# generator runs on the same machine, so it shares the cores with the
# server and PostgreSQL. Needs the files from scripts/fetch-data.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=xm_ip_bench_lookup_$$
duration=${DURATION:-10s}
addr=127.0.0.1:${PORT:-19090}
bin=target/release/xm-ip-service
cargo build --release --quiet
psql "$admin" -qc "CREATE DATABASE $db"
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
}
trap cleanup EXIT
export DATABASE_URL="${admin%/*}/$db"
RUST_LOG=warn scripts/load-real-data.sh >/dev/null
RUST_LOG=warn "$bin" serve --addr "$addr" --mmdb data/GeoLite2-City.mmdb &
server=$!
sleep 1
for run in "--connections 8 --batch 1" "--connections 8 --batch 100" "--connections 4 --batch 1000" \
           "--connections 8 --batch 100 --method english" "--connections 8 --batch 100 --method i18n"; do
  # shellcheck disable=SC2086
  "$bin" bench --addr "$addr" --duration "$duration" $run
done
