#!/usr/bin/env bash
# Memory mode and file mode against postgres mode on the real data: loads
# the files from scripts/fetch-data.sh into a scratch database, starts a
# server of each database mode on it and one serving the same files
# (--data data), sends each pair the same sampled addresses (COUNT per
# method, default 1,000,000; queryGeoInfoByIP, queryGeoInfo in English and
# queryI18nGeoInfoByIP, whose network comes from the ASN tables alone) and
# prints the count of answers that differ, every field compared (the
# network's too). Exits 1 if any do.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
count=${COUNT:-1000000}

xm_need_data
xm_build
xm_scratch_db compare
url=$scratch_url
echo "compare-modes: loading the real data into $url" >&2
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null

declare -A ports
for mode in postgres memory; do
  ports[$mode]=$(xm_free_port)
  xm_serve "$mode" --addr "127.0.0.1:${ports[$mode]}" --http-addr off --database-url "$url" --lookup "$mode" \
    --mmdb data/GeoLite2-City.mmdb
done
ports[files]=$(xm_free_port)
xm_serve files --addr "127.0.0.1:${ports[files]}" --http-addr off --data data
for other in memory files; do
  echo "compare-modes: $count addresses per method, postgres mode (left) against $other mode" >&2
  "$bin" compare --addr "127.0.0.1:${ports[postgres]}" --against "127.0.0.1:${ports[$other]}" --count "$count" \
    --method by-ip --method english --method i18n --sample-database-url "$url"
done
