#!/usr/bin/env bash
# A/B of two builds, side by side on this box: REV (an older commit, built
# in a git worktree with its own target directory) against this checkout,
# memory mode on the real data, ROUNDS rounds (default 4) alternating which
# runs first. Each round starts each server and runs `bench` for DURATION
# (8s) with single-address calls on 64 connections and batches of 1,000 on
# 4, then wrk POSTing HTTP batches of 1,000 on 4 connections, printing one
# line per run; compare medians, not single runs.
# SHAPES (default "single batch http-batch") picks which of the three run.
# OLD_TARGET keeps REV's build between runs. CORRECTIONS=N imports about N
# corrections (made from the cn table's ranges, scripts/lib.sh) before the
# runs; a build from before corrections ignores them.
#   scripts/bench-ab.sh 159c601
set -euo pipefail
rev=${1:?usage: scripts/bench-ab.sh REV}
. "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-4}
duration=${DURATION:-8s}
shapes=" ${SHAPES:-single batch http-batch} "
old_tree=$XM_WORK/old
old_target=${OLD_TARGET:-$XM_WORK/old-target}
git worktree add -q --detach "$old_tree" "$rev"
trap 'git worktree remove --force "$old_tree" 2>/dev/null || true; xm_cleanup' EXIT
(cd "$old_tree" && CARGO_TARGET_DIR=$old_target cargo build --release --quiet)
old=$old_target/release/xm-ip-service
xm_need_data
xm_build
new=$bin
xm_scratch_db ab
url=$scratch_url
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null
if [ -n "${CORRECTIONS:-}" ]; then
  every=$(($("$new" export --database-url "$url" --table cn | wc -l) / CORRECTIONS))
  xm_corrections "$url" "$every" 1000000 >"$XM_WORK/overrides.csv"
  "$new" import --database-url "$url" --table overrides "$XM_WORK/overrides.csv" | tail -n 1
fi
xm_need_wrk
xm_wrk_batch_script 1000 "$XM_WORK/batch.lua"
for round in $(seq "$rounds"); do
  order="old new"
  [ $((round % 2)) = 0 ] && order="new old"
  for which in $order; do
    bin=${!which}
    port=$(xm_free_port)
    http=$(xm_free_port)
    xm_serve "$which-$round" --addr "127.0.0.1:$port" --http-addr "127.0.0.1:$http" --database-url "$url" \
      --lookup memory --mmdb data/GeoLite2-City.mmdb
    for shape in "single --connections 64 --batch 1" "batch --connections 4 --batch 1000"; do
      set -- $shape
      name=$1
      shift
      [[ $shapes == *" $name "* ]] || continue
      printf '%s %s %s: ' "$round" "$which" "$name"
      "$new" bench --addr "127.0.0.1:$port" --duration "$duration" --server-pid "$server" \
        --sample-database-url "$url" "$@"
    done
    if [[ $shapes == *" http-batch "* ]]; then
      printf '%s %s http-batch: ' "$round" "$which"
      xm_wrk_cpu "$server" 1000 -t2 -c4 -d"$duration" -s "$XM_WORK/batch.lua" "http://127.0.0.1:$http/api/ip_query"
    fi
    xm_stop "$server"
  done
done
