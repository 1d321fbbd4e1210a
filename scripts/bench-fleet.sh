#!/usr/bin/env bash
# A fleet on one machine, as an operator runs it, and what it does under
# imports, a standby outage and a rolling restart:
#   - a PostgreSQL primary and a streaming standby, throwaway clusters
#     (initdb, pg_basebackup -R -c fast, run as the postgres user);
#   - INSTANCES (3) memory-mode instances reading the standby, LISTENing on
#     the primary (--notify-url), each with its own --snapshot-dir;
#   - one postgres-mode instance on the multi-host URL standby,primary;
#   - HAProxy (deploy/haproxy.cfg, its ports rewritten) in front of the
#     memory-mode instances.
# It prints: calls/s through HAProxy against one instance direct; how long
# after an import's commit on the primary each instance answers the new
# data; failed lookups in each mode while the standby is down for OUTAGE
# (10) seconds; an instance started while its database is away (time to
# listening, what it answers); failed lookups, reconnects and resent
# requests through a rolling restart of every memory-mode instance.
# Needs the real data (scripts/fetch-data.sh), haproxy, and root or the
# postgres user for the clusters. Loopback only; every part stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
instances=${INSTANCES:-3}
outage=${OUTAGE:-10}
pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres=()
[ "$(id -u)" = 0 ] && as_postgres=(runuser -u postgres --)
command -v haproxy >/dev/null || { echo "bench-fleet: haproxy is missing: apt-get install haproxy" >&2; exit 1; }
xm_need_data
xm_build

# cluster_start DIR PORT: starts the cluster in DIR on PORT.
cluster_start() {
  "${as_postgres[@]}" "$pg/pg_ctl" -D "$1/data" -l "$1/log" -w \
    -o "-p $2 -k $1 -c listen_addresses=127.0.0.1" start >/dev/null
}
cluster_stop() { # DIR
  "${as_postgres[@]}" "$pg/pg_ctl" -D "$1/data" -m immediate stop >/dev/null 2>&1 || true
}
clusters=()
fleet_cleanup() {
  local dir
  for dir in "${clusters[@]}"; do cluster_stop "$dir"; rm -rf "$dir"; done
  xm_cleanup
}
trap fleet_cleanup EXIT

primary=$(mktemp -d); standby=$(mktemp -d)
clusters+=("$primary" "$standby")
chown postgres "$primary" "$standby" 2>/dev/null || true
p_port=$(xm_free_port); s_port=$(xm_free_port)
"${as_postgres[@]}" "$pg/initdb" -D "$primary/data" -U postgres -A trust >/dev/null
cluster_start "$primary" "$p_port"
primary_url="postgres://postgres@127.0.0.1:$p_port/ip"
psql "postgres://postgres@127.0.0.1:$p_port/postgres" -qc "CREATE DATABASE ip"
echo "bench-fleet: loading the real data into the primary" >&2
DATABASE_URL=$primary_url RUST_LOG=warn scripts/load-real-data.sh >/dev/null
"${as_postgres[@]}" "$pg/pg_basebackup" -h 127.0.0.1 -p "$p_port" -U postgres -D "$standby/data" -R -c fast -X stream
cluster_start "$standby" "$s_port"
standby_url="postgres://postgres@127.0.0.1:$s_port/ip"

# The fleet.
declare -a thrift_ports http_ports pids
start_instance() { # I
  local i=$1
  mkdir -p "$XM_WORK/snapshots-$i"
  RUST_LOG=info "$bin" --log-format json serve --addr "127.0.0.1:${thrift_ports[i]}" \
    --http-addr "127.0.0.1:${http_ports[i]}" --database-url "$standby_url" --notify-url "$primary_url" \
    --lookup memory --mmdb data/GeoLite2-City.mmdb --snapshot-dir "$XM_WORK/snapshots-$i" \
    --drain-delay 2s >>"$XM_WORK/instance-$i.log" 2>&1 &
  pids[i]=$!
  xm_pids+=("${pids[i]}")
  until curl -fsS "http://127.0.0.1:${http_ports[i]}/readyz" >/dev/null 2>&1; do
    kill -0 "${pids[i]}" 2>/dev/null || { tail "$XM_WORK/instance-$i.log" >&2; exit 1; }
    sleep 0.1
  done
}
echo "bench-fleet: starting $instances memory-mode instances on the standby" >&2
for i in $(seq 1 "$instances"); do
  thrift_ports[i]=$(xm_free_port); http_ports[i]=$(xm_free_port)
  start_instance "$i"
done
echo "bench-fleet: starting the postgres-mode instance and HAProxy" >&2
pg_port=$(xm_free_port)
RUST_LOG=warn xm_serve postgres-mode --addr "127.0.0.1:$pg_port" --http-addr off \
  --database-url "postgres://postgres@127.0.0.1:$s_port,127.0.0.1:$p_port/ip" --lookup postgres \
  --mmdb data/GeoLite2-City.mmdb
