#!/usr/bin/env bash
# The GPU check (issue 8), for a machine with an NVIDIA GPU and no Rust toolchain, from the kit
# scripts/make-gpu-kit.sh packs: (1) the parity fixtures through the GPU, text encoders and UNets
# in f16 and f32, the VAE in f32 (tolerances in tests/common: 1e-4 in f32, 1e-2 in f16; whole runs
# 1e-2 per call and 2e-2 final in f16); (2) `fooocus bench` on full-size random weights at 1024²:
# UNet step with CFG, VAE decode, text encoders, a whole 30-step base + refiner generation; (3)
# the same shapes through PyTorch/diffusers; then a table of ours vs PyTorch and the peak GPU
# memory. Meant to end within 10 minutes on one H100-class GPU.
#
#   scripts/gpu-check.sh [KIT]                 KIT defaults to gpu-kit
#   DEVICE=cpu QUICK=1 scripts/gpu-check.sh    the same steps on the CPU and the tiny fixtures,
#                                              without PyTorch (to try the script anywhere)
#
# Environment: DEVICE (default cuda), QUICK=1, STEPS (default 30), REPEATS (default 3),
# OUT (results folder, 8 files at most; default /tmp/gpu-check), DEADLINE (seconds for the whole
# check, default 540: each step gets what is left, so the table always prints).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=$(cd "${1:-$ROOT/gpu-kit}" && pwd) || { echo "no kit: run scripts/make-gpu-kit.sh" >&2; exit 2; }
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
REPEATS=${REPEATS:-3}
RESULTS=${OUT:-/tmp/gpu-check}
DEADLINE=${DEADLINE:-540}
mkdir -p "$RESULTS" /tmp/gpu-check-bin
rm -f "$RESULTS"/ours.json "$RESULTS"/torch.json "$RESULTS"/vram.csv
# budget CAP: seconds a step may take, at most CAP and what the deadline leaves (30 s kept).
budget() { local left=$(( DEADLINE - SECONDS - 30 )); (( left < 10 )) && left=10; (( left < $1 )) && echo "$left" || echo "$1"; }
BIN=/tmp/gpu-check-bin
status=0

for name in fooocus parity engine_runs; do
    xz -dc "$KIT/bin/$name.xz" > "$BIN/$name" && chmod +x "$BIN/$name" || { echo "cannot unpack $name" >&2; exit 2; }
done
export FOOOCUS_FIXTURES=$KIT/fixtures/tiny-sdxl RUST_BACKTRACE=1

# The CUDA binary loads cuBLAS, cuRAND, NVRTC and the runtime (CUDA 13) at start; a GPU machine
# without the toolkit has them in PyTorch's pip packages.
if [[ "$DEVICE" == cuda* ]]; then
    libs=$(python3 - <<'PY' 2>/dev/null
import glob, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
dirs = {d.rsplit("/", 1)[0] for r in roots for d in glob.glob(f"{r}/nvidia/**/libcublas.so.*", recursive=True)}
dirs |= {d.rsplit("/", 1)[0] for r in roots for d in glob.glob(f"{r}/nvidia/**/libnvrtc.so.*", recursive=True)}
dirs |= {d.rsplit("/", 1)[0] for r in roots for d in glob.glob(f"{r}/nvidia/**/libcurand.so.*", recursive=True)}
dirs |= {d.rsplit("/", 1)[0] for r in roots for d in glob.glob(f"{r}/nvidia/**/libcudart.so.*", recursive=True)}
print(":".join(sorted(dirs)))
PY
)
    export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "CUDA libraries from: ${libs:-the system}"
    ldd "$BIN/fooocus" | grep -E "not found" && echo "!! missing libraries above"
fi

vram_log=$RESULTS/vram.csv
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >> "$vram_log" &
    sampler=$!
    trap 'kill $sampler 2>/dev/null' EXIT
fi

echo "== 1. parity on $DEVICE (f16 and f32)"
for suite in parity engine_runs; do
    if ! FOOOCUS_TEST_DEVICE=$DEVICE FOOOCUS_TEST_PRECISIONS=f16,f32 \
        timeout "$(budget 120)" "$BIN/$suite" --nocapture --test-threads 1 > "$RESULTS/$suite.log" 2>&1; then
        status=1
        echo "!! $suite failed (see $RESULTS/$suite.log)"
    fi
    grep -E "relative error|final latent|image:|test result" "$RESULTS/$suite.log" | grep -v "call [0-9]" | sed 's/^/   /'
done

echo "== 2. fooocus bench on $DEVICE"
if [[ -n "${QUICK:-}" ]]; then
    bench_args=(--tiny "$FOOOCUS_FIXTURES" --parts text,unet256,vae256,generate256 --steps 3 --repeats 1 --refiner-switch 0.667)
else
    bench_args=(--layouts "$KIT/fixtures/layouts" --parts text,unet1024,vae1024,generate1024 --refiner-switch 0.667
        --steps "$STEPS" --repeats "$REPEATS" --warmup 1 --vae-tile 0)
fi
if ! timeout "$(budget 300)" "$BIN/fooocus" bench --device "$DEVICE" "${bench_args[@]}" --json > "$RESULTS/ours.json" 2> "$RESULTS/ours.log"; then
    status=1
    echo "!! fooocus bench failed:"; tail -20 "$RESULTS/ours.log"
fi

# The nvidia-smi samples so far belong to our runs; later ones to PyTorch.
[[ -f "$vram_log" ]] && echo "# pytorch" >> "$vram_log"

if [[ -z "${QUICK:-}" ]]; then
    echo "== 3. PyTorch on the same GPU"
    if ls "$KIT"/whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-check-site "$KIT"/whl/*.whl && export PYTHONPATH=/tmp/gpu-check-site
    fi
    if ! timeout "$(budget 200)" python3 "$ROOT/benches/torch_gpu.py" --steps "$STEPS" --repeats 5 \
        > "$RESULTS/torch.json" 2> "$RESULTS/torch.log"; then
        echo "!! PyTorch side failed:"; tail -5 "$RESULTS/torch.log"
    fi
fi

echo "== table"
python3 - "$RESULTS" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return None
ours, torch = load("ours.json"), load("torch.json")
if ours:
    print(f"ours: {ours['source']} on {ours['device']}")
    t = (torch or {}).get("parts", {})
    pairs = {"unet1024": "unet_base_step", "vae1024": "vae_decode_f32", "generate1024": "generate_estimate"}
    print(f"{'part':<14}{'ours s':>10}{'PyTorch s':>11}{'ratio':>8}")
    for m in ours["measurements"]:
        theirs = t.get(pairs.get(m["part"], ""))
        ratio = f"{m['median_s'] / theirs:.2f}" if theirs else "-"
        print(f"{m['part']:<14}{m['median_s']:>10.3f}{(f'{theirs:.3f}' if theirs else '-'):>11}{ratio:>8}")
if torch:
    print(f"PyTorch {torch['torch']} {torch['dtype']} on {torch['gpu']}: peak {torch['peak_gib']:.2f} GiB allocated"
          f" (generation = {torch['parts']['generate_estimate']:.2f} s estimated from its steps)")
try:
    ours_part, _, torch_part = open(os.path.join(out, "vram.csv")).read().partition("# pytorch")
    for who, text in (("our parity runs and bench", ours_part), ("the PyTorch side", torch_part)):
        used = [int(v) for v in text.split() if v.isdigit()]
        if used:
            print(f"peak GPU memory of {who} (nvidia-smi): {max(used)} MiB")
except OSError:
    pass
PY
exit $status
