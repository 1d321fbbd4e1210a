#!/usr/bin/env bash
# Resolver benchmark: a generated 1,000,000-line BIND query log (random
# addresses, field 6; scripts/gen-dns-log.py) resolved through a local
# server holding the real data in memory, and offline from the same files.
# Prints wall-clock seconds, start-up included for the offline runs.
#
# With DATABASE_URL (tables loaded with the real data), the server runs in
# memory mode from PostgreSQL and the offline runs include --database-url;
# without it, the server serves the files (`serve --data data`).
# LINES (default 1000000) sets the log's length.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
lines=${LINES:-1000000}
port=${PORT:-$(xm_free_port)}
out=$XM_WORK

xm_need_data
xm_build
python3 scripts/gen-dns-log.py "$lines" >"$out/dns.log"

if [ -n "${DATABASE_URL:-}" ]; then
  source_args=(--database-url "$DATABASE_URL" --lookup memory --mmdb data/GeoLite2-City.mmdb)
else
  source_args=(--data data)
fi
xm_serve server "${source_args[@]}" --addr "127.0.0.1:$port" --http-addr off

# timed NAME ARGS...: one resolve run; prints a table row.
timed() {
  local name=$1 started ended
  shift
  started=$(date +%s.%N)
  RUST_LOG=warn "$bin" resolve --field 6 "$out/dns.log" -o "$out/$name.csv" "$@" 2>"$out/$name.err"
  ended=$(date +%s.%N)
  python3 -c "import sys; print(f'| {sys.argv[1]} | {float(sys.argv[3]) - float(sys.argv[2]):.2f} s | {sys.argv[4]} |')" \
    "$name" "$started" "$ended" "$(head -n 1 "$out/$name.err")"
}

echo "| run | wall clock | resolve's own line |"
echo "|---|---:|---|"
timed "through the server (--addr, 4 connections, batches of 10,000)" --addr "127.0.0.1:$port"
timed "offline (--data data, start-up included)" --data data
timed "through the server, --unique" --addr "127.0.0.1:$port" --unique
if [ -n "${DATABASE_URL:-}" ]; then
  timed "offline (--database-url, start-up included)" --database-url "$DATABASE_URL" --mmdb data/GeoLite2-City.mmdb
  cmp -s "$out/offline (--data data, start-up included).csv" "$out/offline (--database-url, start-up included).csv" &&
    echo "bench-resolve: files and PostgreSQL rows identical" >&2
fi
cmp -s "$out/through the server (--addr, 4 connections, batches of 10,000).csv" \
  "$out/offline (--data data, start-up included).csv" && echo "bench-resolve: server and offline rows identical" >&2
