#!/usr/bin/env bash
# build-cuda.sh: build the CUDA binary of fooocus on a machine with no GPU and no
# system CUDA toolkit, using only PyPI packages.
#
# 1. Creates (or reuses) a Python venv and pip-installs NVIDIA's CUDA 13.0 wheels
#    (nvcc, headers, cudart, cuBLAS, cuRAND, NVRTC), pinned below.
# 2. Lays out a CUDA root ($CUDA_ROOT) that candle's build scripts accept:
#    bin/ include/ nvvm/ -> the wheels' nvidia/cu13 tree; lib64/ holds unversioned
#    .so links for the linker; lib64/stubs/libcuda.so is a link-time stub of the
#    driver API (soname libcuda.so.1), generated from cudarc's bindings, because no
#    wheel ships libcuda (the real one comes with the GPU driver at run time).
# 3. Runs `cargo build --release --features cuda` (extra args are passed on) with
#    CUDA_COMPUTE_CAP (default 90 -> PTX for sm_90a, Hopper only; 80 -> sm_80 PTX
#    that the driver JIT-compiles on sm_80/86/89/90 too) and prints the binary's path.
#
# Why CUDA 13.0: the cu12 wheels carry no nvcc; the 13.x ones do. nvcc 13.0 emits
# PTX ISA 9.0, which needs an NVIDIA driver >= 580 at run time (the lent H100/H200
# machines run 580.159). A newer nvcc would emit PTX that a 580 driver rejects.
#
# At run time the binary needs, besides the driver's libcuda.so.1:
#   libcudart.so.13 libcublas.so.13 (+ libcublasLt.so.13) libcurand.so.10
# e.g. LD_LIBRARY_PATH=$CUDA_ROOT/lib64 here, or the nvidia/cu13/lib folder of any
# CUDA 13 pip install on the GPU machine (PyTorch's). It links libcuda.so.1 at start, so it
# needs the NVIDIA driver even with --device cpu: build without --features cuda elsewhere.
#
#   scripts/build-cuda.sh [cargo args]        set up the toolkit, then build
#   source scripts/build-cuda.sh --env-only   set up the toolkit and export its environment
#
# Env overrides: CUDA_VENV, CUDA_ROOT, CUDA_COMPUTE_CAP, CARGO_TARGET_DIR, PYTHON,
# CUDAFORGE_THREADS (parallel nvcc jobs, default nproc).
# A cold build took about 38 min on 2 cores (23 min of it nvcc on candle-kernels).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUDA_VENV="${CUDA_VENV:-$REPO/target/cuda-toolkit/venv}"
CUDA_ROOT="${CUDA_ROOT:-$REPO/target/cuda-toolkit/root}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target/cuda}"
PYTHON="${PYTHON:-python3}"

# The set of cuda-toolkit 13.0.2 (its [all] extra), trimmed to what candle needs.
PIP_PACKAGES=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-cuda-crt==13.0.88      # include/crt (nvcc's own headers)
  nvidia-nvvm==13.0.88          # nvvm/bin/cicc, libdevice
  nvidia-cuda-runtime==13.0.96  # cuda.h, cuda_runtime.h, libcudart.so.13
  nvidia-cuda-cccl==13.0.85     # thrust/cub (candle-kernels' moe kernels)
  nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13 (linked by cudarc)
  nvidia-cublas==13.1.0.3       # libcublas.so.13, libcublasLt.so.13
  nvidia-curand==10.4.0.35      # libcurand.so.10
)

log() { printf '[build-cuda] %s\n' "$*" >&2; }

# --- 1. venv + wheels -------------------------------------------------------
if [[ ! -x "$CUDA_VENV/bin/python" ]]; then
  log "creating venv $CUDA_VENV"
  "$PYTHON" -m venv "$CUDA_VENV"
fi
if ! "$CUDA_VENV/bin/python" -m pip install -q --disable-pip-version-check \
      --no-warn-script-location "${PIP_PACKAGES[@]}"; then
  log "pip install failed"; exit 1
fi
CU13="$(echo "$CUDA_VENV"/lib/python3*/site-packages/nvidia/cu13)"
[[ -x "$CU13/bin/nvcc" ]] || { log "no nvcc under $CU13"; exit 1; }

# --- 2. CUDA root -------------------------------------------------------------
mkdir -p "$CUDA_ROOT/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU13/$d" "$CUDA_ROOT/$d"; done
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 \
           libnvrtc.so.13 libnvrtc-builtins.so.13.0; do
  [[ -e "$CU13/lib/$lib" ]] || { log "missing $CU13/lib/$lib"; exit 1; }
  ln -sfn "$CU13/lib/$lib" "$CUDA_ROOT/lib64/$lib"
  case "$lib" in *.so.*[0-9]) ln -sfn "$lib" "$CUDA_ROOT/lib64/${lib%%.so.*}.so" ;; esac
done
# (the loop also made libnvrtc-builtins.so: harmless)

# cudarc's driver bindings: fetch the locked crates so the file exists.
(cd "$REPO" && cargo fetch --locked -q)
CUDARC_VER="$(awk '/^name = "cudarc"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$REPO/Cargo.lock")"
CUDARC_SYS="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VER"/src/driver/sys/mod.rs | head -n1)"
STUB="$CUDA_ROOT/lib64/stubs/libcuda.so"
if [[ ! -e "$STUB" || "$CUDARC_SYS" -nt "$STUB" || "${BASH_SOURCE[0]}" -nt "$STUB" ]]; then
  log "generating libcuda stub from $CUDARC_SYS"
  grep -oE '\bfn cu[A-Za-z0-9_]+\(' "$CUDARC_SYS" | sed -E 's/^fn (.*)\($/\1/' | sort -u \
    | awk '{ printf "void %s(void) {}\n", $1 }' > "$CUDA_ROOT/lib64/stubs/libcuda_stub.c"
  cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$STUB" "$CUDA_ROOT/lib64/stubs/libcuda_stub.c"
fi

# --- 3. build -----------------------------------------------------------------
export PATH="$CUDA_ROOT/bin:$PATH"   # cudaforge and cudarc both run `nvcc` from PATH
export CUDA_HOME="$CUDA_ROOT"        # cudarc: link search in lib64, lib64/stubs
export CUDA_PATH="$CUDA_ROOT" CUDA_ROOT
# cudaforge (candle-kernels' build script) runs nvcc on half the cores by default.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
log "nvcc: $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"
if [[ "${1:-}" == "--env-only" ]]; then
  return 0 2>/dev/null || exit 0
fi

start=$(date +%s)
(cd "$REPO" && cargo build --release --features cuda "$@")
log "cargo build took $(( $(date +%s) - start ))s"

BIN="$CARGO_TARGET_DIR/release/fooocus"
log "binary: $BIN ($(du -h "$BIN" | cut -f1))"
log "run it with: LD_LIBRARY_PATH=$CUDA_ROOT/lib64 $BIN ...  (driver >= 580 needed)"
echo "$BIN"
