#!/usr/bin/env bash
# The one test command: checks the generated Thrift code is current, then
# fmt, clippy, doc links, and every test against a real PostgreSQL.
#
# PostgreSQL: $DATABASE_URL if set (any database on a server where the
# user may CREATE DATABASE; each test makes and drops its own), else the
# server on 127.0.0.1:5432, else a throwaway cluster made with initdb.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is missing: install Rust (rustup)"
command -v thrift >/dev/null || fail "the Thrift compiler is missing: apt-get install thrift-compiler"
command -v python3 >/dev/null || fail "python3 is missing: apt-get install python3"
python3 -c 'import thrift' 2>/dev/null || fail "the Python thrift package is missing: pip install thrift"

pg_bin() {
  command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

# A cluster of our own in a temporary directory, stopped and removed on exit.
PG_AS=()
start_throwaway_cluster() {
  local initdb port
  initdb=$(pg_bin initdb); PG_CTL=$(pg_bin pg_ctl)
  [ -n "$initdb" ] && [ -n "$PG_CTL" ] || return 1
  PG_DIR=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    id postgres >/dev/null 2>&1 || return 1
    chown postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  "${PG_AS[@]}" "$initdb" -D "$PG_DIR/data" -U postgres -A trust >/dev/null
  trap stop_throwaway_cluster EXIT
  "${PG_AS[@]}" "$PG_CTL" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "test.sh: started a throwaway PostgreSQL on port $port"
}

stop_throwaway_cluster() {
  "${PG_AS[@]}" "$PG_CTL" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}

if [ -z "${DATABASE_URL:-}" ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  elif ! start_throwaway_cluster; then
    fail "no PostgreSQL: set DATABASE_URL, start one on 127.0.0.1:5432, or apt-get install postgresql"
  fi
fi

scripts/gen-thrift.sh --check
# The deployment files: the Kubernetes manifests against the API schema,
# the HAProxy configuration by HAProxy itself (.ci/run installs both).
python3 -c 'import kubernetes_validate' 2>/dev/null || fail "kubernetes-validate is missing: pip install kubernetes-validate"
python3 -m kubernetes_validate --quiet deploy/k8s.yaml
command -v haproxy >/dev/null || fail "haproxy is missing: apt-get install haproxy"
haproxy -c -q -f deploy/haproxy.cfg
haproxy -c -q -f deploy/haproxy-compose.cfg
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The doc comments' links resolve (and point at what a reader can open).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast
else
  cargo test --no-fail-fast
fi
