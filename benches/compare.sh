#!/usr/bin/env bash
# Side-by-side CPU benchmark: fooocus-rs (`fooocus bench`) against the PyTorch/diffusers script in
# ../shared/bench on the same machine, one after the other, then prints ours/PyTorch ratios.
#
#   benches/compare.sh            UNet step (batch 2) at 512² and 1024², VAE decode 512²; fp32 and
#                                 bf16 for PyTorch (many minutes, ~12 GB RAM per side)
#   benches/compare.sh --quick    the smallest shape only: UNet 512² fp32 and the VAE decode 512²
#
# Environment: THREADS (default 2) for both sides; SHARED_BENCH (default ../shared/bench);
# VRAMS, our residency modes (default "normal low": f32 weights like PyTorch's, then the weights
# kept in f16 and widened per layer); CPU_BF16 (default auto: where the CPU has AVX-512 BF16),
# 1 or 0, adds a run of ours with `--vram low --cpu-bf16`; DTYPES, PyTorch's compute dtypes
# (default "fp32 bf16"; set
# DTYPES=fp32 where the CPU lacks AVX-512 BF16, since PyTorch's bf16 path is then very slow);
# PIP_ARGS, e.g. "--index-url https://download.pytorch.org/whl/cpu" for the small CPU torch build.
# The venv lives in target/bench-venv; results in target/bench-{ours-MODE,torch}.json.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
THREADS=${THREADS:-2}
VENV=$ROOT/target/bench-venv
VRAMS=${VRAMS:-normal low}
TORCH_JSON=$ROOT/target/bench-torch.json

if [[ "${1:-}" == "--quick" ]]; then
    OUR_PARTS=unet512,vae512
    LATENTS=(64)
    DTYPES=(fp32)
else
    OUR_PARTS=unet512,unet1024,vae512
    LATENTS=(64 128)
    read -r -a DTYPES <<<"${DTYPES:-fp32 bf16}"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, diffusers" 2>/dev/null; then
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install ${PIP_ARGS:-} -r "$SHARED/requirements.txt"
fi

(cd "$ROOT" && cargo build --release --quiet)

# Our runs: each residency mode, then `--vram low --cpu-bf16` where asked for.
RUNS=()
for vram in $VRAMS; do
    RUNS+=("$vram")
done
case "${CPU_BF16:-auto}" in
    1) RUNS+=("low --cpu-bf16") ;;
    auto) grep -qw avx512_bf16 /proc/cpuinfo && RUNS+=("low --cpu-bf16") ;;
esac

OURS_JSONS=()
for run in "${RUNS[@]}"; do
    read -r vram extra <<<"$run"
    json=$ROOT/target/bench-ours-$vram${extra:+-bf16}.json
    echo "== fooocus-rs ($OUR_PARTS, --vram $run), $THREADS threads; load $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=$THREADS "$ROOT/target/release/fooocus" bench \
        --layouts "$ROOT/fixtures/layouts" --device cpu --vram "$vram" $extra \
        --parts "$OUR_PARTS" --warmup 1 --repeats 1 --json >"$json"
    OURS_JSONS+=("$json")
done

echo "== PyTorch (latents ${LATENTS[*]}, ${DTYPES[*]}), $THREADS threads; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$VENV/bin/python" "$SHARED/bench_torch.py" --threads "$THREADS" \
    --latents "${LATENTS[@]}" --dtypes "${DTYPES[@]}" --json "$TORCH_JSON"

"$VENV/bin/python" - "$TORCH_JSON" "${OURS_JSONS[@]}" <<'PY'
import json, sys
torch = json.load(open(sys.argv[1]))
reports = [json.load(open(path)) for path in sys.argv[2:]]
def torch_s(what, dtype, key):
    for r in torch["results"]:
        if r["what"] == what and r["dtype"] == dtype and key in r["shape"] and r.get("seconds"):
            return r["seconds"]
    return None
pairs = {"unet512": ("unet", "64x64"), "unet1024": ("unet", "128x128"), "vae512": ("vae", "64x64")}
print()
print("| part | ours (device) | ours s | ours peak RSS GB | load before | PyTorch fp32 s | ours/fp32 | PyTorch bf16 s | ours/bf16 |")
print("|---|---|---|---|---|---|---|---|---|")
for ours in reports:
    for m in ours["measurements"]:
        what, key = pairs[m["part"]]
        row = [m["part"], ours["device"], f"{m['median_s']:.2f}",
               f"{m['peak_rss_bytes'] / 1e9:.1f}", "/".join(f"{v:.2f}" for v in m["load_before"])]
        for dtype in ("fp32", "bf16"):
            t = torch_s(what, dtype, key)
            row += [f"{t:.2f}", f"{m['median_s'] / t:.2f}×"] if t else ["–", "–"]
        print("| " + " | ".join(row) + " |")
print(f"\nPyTorch peak RSS {torch['peak_rss_gb']} GB, torch {torch['torch']}, {torch['threads']} threads, {torch['cpu']}")
PY