ha_thrift=$(xm_free_port); ha_http=$(xm_free_port)
{
  # The deployed file's settings, with a connection cap this box's
  # open-file limit can hold.
  sed -n '1,/^frontend thrift/p' deploy/haproxy.cfg | sed '$d' | sed 's/^    maxconn .*/    maxconn 4000/'
  printf 'frontend thrift\n    bind 127.0.0.1:%s\n    default_backend thrift\n\n' "$ha_thrift"
  printf 'frontend http\n    bind 127.0.0.1:%s\n    default_backend http\n\n' "$ha_http"
  printf 'backend thrift\n    balance leastconn\n    option httpchk GET /readyz\n    http-check expect status 200\n'
  printf '    default-server inter 500ms fall 1 rise 2\n'
  for i in $(seq 1 "$instances"); do
    printf '    server i%s 127.0.0.1:%s check port %s\n' "$i" "${thrift_ports[i]}" "${http_ports[i]}"
  done
  printf '\nbackend http\n    balance leastconn\n    option httpchk GET /readyz\n    http-check expect status 200\n'
  printf '    default-server inter 500ms fall 1 rise 2\n'
  for i in $(seq 1 "$instances"); do
    printf '    server i%s 127.0.0.1:%s check\n' "$i" "${http_ports[i]}"
  done
} >"$XM_WORK/haproxy.cfg"
haproxy -f "$XM_WORK/haproxy.cfg" >"$XM_WORK/haproxy.log" 2>&1 &
haproxy_pid=$!
xm_pids+=("$haproxy_pid")
xm_wait_port "$ha_thrift" "$haproxy_pid" "$XM_WORK/haproxy.log"
sleep 2

bench() { # ADDR DURATION ARGS... -> JSON line
  local addr=$1 duration=$2
  shift 2
  "$bin" bench --addr "$addr" --duration "$duration" --sample-database-url "$primary_url" --json "$@"
}
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r[sys.argv[2]])" "$@"; }
rate() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['requests_per_second']:,.0f} calls/s, p99 {r['latency_ms']['p99']:.2f} ms, {r['failed']} failed\")" "$1"; }

echo "== calls/s, single addresses, 64 connections, 8 s"
bench "127.0.0.1:$ha_thrift" 8s --connections 64 --batch 1 >"$XM_WORK/ha.json"
bench "127.0.0.1:${thrift_ports[1]}" 8s --connections 64 --batch 1 >"$XM_WORK/direct.json"
echo "through HAProxy ($instances instances): $(rate "$XM_WORK/ha.json")"
echo "one instance direct:          $(rate "$XM_WORK/direct.json")"

echo "== an import on the primary, answered by each instance"
marker="fleet-$$"
DATABASE_URL=$primary_url "$bin" export --table cn \
  | sed "s/^183\.62\.56\.99,183\.62\.63\.255,\(.*\),电信,/183.62.56.99,183.62.63.255,\1,$marker,/" >"$XM_WORK/cn.csv"
DATABASE_URL=$primary_url RUST_LOG=warn "$bin" import --table cn --format csv "$XM_WORK/cn.csv" >/dev/null
committed=$(date +%s.%N)
last_import() { psql "$1" -Atc "SELECT max(id) FROM ip_service_imports WHERE outcome = 'succeeded'"; }
imported=$(last_import "$primary_url")
until [ "$(last_import "$standby_url")" = "$imported" ]; do sleep 0.01; done
replayed=$(date +%s.%N)
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
echo "the standby replayed the import $(since "$committed" "$replayed") s after its commit"
for i in $(seq 1 "$instances"); do
  until "$bin" query 183.62.57.1 --addr "127.0.0.1:${thrift_ports[i]}" --json | grep -q "$marker"; do sleep 0.02; done
  now=$(date +%s.%N)
  echo "instance $i: new data answered $(since "$replayed" "$now") s after the standby replayed it ($(since "$committed" "$now") s after the commit; $(grep -o '"read":"[^"]*"' "$XM_WORK/instance-$i.log" | tail -1))"
done

echo "== the standby down for $outage s under load"
total=$((outage + 10))
bench "127.0.0.1:$ha_thrift" "${total}s" --connections 8 --batch 100 >"$XM_WORK/outage-memory.json" &
memory_load=$!
bench "127.0.0.1:$pg_port" "${total}s" --connections 8 --batch 100 >"$XM_WORK/outage-postgres.json" &
postgres_load=$!
sleep 5
cluster_stop "$standby"
# An instance started while its database is away: from its snapshots.
cp -r "$XM_WORK/snapshots-1" "$XM_WORK/snapshots-away"
away_port=$(xm_free_port)
started=$(date +%s.%N)
RUST_LOG=info "$bin" --log-format json serve --addr "127.0.0.1:$away_port" --http-addr off \
  --database-url "$standby_url" --lookup memory --mmdb data/GeoLite2-City.mmdb \
  --snapshot-dir "$XM_WORK/snapshots-away" >"$XM_WORK/away.log" 2>&1 &
away=$!
xm_pids+=("$away")
until grep -qs '"xm-ip-service listening"' "$XM_WORK/away.log"; do
  kill -0 "$away" 2>/dev/null || { echo "the instance without its database did not start:" >&2; tail -3 "$XM_WORK/away.log" >&2; break; }
  sleep 0.01
done
if kill -0 "$away" 2>/dev/null; then
  echo "started with the database away: listening after $(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)") s; answers: $("$bin" query 183.62.57.1 --addr "127.0.0.1:$away_port" | tail -1)"
fi
sleep "$((outage))"
cluster_start "$standby" "$s_port"
wait "$memory_load" "$postgres_load"
for mode in memory postgres; do
  r="$XM_WORK/outage-$mode.json"
  echo "$mode mode: $(field "$r" lookups) lookups, $(field "$r" failed) failed"
done

echo "== a rolling restart of every memory-mode instance through HAProxy, under load"
bench "127.0.0.1:$ha_thrift" 40s --connections 8 --batch 100 >"$XM_WORK/rolling.json" &
load=$!
sleep 3
for i in $(seq 1 "$instances"); do
  kill -TERM "${pids[i]}"
  wait "${pids[i]}" 2>/dev/null || true
  start_instance "$i"
  sleep 3
done
wait "$load"
r="$XM_WORK/rolling.json"
echo "rolling restart: $(field "$r" lookups) lookups, $(field "$r" failed) failed, $(field "$r" reconnects) reconnects, $(field "$r" resent) requests resent"
