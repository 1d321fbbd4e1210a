#!/usr/bin/env bash
# File-mode start-up on the real data (serve --data data): seconds from
# launch to listening, peak resident memory during start-up (VmHWM), and
# the steady resident memory ten seconds later, idle. A container limit
# set from the steady figure must hold the peak. ROUNDS (3) runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
xm_need_data
xm_build
for round in $(seq 1 "${ROUNDS:-3}"); do
  port=$(xm_free_port)
  started=$(date +%s.%N)
  RUST_LOG=info "$bin" --log-format json serve --addr "127.0.0.1:$port" --http-addr off --data data \
    --drain-delay 0s >"$XM_WORK/start-$round.log" 2>&1 &
  server=$!; xm_pids+=("$server")
  until grep -q '"xm-ip-service listening"' "$XM_WORK/start-$round.log"; do
    kill -0 "$server" || { cat "$XM_WORK/start-$round.log"; exit 1; }
    sleep 0.01
  done
  ready=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)")
  sleep 10
  peak=$(xm_hwm_mb "$server")
  steady=$(xm_rss_mb "$server")
  echo "round $round: listening after $ready s; peak RSS $peak MB; steady RSS $steady MB; peak/steady $(python3 -c "print(f'{$peak / $steady:.2f}')")"
  xm_stop "$server"
done
