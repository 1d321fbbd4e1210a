#!/usr/bin/env bash
# This service's HTTP API beside its obvious peer, in one run on one box:
# nginx with ngx_http_geoip2_module (bench/nginx-geoip2.conf, 2 workers)
# answering GET /api/ip_query?ip= from data/GeoLite2-City.mmdb with JSON it
# makes itself, and a release server in file mode on data/ (the qqwry ipdb
# and the same mmdb), answering every field. The same wrk script (20,000
# random public IPv4 addresses) runs against each at 64, 1,000 and 5,000
# connections, then 8 requests pipelined on 64, the two alternating,
# DURATION (10s) per run, ROUNDS (1) times. It prints one table: requests/s, latency, errors, and each
# server's own CPU per request (wrk shares the 2 cores).
# Installs nginx, its geoip2 module and wrk when missing. Loopback only;
# everything stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${DURATION:-10s}
rounds=${ROUNDS:-1}
out=$XM_WORK

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
[ -f /usr/lib/nginx/modules/ngx_http_geoip2_module.so ] || need+=(libnginx-mod-http-geoip2)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# 5,000 connections need as many descriptors on each side.
ulimit -n "$(ulimit -Hn)"
xm_need_data
xm_build
mmdb=$(realpath data/GeoLite2-City.mmdb)

# Public IPv4 addresses: uniform over the space, less the reserved blocks.
python3 - >"$out/addresses" <<'PY'
import ipaddress, random
random.seed(20)
n = 0
while n < 20000:
    ip = ipaddress.IPv4Address(random.getrandbits(32))
    if ip.is_global and not ip.is_multicast:
        print(ip)
        n += 1
PY
xm_wrk_script "$out/addresses"

ours=$(xm_free_port)
xm_serve server --addr "127.0.0.1:$(xm_free_port)" --http-addr "127.0.0.1:$ours" --data data --mmdb "$mmdb"
xm_wait_port "$ours" "$server" "$out/server.log"

theirs=$(xm_free_port)
mkdir -p "$out"/nginx-{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|@WORK@|$out|g" -e "s|@PORT@|$theirs|g" -e "s|@MMDB@|$mmdb|g" bench/nginx-geoip2.conf >"$out/nginx.conf"
nginx -t -q -c "$out/nginx.conf" -p "$out"
nginx -c "$out/nginx.conf" -p "$out" >"$out/nginx.log" 2>&1 &
nginx_pid=$!
xm_pids+=("$nginx_pid")
xm_wait_port "$theirs" "$nginx_pid" "$out/nginx-error.log"
for port in "$ours" "$theirs"; do
  curl -fsS "http://127.0.0.1:$port/api/ip_query?ip=1.2.3.4" >/dev/null
done

# cpu_ticks PID...: user + system ticks of the processes and their children.
cpu_ticks() {
  local total=0 pid child
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    for child in $(pgrep -P "$pid" || true); do
      total=$((total + $(awk '{print $14 + $15}' "/proc/$child/stat")))
    done
  done
  echo "$total"
}

# run NAME PORT PID CONNECTIONS [DEPTH]: one wrk run, DEPTH requests
# pipelined on each connection (default 1); prints a table row.
run() {
  local name=$1 port=$2 pid=$3 connections=$4 depth=${5:-1} before after report threads=2 label
  report="$out/wrk-$name-$connections-$depth.txt"
  label=$connections
  [ "$depth" = 1 ] || label="$connections, $depth pipelined"
  before=$(cpu_ticks "$pid")
  wrk -t"$threads" -c"$connections" -d"$duration" --timeout 5s --latency -s "$out/query.lua" \
    "http://127.0.0.1:$port" -- "$depth" >"$report"
  after=$(cpu_ticks "$pid")
  python3 - "$report" "$((after - before))" "$(getconf CLK_TCK)" "$name" "$label" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ticks, hz, name, conns = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def find(pattern, default="0"):
    m = re.search(pattern, text)
    return m.group(1) if m else default
rps = float(find(r"Requests/sec:\s+([\d.]+)"))
total = int(find(r"(\d+) requests in"))
pct = {p: find(r"\s%s%%\s+(\S+)" % p, "-") for p in ("50", "99")}
errors = find(r"Socket errors: (.*)", "none")
non2xx = find(r"Non-2xx or 3xx responses: (\d+)", "0")
cpu_us = ticks / hz * 1e6 / total if total else 0
print(f"| {conns} | {name} | {rps:,.0f} | {pct['50']} | {pct['99']} | {errors} | {non2xx} | {cpu_us:.1f} µs |", flush=True)
PY
}

echo "bench-peers: wrk -t2, $duration per run, $rounds round(s), 20,000 random public IPv4 addresses" >&2
echo "| connections | server | requests/s | p50 | p99 | socket errors | non-2xx | server CPU per request |"
echo "|---:|---|---:|---:|---:|---|---:|---:|"
for round in $(seq 1 "$rounds"); do
  for connections in 64 1000 5000; do
    run "xm-ip-service" "$ours" "$server" "$connections"
    run "nginx + geoip2" "$theirs" "$nginx_pid" "$connections"
  done
  run "xm-ip-service" "$ours" "$server" 64 8
  run "nginx + geoip2" "$theirs" "$nginx_pid" 64 8
done
echo "bench-peers: xm-ip-service answered, e.g.: $(curl -fsS "http://127.0.0.1:$ours/api/ip_query?ip=$(head -1 "$out/addresses")")" >&2
echo "bench-peers: nginx answered, e.g.:        $(curl -fsS "http://127.0.0.1:$theirs/api/ip_query?ip=$(head -1 "$out/addresses")")" >&2
