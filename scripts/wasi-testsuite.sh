#!/usr/bin/env bash
# Runs the official WASI test suite (WebAssembly/wasi-testsuite, its prebuilt wasm32-wasip1
# tests) on both engines: each test runs in the native sandbox and in the browser engine
# (web/exec.js under Node), which must agree, and must end as its spec says. Tests whose spec
# preopens a directory are listed as skipped. Prints one line per test and a summary.
#
#   scripts/wasi-testsuite.sh            fetch the suite (git, network) into .runegrid/wasi-testsuite
#   scripts/wasi-testsuite.sh DIR        use a checkout of its prod/testsuite-base branch at DIR
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-.runegrid/wasi-testsuite}"
if [ ! -d "$dir/tests" ]; then
  if [ -n "${1:-}" ]; then
    echo "$dir has no tests/ directory: give a checkout of wasi-testsuite's prod/testsuite-base branch" >&2
    exit 1
  fi
  echo "fetching the WASI test suite into $dir" >&2
  git clone --quiet --depth 1 --branch prod/testsuite-base \
    https://github.com/WebAssembly/wasi-testsuite "$dir"
fi
RUNEGRID_WASI_TESTSUITE="$(cd "$dir/tests" && pwd)" \
  cargo test --release -p runegrid-sandbox --test browser_conformance -- --nocapture 2>&1 |
  grep -E '^(ok|skip|FAIL) +wasi/|^WASI test suite|^case wasi/|^  |test result|panicked'
