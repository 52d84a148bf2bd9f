#!/usr/bin/env bash
# Rebuilds the prebuilt guest modules (crates/runner/prebuilt, crates/infer/prebuilt) from their
# sources and rewrites their manifests. Run it after changing a guest workspace (the build then
# warns that the prebuilt module is stale and builds from source) or its toolchain, and commit
# the result: a fresh clone then embeds the modules without the nested builds.
#
#   scripts/refresh-guests.sh
#
# The modules are built by the same nested build as the build scripts', into the target
# directory's scratch space; the `prebuilt` tests then check them byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNEGRID_REFRESH_GUESTS=1 cargo test --release -p runegrid-runner -p runegrid-infer --test prebuilt
cargo test --release -p runegrid-runner -p runegrid-infer --test prebuilt
git status --short crates/runner/prebuilt crates/infer/prebuilt
