#!/usr/bin/env bash
# Memory per idle connection, and refusal at the cap: CONNECTIONS (default
# 2000, also the server's --max-connections) Thrift connections each make
# one call and then stay open without sending. Prints the server's
# resident memory before and with them, the difference per connection,
# and how long 200 newcomers over the cap waited to be closed. Loopback
# only; the clients close after HOLD seconds (10).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
connections=${CONNECTIONS:-2000}
hold=${HOLD:-10}
port=${PORT:-$(xm_free_port)}
xm_build
ulimit -n 65536 2>/dev/null || true

RUST_LOG=error xm_serve idle --addr "127.0.0.1:$port" --http-addr off --max-connections "$connections"
"$bin" query --addr "127.0.0.1:$port" 183.62.57.1 >/dev/null   # warm up
sleep 1
before=$(xm_status_kb "$server" VmRSS)
after=$(python3 - "$port" "$connections" "$hold" "$server" <<'PY'
import socket, struct, sys, time
port, n, hold, server = map(int, sys.argv[1:])
name = b"queryGeoInfoByIP"
args = bytes([15]) + struct.pack(">h", 1) + bytes([11]) + struct.pack(">i", 1) + struct.pack(">I", 11) + b"183.62.57.1" + b"\x00"
body = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">i", 1) + args
frame = struct.pack(">I", len(body)) + body
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(frame)
    socks.append(s)
for s in socks:
    got = b""
    while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
        got += s.recv(65536)
time.sleep(hold)
waits = []
for _ in range(200):
    started = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    try:
        closed = s.recv(1) == b""
    except ConnectionResetError:
        closed = True
    waits.append((time.perf_counter() - started) * 1000)
    assert closed
    s.close()
waits.sort()
print(f"200 newcomers over the cap closed after p50 {waits[100]:.2f} ms, p99 {waits[198]:.2f} ms, max {waits[-1]:.2f} ms", file=sys.stderr)
# Measured while every connection is still open.
print([int(l.split()[1]) for l in open(f"/proc/{server}/status") if l.startswith("VmRSS")][0])
PY
)
echo "server RSS before: $((before / 1024)) MB; with $connections idle connections: $((after / 1024)) MB; $(( (after - before) / connections )) KB per connection"
