#!/usr/bin/env bash
# Slow senders: a release server in file mode on the real data (data/, from
# scripts/fetch-data.sh) under three attacks, one after the other, each for
# HOLD seconds (default 20) while normal clients call it:
#   1. SENDERS16 (150) Thrift connections each send 90% of one framed
#      16,040,042-byte queryGeoInfoByIP (10,000 strings of 1,600 bytes),
#      then hold; a connection the server closes is opened again at once;
#   2. SENDERS1 (1,000) connections do the same with a 1 MB frame;
#   3. BODIES (1,000) HTTP connections each send 95% of a 1 MiB JSON body
#      and hold.
# During 1 and 2, `bench` makes single-address Thrift calls on 8
# connections; during 3, wrk makes single-address GETs on 8.
# ONLY=frame16|frame1|body runs one attack alone.
# Prints the server's resident memory (idle, the peak of each attack, and
# 10 s after the last one closes), the normal clients' figures, the warning
# lines logged, and the closed-connection counts from /metrics.
# Loopback only; every part stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
hold=${HOLD:-20}
senders16=${SENDERS16:-150}
senders1=${SENDERS1:-1000}
bodies=${BODIES:-1000}
port=${PORT:-$(xm_free_port)}
hport=${HTTP_PORT:-$(xm_free_port)}
work=$XM_WORK

xm_need_wrk
xm_need_data
xm_build
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

xm_serve server --addr "127.0.0.1:$port" --http-addr "127.0.0.1:$hport" --data data
rss() { xm_rss_mb "$server"; }
sleep 3
idle=$(rss)
echo "server (file mode, real data) RSS idle: $idle MB"

# Holds COUNT connections to PORT, each sending the first PART bytes of
# one message and then nothing, for HOLD seconds; reopens those the server
# closes. Prints how many connections it opened.
attack() { # KIND COUNT PORT
  python3 - "$@" "$hold" <<'PY'
import sys, time
sys.path.insert(0, "scripts")
from slow_peers import Holders, partial_body, partial_frame
kind, count, port, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
part = {"frame16": lambda: partial_frame(10_000), "frame1": lambda: partial_frame(600), "body": partial_body}[kind]()
holders = Holders(("127.0.0.1", port), part, count)
end = time.time() + hold
while time.time() < end:
    holders.step()
    time.sleep(0.01)
holders.close()
print(holders.opened)
PY
}

# Runs attack KIND while NORMAL (a command) runs, sampling the server's RSS.
under_attack() { # LABEL KIND COUNT PORT NORMAL...
  local label=$1 kind=$2 count=$3 aport=$4
  shift 4
  attack "$kind" "$count" "$aport" >"$work/opened" &
  local attacker=$!
  sleep 3
  "$@" >"$work/normal" 2>&1 &
  local normal=$!
  local peak
  peak=$(xm_peak_rss_mb "$server" "$attacker")
  wait "$normal" || true
  echo "== $label: $count connections, $(cat "$work/opened") opened in ${hold} s; server RSS peak $peak MB"
  sed 's/^/  /' "$work/normal"
}

calls=$((hold - 5))
thrift_calls=("$bin" bench --addr "127.0.0.1:$port" --connections 8 --batch 1 --duration "${calls}s" --server-pid "$server")
only=${ONLY:-}
if [ -z "$only" ] || [ "$only" = frame16 ]; then
  under_attack "Thrift, 90% of a 16 MB frame each" frame16 "$senders16" "$port" "${thrift_calls[@]}"
  sleep 5
fi
if [ -z "$only" ] || [ "$only" = frame1 ]; then
  under_attack "Thrift, 90% of a 1 MB frame each" frame1 "$senders1" "$port" "${thrift_calls[@]}"
  sleep 5
fi
if [ -z "$only" ] || [ "$only" = body ]; then
  under_attack "HTTP, 95% of a 1 MiB body each" body "$bodies" "$hport" \
    wrk -t1 -c8 -d"${calls}s" --latency "http://127.0.0.1:$hport/api/ip_query?ip=183.62.57.1"
fi
sleep 10
echo "server RSS 10 s after the last attack closed: $(rss) MB (idle $idle MB)"
echo "warning lines logged: $(grep -c WARN "$work/server.log" || true)"
echo "connections closed, by reason (/metrics):"
curl -fsS "http://127.0.0.1:$hport/metrics" | grep '^xm_ip_connections_closed_total' | sed 's/^/  /' || true
