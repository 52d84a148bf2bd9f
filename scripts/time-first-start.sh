#!/usr/bin/env bash
# Times a first start as a new user meets it: a fresh clone, an empty cargo cache (registry and
# target directory), then the README's demo command until the picture is written.
#
#   scripts/time-first-start.sh [REV]        # REV defaults to HEAD
#
# Needs network access to crates.io and the wasm32-wasip1 standard library (`rustup target add
# wasm32-wasip1`). Keeps `cargo build --timings` output under the scratch directory it prints.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:-HEAD}"
scratch="$(mktemp -d "${TMPDIR:-/var/tmp}/runegrid-first-start.XXXXXX")"
echo "scratch directory: $scratch"

git clone --quiet --no-hardlinks "$repo" "$scratch/runegrid"
git -C "$scratch/runegrid" checkout --quiet "$rev"
cd "$scratch/runegrid"
export CARGO_HOME="$scratch/cargo-home"
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

start=$(date +%s)
# The README's demo command, with cargo's timing report kept for the breakdown.
cargo run --release --timings -- demo --dir "$scratch/demo" --out "$scratch/runegrid-demo.png" \
  >"$scratch/demo.log" 2>&1 || { tail -20 "$scratch/demo.log"; exit 1; }
end=$(date +%s)
test -s "$scratch/runegrid-demo.png" || { echo "no picture was written"; exit 1; }
grep -E "Finished .release" "$scratch/demo.log" || true

echo "revision: $(git rev-parse --short HEAD)"
echo "cores: $(nproc)"
echo "fresh clone to the demo's picture: $(((end - start) / 60)) min $(((end - start) % 60)) s"
echo "timing report: $(ls target/cargo-timings/cargo-timing.html)"
