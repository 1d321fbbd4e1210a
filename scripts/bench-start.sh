#!/usr/bin/env bash
# Start-up of memory mode on the real data, three ways: from PostgreSQL
# (writing snapshots into a scratch --snapshot-dir), from those snapshots
# with the database up, and from them with the database URL pointing
# nowhere. Prints the seconds from launch to listening, the resident
# memory, and one answer from each.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
xm_build
xm_scratch_db snapstart
url=$scratch_url
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null
snaps=$XM_WORK/snaps; mkdir -p "$snaps"
timed() { # NAME URL
  local port started
  port=$(xm_free_port)
  started=$(date +%s.%N)
  RUST_LOG=info "$bin" --log-format json serve --addr "127.0.0.1:$port" --http-addr off --database-url "$2" --lookup memory \
    --mmdb data/GeoLite2-City.mmdb --snapshot-dir "$snaps" --drain-delay 0s >"$XM_WORK/$1.log" 2>&1 &
  server=$!; xm_pids+=("$server")
  until grep -q '"xm-ip-service listening"' "$XM_WORK/$1.log"; do kill -0 "$server" || { cat "$XM_WORK/$1.log"; exit 1; }; sleep 0.01; done
  local ready; ready=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)")
  echo "$1: listening after $ready s; RSS $(xm_rss_mb "$server") MB; $("$bin" query 183.62.57.1 --addr "127.0.0.1:$port" | tail -1)"
  # The snapshots are written in the background after a load from
  # PostgreSQL, one per table (how many depends on the build): wait until
  # none is being written and their count has held for a second, at most
  # two minutes.
  local count=-1 waited=0
  until [ "$count" = "$(ls "$snaps"/*.snapshot 2>/dev/null | wc -l)" ] && [ "$count" -gt 0 ] && ! ls "$snaps"/*.tmp >/dev/null 2>&1; do
    count=$(ls "$snaps"/*.snapshot 2>/dev/null | wc -l)
    [ $((waited += 1)) -le 120 ] || { echo "bench-start: the snapshots were not all written in 2 minutes" >&2; exit 1; }
    sleep 1
  done
  xm_stop "$server"
}
timed from-postgres "$url"
ls -la "$snaps"
timed from-snapshots "$url"
timed database-away "postgres://postgres@127.0.0.1:9/nowhere"
