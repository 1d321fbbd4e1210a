#!/usr/bin/env bash
# HTTP benchmark, measured the way the old Flask service was: `wrk` driving
# GET /api/ip_query?ip=... with random real addresses (a Lua script picks
# one per request from addresses sampled out of the loaded tables), against
# a release server in memory mode over the real data. wrk shares the
# machine's cores with the server; the server's own CPU time per request
# and its resident memory are printed beside wrk's figures.
#
# DURATION (default 30s) sets each run's length; DATABASE_URL the admin
# database to create the scratch one beside. Installs wrk if missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${DURATION:-30s}
port=${PORT:-$(xm_free_port)}
out=$XM_WORK

xm_need_wrk
# 5,000 connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)"
xm_need_data
xm_build
xm_scratch_db bench_http
url=$scratch_url
echo "bench-http: loading the real data into $url" >&2
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null

# 20,000 addresses: 90% IPv4 drawn uniformly inside random cn ranges (the
# qqwry data covers the whole IPv4 space, China and elsewhere), 10% IPv6.
psql "$url" -qAtc "
  (SELECT host('0.0.0.0'::inet + (start_ip + floor(random() * (end_ip - start_ip + 1)))::int8)
     FROM ip_service_cn ORDER BY random() LIMIT 18000)
  UNION ALL
  (SELECT host(start_ip) FROM ip_service_v6 ORDER BY random() LIMIT 2000)" >"$out/addresses"
xm_wrk_script "$out/addresses"

xm_serve server --addr "127.0.0.1:$(xm_free_port)" --http-addr "127.0.0.1:$port" --database-url "$url" \
  --lookup memory --mmdb data/GeoLite2-City.mmdb
xm_wait_port "$port" "$server" "$out/server.log"
curl -fsS "http://127.0.0.1:$port/api/ip_query?ip=183.62.57.1" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }

# run THREADS CONNECTIONS: one wrk run; prints a table row.
run() {
  local threads=$1 connections=$2 before after report
  before=$(cpu_ticks)
  report="$out/wrk-$connections.txt"
  wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$out/query.lua" \
    "http://127.0.0.1:$port" >"$report"
  after=$(cpu_ticks)
  python3 - "$report" "$((after - before))" "$(getconf CLK_TCK)" "$(xm_rss_mb "$server")" "$threads" "$connections" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ticks, hz, rss, threads, conns = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
def find(pattern, default="0"):
    m = re.search(pattern, text)
    return m.group(1) if m else default
rps = float(find(r"Requests/sec:\s+([\d.]+)"))
total = int(find(r"(\d+) requests in"))
pct = {p: find(r"\s%s%%\s+(\S+)" % p, "-") for p in ("50", "90", "99")}
errors = find(r"Socket errors: (.*)", "none")
non2xx = find(r"Non-2xx or 3xx responses: (\d+)", "0")
cpu_us = ticks / hz * 1e6 / total if total else 0
print(f"| -t{threads} -c{conns} | {rps:,.0f} | {pct['50']} | {pct['90']} | {pct['99']} | {errors} | {non2xx} of {total:,} | {cpu_us:.1f} µs | {rss} MB |")
PY
}

echo "bench-http: wrk against memory mode, $duration per run" >&2
echo "| wrk | requests/s | p50 | p90 | p99 | socket errors | non-2xx (501: not found anywhere) | server CPU per request | server RSS after |"
echo "|---|---:|---:|---:|---:|---|---:|---:|---:|"
run 10 5000
run 2 64
echo "bench-http: peak RSS $(xm_hwm_mb "$server") MB" >&2
