#!/usr/bin/env bash
# Lookup benchmarks: every row of BENCHMARKS.md's lookup table, measured
# and printed as that table. Loads the real data (scripts/fetch-data.sh)
# into a scratch database, starts release servers on loopback one at a
# time (memory mode, postgres mode, file mode) and drives each with
# `xm-ip-service bench`, which shares the machine's cores with the server
# and PostgreSQL and reports the server's own CPU per lookup beside it.
#
# DURATION (default 10s) sets each load's length; DATABASE_URL the admin
# database to create the scratch one beside. Takes about five minutes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${DURATION:-10s}
addr=127.0.0.1:${PORT:-$(xm_free_port)}
out=$XM_WORK
server=

xm_need_data
xm_build
xm_scratch_db bench_lookup
url=$scratch_url
stop_server() {
  [ -z "$server" ] || xm_stop "$server"
  server=
}
echo "bench-lookup: loading the real data into $url" >&2
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null

# serve NAME ARGS...: starts a server, waits until it listens, and records
# the seconds from launch to listening in $out/NAME.startup.
serve() {
  local name=$1
  shift
  local started
  started=$(date +%s.%N)
  RUST_LOG=info "$bin" --log-format json serve --addr "$addr" "$@" >"$out/$name.log" 2>&1 &
  server=$!
  xm_pids+=("$server")
  until grep -q '"xm-ip-service listening"' "$out/$name.log"; do
    kill -0 "$server" 2>/dev/null || { cat "$out/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$started" "$(date +%s.%N)" >"$out/$name.startup"
}

# load NAME ARGS...: one `bench` run against the current server.
load() {
  local name=$1
  shift
  echo "bench-lookup: $name" >&2
  "$bin" bench --addr "$addr" --duration "$duration" --server-pid "$server" --sample-database-url "$url" --json "$@" \
    >"$out/$name.json"
}

rss() { echo $(($(xm_status_kb "$server" VmRSS) * 1024)) >"$out/$1.rss"; }

serve memory --database-url "$url" --lookup memory --mmdb data/GeoLite2-City.mmdb
load memory-single --connections 64 --batch 1
load memory-batch --connections 4 --batch 1000
load memory-batch-china --connections 4 --batch 1000 --china-percent 100 --ipv6-percent 0 --invalid-percent 0
load maxmind-single --connections 64 --batch 1 --method i18n
load maxmind-batch --connections 4 --batch 1000 --method i18n
rss memory

# An import swapped in under load: the cn table again with one range's
# carrier changed, loaded while 8 connections keep asking.
echo "bench-lookup: import under load" >&2
marker="swap-$$"
DATABASE_URL=$url "$bin" export --table cn | sed "s/^183\.62\.56\.99,183\.62\.63\.255,\(.*\),电信,/183.62.56.99,183.62.63.255,\1,$marker,/" >"$out/cn.csv"
grep -q "$marker" "$out/cn.csv"
"$bin" bench --addr "$addr" --duration 30s --server-pid "$server" --sample-database-url "$url" --json \
  --connections 8 --batch 100 >"$out/swap.json" &
loader=$!
sleep 8
DATABASE_URL=$url RUST_LOG=warn "$bin" import --table cn --format csv "$out/cn.csv" >/dev/null
committed=$(date +%s.%N)
until "$bin" query 183.62.57.1 --addr "$addr" --json | grep -q "$marker"; do sleep 0.02; done
python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$committed" "$(date +%s.%N)" >"$out/swap.visible"
wait "$loader"
stop_server

serve postgres --database-url "$url" --lookup postgres --mmdb data/GeoLite2-City.mmdb
load postgres-single --connections 64 --batch 1
load postgres-batch --connections 4 --batch 1000
stop_server

serve files --data data
rss files
stop_server

echo "bench-lookup: criterion, index lookup" >&2
cargo bench --quiet --bench lookup -- "index/find the range," 2>/dev/null | grep -A1 "^index/find the range," | tail -n 1 \
  >"$out/index.txt" || true

python3 - "$out" <<'PY'
import json, os, platform, re, subprocess, sys
out = sys.argv[1]
def j(name): return json.load(open(f"{out}/{name}.json"))
def num(name, ext): return float(open(f"{out}/{name}.{ext}").read())
def calls(r): return f"{r['requests_per_second']:,.0f} calls/s, p99 {r['latency_ms']['p99']:.2f} ms, server {r['server_cpu_us_per_lookup']:.2f} µs/call"
def ips(r): return f"{r['lookups_per_second']:,.0f} IPs/s, server {r['server_cpu_us_per_lookup'] * 1000:,.0f} ns/IP"
m = re.search(r"\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", open(f"{out}/index.txt").read())
index = f"{m.group(1)} {m.group(2)} (criterion median)" if m else "not measured"
swap = j("swap")
rows = [
    ("index lookup, full cn table", index, "–", "–", "–"),
    ("single IP, 64 connections", calls(j("memory-single")), calls(j("postgres-single")), calls(j("maxmind-single")), "3,113 requests/s on 4 cores"),
    ("batches of 1,000 (60% China, 30% elsewhere, 10% IPv6, 1% invalid)", ips(j("memory-batch")), ips(j("postgres-batch")), ips(j("maxmind-batch")), "–"),
    ("batches of 1,000, China only", ips(j("memory-batch-china")), "–", "–", "–"),
    ("start-up, full data", f"{num('memory', 'startup'):.1f} s from PostgreSQL; {num('files', 'startup'):.1f} s from files (--data)", f"{num('postgres', 'startup'):.1f} s", "–", "–"),
    ("resident memory, full data", f"{num('memory', 'rss') / 2**20:.0f} MB after the loads above; {num('files', 'rss') / 2**20:.0f} MB in file mode", "–", "–", "3.2 GB"),
    ("import swapped in under load (8 connections, batches of 100)",
     f"{swap['failed']} failed lookups; p99 {swap['latency_ms']['p99']:.2f} ms, p99.9 {swap['latency_ms']['p99.9']:.2f} ms, max {swap['latency_ms']['max']:.2f} ms over 30 s; new data answered {num('swap', 'visible'):.2f} s after the commit",
     "–", "–", "–"),
]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
print(f"Machine: {os.cpu_count()} x {cpu}, {mem:.0f} GiB, {platform.platform()}")
print()
print("| scenario | memory mode | postgres mode | MaxMind only | Flask (old service) |")
print("|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
PY
