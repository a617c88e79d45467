#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has no Rust toolchain into one
# folder (default gpu-kit/, git-ignored; carry it to the machine): the `fooocus` binary and the
# `parity` and `engine_runs` test binaries (stripped, xz-compressed), the tiny fixtures and the
# SDXL layouts, and the diffusers wheels the PyTorch side needs.
#
#   scripts/make-gpu-kit.sh                 CUDA build (runs scripts/build-cuda.sh's setup)
#   FEATURES= PROFILE=dev scripts/make-gpu-kit.sh   a CPU kit from the dev build, to try the
#                                           check here: DEVICE=cpu QUICK=1 scripts/gpu-check.sh
#
# Environment: KIT (folder), FEATURES (default cuda), PROFILE (release|dev, default release),
# FIXTURES (default the repository's fixtures/), NO_WHEELS=1 to skip the wheels.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
KIT=${KIT:-$ROOT/gpu-kit}
FEATURES=${FEATURES-cuda}
PROFILE=${PROFILE:-release}
FIXTURES=${FIXTURES:-$ROOT/fixtures}

if [[ "$FEATURES" == *cuda* ]]; then
    # shellcheck source=scripts/build-cuda.sh
    source "$ROOT/scripts/build-cuda.sh" --env-only
fi
cargo_args=(--profile "$PROFILE")
[[ -n "$FEATURES" ]] && cargo_args+=(--features "$FEATURES")

echo "== building fooocus and the parity test binaries ($PROFILE${FEATURES:+, features $FEATURES})"
cargo build "${cargo_args[@]}" --bin fooocus
listing=$(cargo test "${cargo_args[@]}" --no-run --test parity --test engine_runs \
    --message-format=json)
profile_dir=$([[ "$PROFILE" == dev ]] && echo debug || echo "$PROFILE")
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}

rm -rf "$KIT"
mkdir -p "$KIT/bin" "$KIT/fixtures/tiny-sdxl" "$KIT/whl"
pack() { # pack SOURCE NAME
    cp "$1" "$KIT/bin/$2"
    strip "$KIT/bin/$2" 2>/dev/null || true
    xz -T0 -6 -f "$KIT/bin/$2"
}
pack "$target_dir/$profile_dir/fooocus" fooocus
for test in parity engine_runs; do
    exe=$(printf '%s\n' "$listing" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])
' "$test" | tail -1)
    [[ -n "$exe" ]] || { echo "no test binary for $test" >&2; exit 1; }
    pack "$exe" "$test"
done

echo "== fixtures"
for item in sdxl_base.safetensors sdxl_refiner.safetensors tiny_configs.json tokenizer reference; do
    cp -r "$FIXTURES/tiny-sdxl/$item" "$KIT/fixtures/tiny-sdxl/"
done
cp -r "$FIXTURES/layouts" "$KIT/fixtures/"

if [[ -z "${NO_WHEELS:-}" ]]; then
    echo "== wheels for the PyTorch side (diffusers is not installed there)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 --platform any -d "$KIT/whl" \
        diffusers==0.42.1 importlib_metadata==10.2.0
fi
du -sh "$KIT"/* | sed 's/^/   /'
echo "kit ready: $KIT (carry it; then run scripts/gpu-check.sh $KIT on the GPU machine)"
