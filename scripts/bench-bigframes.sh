#!/usr/bin/env bash
# Large-frame measurement: CLIENTS connections (default 50) at once each
# send one 16 MB compact frame holding about 16 million empty strings (one
# byte each on the wire) and read the refusal. Prints the server's resident
# memory (idle, peak, after) and how many refusals came back. Serves
# data/ if filled (the in-memory index), else the built-in sample.
# FRAMED=0 sends the same message unframed.
# Loopback only; it stops by itself.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
clients=${CLIENTS:-50}
framed=${FRAMED:-1}
port=${PORT:-$(xm_free_port)}
xm_build

RUST_LOG=error xm_serve bigframes --addr "127.0.0.1:$port" --http-addr off
echo "server RSS idle: $(xm_rss_mb "$server") MB"

python3 - "$port" "$clients" "$framed" <<'PY' &
import socket, struct, sys, threading
port, clients, framed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] != "0"
limit = 16_384_000
name = b"queryGeoInfoByIP"
head = bytes([0x82, 0x21, 1, len(name)]) + name + bytes([0x19, 0xF8])
n = limit - len(head) - 5 - 1
varint = bytearray()
v = n
while v >= 0x80:
    varint.append((v & 0x7F) | 0x80)
    v >>= 7
varint.append(v)
body = head + bytes(varint) + bytes(n) + b"\x00"
body = body[: limit]
frame = struct.pack(">I", len(body)) + body if framed else body
refused = []
def one():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(120)
    s.sendall(frame)
    got = s.recv(65536)
    refused.append(b"exceeds the limit" in got)
    s.close()
threads = [threading.Thread(target=one) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print(f"{sum(refused)} of {clients} refused naming the batch limit")
PY
load=$!
peak=$(xm_peak_rss_mb "$server" "$load")
wait "$load"
sleep 3
echo "server RSS peak: $peak MB; 3 s after: $(xm_rss_mb "$server") MB"
