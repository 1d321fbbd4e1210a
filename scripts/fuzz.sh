#!/usr/bin/env bash
# Fuzzes the request decoder (fuzz/fuzz_targets/decode.rs) for a given
# time, seeded with a valid call of every method on every wire.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
# Needs the nightly toolchain (rustup toolchain install nightly); installs
# cargo-fuzz if it is missing. Crashes land in fuzz/artifacts/decode/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

rustup toolchain list | grep -q '^nightly' || { echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

cargo run --quiet --example fuzz_seeds -- fuzz/corpus/decode
# One job; RSS and input size bounded so that an allocation bug shows as a crash.
exec cargo +nightly fuzz run decode fuzz/corpus/decode -- \
  -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
