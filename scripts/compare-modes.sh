#!/usr/bin/env bash
# Memory mode and file mode against postgres mode on the real data: loads
# the files from scripts/fetch-data.sh into a scratch database, starts a
# server of each database mode on it and one serving the same files
# (--data data), sends each pair the same sampled addresses (COUNT per
# method, default 1,000,000; queryGeoInfoByIP, queryGeoInfo in English and
# queryI18nGeoInfoByIP, whose network comes from the ASN tables alone) and
# prints the count of answers that differ, every field compared (the
# network's and the corrections' too). Exits 1 if any do. Corrections are
# loaded first: every 150th cn range and every 50th v6 range corrected in
# part (zh-CN), every 300th cn range in English, some of them expired, as
# the database's ip_service_overrides and as the file mode's overrides.csv.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
count=${COUNT:-1000000}

xm_need_data
xm_build
xm_scratch_db compare
url=$scratch_url
echo "compare-modes: loading the real data into $url" >&2
DATABASE_URL=$url RUST_LOG=warn scripts/load-real-data.sh >/dev/null

# The corrections, made from the live tables' own ranges so that sampled
# addresses meet them; the file mode serves the same files beside them.
files=$XM_WORK/files
mkdir -p "$files"
for file in data/*; do ln -s "$PWD/$file" "$files/"; done
xm_corrections "$url" 150 50 >"$files/overrides.csv"
"$bin" import --database-url "$url" --table overrides "$files/overrides.csv" | tail -n 1 >&2

declare -A ports
for mode in postgres memory; do
  ports[$mode]=$(xm_free_port)
  xm_serve "$mode" --addr "127.0.0.1:${ports[$mode]}" --http-addr off --database-url "$url" --lookup "$mode" \
    --mmdb data/GeoLite2-City.mmdb
done
ports[files]=$(xm_free_port)
xm_serve files --addr "127.0.0.1:${ports[files]}" --http-addr off --data "$files"
for other in memory files; do
  echo "compare-modes: $count addresses per method, postgres mode (left) against $other mode" >&2
  "$bin" compare --addr "127.0.0.1:${ports[postgres]}" --against "127.0.0.1:${ports[$other]}" --count "$count" \
    --method by-ip --method english --method i18n --sample-database-url "$url"
done
