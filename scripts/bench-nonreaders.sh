#!/usr/bin/env bash
# Hostile-load measurement: CLIENTS connections (default 1000) each
# pipeline 1,000-address requests for DURATION seconds (default 15) and
# never read a reply, while `xm-ip-service bench` drives normal calls.
# Prints the server's resident memory (idle, peak, after) and the normal
# clients' figures. Loopback only; every part stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
clients=${CLIENTS:-1000}
duration=${DURATION:-15}
port=${PORT:-$(xm_free_port)}
xm_build
ulimit -n 65536 2>/dev/null || true

RUST_LOG=error xm_serve nonreaders --addr "127.0.0.1:$port" --http-addr off --write-timeout 60s
echo "server RSS idle: $(xm_rss_mb "$server") MB"

python3 - "$port" "$clients" "$duration" <<'PY' &
import struct, sys
sys.path.insert(0, "scripts")
from slow_peers import never_read
port, clients, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
name = b"queryGeoInfoByIP"
ips = b"".join(struct.pack(">I", 11) + b"183.62.57.1" for _ in range(1000))
args = bytes([15]) + struct.pack(">h", 1) + bytes([11]) + struct.pack(">i", 1000) + ips + b"\x00"
body = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">i", 1) + args
never_read(port, struct.pack(">I", len(body)) + body, clients, duration)
PY
hostile=$!
sleep 2
"$bin" bench --addr "127.0.0.1:$port" --connections 8 --batch 1 --duration "$((duration - 4))s" --server-pid "$server" &
bench=$!
peak=$(xm_peak_rss_mb "$server" "$hostile")
wait "$bench"
sleep 3
echo "server RSS peak during the load: $peak MB; 3 s after the clients closed: $(xm_rss_mb "$server") MB"
